"""Durability of the store: kill -9 right after acknowledged writes loses
none of them; a corrupt, truncated, foreign or newer database is refused at
start with a message naming the file and left byte-for-byte unchanged;
the key file; persistence = false."""

import hashlib
import os
import sqlite3
import stat
import time

from harness import Daemon, VarlinkError, run_tests

S = "io.sessiond.Session."


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expect_expired(c, token, reason):
    try:
        c.call(S + "Validate", {"token": token})
    except VarlinkError as e:
        assert e.error == S + "Expired" and e.parameters == {"reason": reason}, e
        return
    raise AssertionError("token still valid, expected Expired(%s)" % reason)


def wait_exit(d, timeout=10):
    """The daemon refused to start: its exit status and log."""
    try:
        rc = d.proc.wait(timeout=timeout)
    except Exception:
        raise AssertionError("sessiond did not exit:\n" + d.read_log())
    d.log.close()
    return rc, d.read_log()


def test_kill9_keeps_acknowledged_writes():
    with Daemon({"security.max_concurrent_per_user": 100}) as d:
        with d.connect() as c:
            live = [c.call(S + "Create", {"user_id": "alice", "sync_data": "s%d" % i})["token"] for i in range(20)]
            destroyed = live[:5]
            for t in destroyed:
                c.call(S + "Destroy", {"token": t})
            rotated_from = live[5]
            rotated_to = c.call(S + "Rotate", {"token": rotated_from})["token"]
            c.call(S + "SwitchPlatform", {"token": live[6], "platform_id": "ios"})
            c.call(S + "SetSyncState", {"token": live[7], "data": "written", "expected_version": 1})
            c.call(S + "DestroyUser", {"user_id": "bob"})
            last = c.call(S + "Create", {"user_id": "carol"})["token"]
        d.kill()  # no chance to flush or checkpoint anything
        d.start()
        with d.connect() as c:
            for t in destroyed:
                expect_expired(c, t, "destroyed")
            expect_expired(c, rotated_from, "rotated")
            assert c.call(S + "Validate", {"token": rotated_to})["state"] == "active"
            for t in live[6:]:
                assert c.call(S + "Validate", {"token": t})["state"] == "active"
            assert c.call(S + "Validate", {"token": live[6]})["session"]["platform_id"] == "ios"
            assert c.call(S + "GetSyncState", {"token": live[7]}) == {"version": 2, "data": "written"}
            assert c.call(S + "GetSyncState", {"token": live[8]}) == {"version": 1, "data": "s8"}
            assert c.call(S + "Validate", {"token": last})["state"] == "active"
            assert len(c.call(S + "ListUser", {"user_id": "alice"})["sessions"]) == 15
        d.stop()


def test_kill9_pipelined_creates():
    # Many creates share commits (group commit); each acknowledged one must
    # survive a crash that follows the last reply at once.
    with Daemon({"security.max_concurrent_per_user": 1000}) as d:
        n = 500
        with d.connect() as c:
            c.send_raw(b"".join(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"u"}}\0'
                                for _ in range(n)))
            tokens = []
            for _ in range(n):
                reply = c.recv()
                assert "error" not in reply, reply
                tokens.append(reply["parameters"]["token"])
        d.kill()
        d.start()
        with d.connect() as c:
            c.send_raw(b"".join(b'{"method":"io.sessiond.Session.Validate","parameters":{"token":"%s"}}\0'
                                % t.encode() for t in tokens))
            for _ in range(n):
                reply = c.recv()
                assert "error" not in reply, reply
        d.stop()


def test_touch_survives_clean_stop():
    with Daemon({"timeout.idle_timeout": 600}) as d:
        with d.connect() as c:
            token = c.call(S + "Create", {"user_id": "alice"})["token"]
            time.sleep(1.1)
            touched = c.call(S + "Validate", {"token": token})["session"]["last_activity"]
        d.stop()
        d.start()
        with d.connect() as c:
            v = c.call(S + "Validate", {"token": token, "touch": False})
            assert v["session"]["last_activity"] == touched
        d.stop()


def start_refused(d):
    d.start(wait=False)
    rc, log = wait_exit(d)
    assert rc != 0, "sessiond started on a bad database:\n" + log
    return log


def replace_database(d):
    """Stops the daemon (its key file stays) and removes its database."""
    d.stop()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(d.database + suffix):
            os.unlink(d.database + suffix)


def test_garbage_database_refused():
    with Daemon() as d:
        replace_database(d)
        with open(d.database, "wb") as f:
            f.write(bytes((i * 37 + 11) % 256 for i in range(16384)))
        before = sha256(d.database)
        log = start_refused(d)
        assert d.database in log, log
        assert sha256(d.database) == before
        assert not os.path.exists(d.database + "-wal")


def make_real_database(d, sessions=2000):
    """Fills the daemon's database and stops it cleanly (checkpointed)."""
    d.wait_ready()
    with d.connect() as c:
        c.send_raw(b"".join(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"u%d"}}\0' % i
                            for i in range(sessions)))
        for _ in range(sessions):
            assert "error" not in c.recv()
    d.stop()


def test_truncated_database_refused():
    with Daemon() as d:
        make_real_database(d)
        size = os.path.getsize(d.database)
        assert size > 100000, size
        with open(d.database, "r+b") as f:
            f.truncate(size // 2)
        before = sha256(d.database)
        log = start_refused(d)
        assert d.database in log, log
        assert sha256(d.database) == before
        assert not os.path.exists(d.database + "-wal")


def test_newer_database_refused():
    with Daemon() as d:
        make_real_database(d, sessions=10)
        db = sqlite3.connect(d.database)
        db.execute("PRAGMA user_version = 42")
        db.commit()
        db.close()
        before = sha256(d.database)
        log = start_refused(d)
        assert d.database in log and "newer" in log, log
        assert sha256(d.database) == before


def test_foreign_database_refused():
    with Daemon() as d:
        replace_database(d)
        db = sqlite3.connect(d.database)
        db.execute("CREATE TABLE invoices (n INTEGER)")
        db.commit()
        db.close()
        before = sha256(d.database)
        log = start_refused(d)
        assert d.database in log and "not a sessiond database" in log, log
        assert sha256(d.database) == before


def test_key_file():
    with Daemon() as d:
        key = os.path.join(d.tmp, "sessiond.key")
        st = os.stat(key)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
        assert stat.S_IMODE(os.stat(d.database).st_mode) == 0o600
        with d.connect() as c:
            token = c.call(S + "Create", {"user_id": "alice"})["token"]
        d.stop()
        with open(key, "rb") as f:
            secret = f.read()
        # The token is stored only as a keyed hash.
        with open(d.database, "rb") as f:
            assert token.encode() not in f.read()
        # The same key on the next start: the token still works.
        d.start()
        with d.connect() as c:
            assert c.call(S + "Validate", {"token": token})["state"] == "active"
        d.stop()
        with open(key, "rb") as f:
            assert f.read() == secret
        # Readable by others: refused, and left alone.
        os.chmod(key, 0o644)
        log = start_refused(d)
        assert key in log, log
        os.chmod(key, 0o600)
        # Missing while the database exists: refused, no new key made.
        os.unlink(key)
        log = start_refused(d)
        assert key in log and "missing" in log, log
        assert not os.path.exists(key)


def test_persistence_off():
    with Daemon({"features.persistence": False}) as d:
        with d.connect() as c:
            token = c.call(S + "Create", {"user_id": "alice"})["token"]
            assert c.call(S + "Validate", {"token": token})["state"] == "active"
            c.call(S + "SetSyncState", {"token": token, "data": "x"})
        d.stop()
        assert not os.path.exists(d.database)
        assert not os.path.exists(os.path.join(d.tmp, "sessiond.key"))
        d.start()
        with d.connect() as c:
            try:
                c.call(S + "Validate", {"token": token})
                raise AssertionError("a session survived a restart without persistence")
            except VarlinkError as e:
                assert e.error == S + "NotFound", e
        d.stop()
        assert not os.path.exists(d.database)


def test_database_folder_created():
    with Daemon() as d:
        d.stop()
        folder = os.path.join(d.tmp, "state", "deep")
        d.write_config({"daemon.database_path": os.path.join(folder, "sessions.db")})
        d.start()
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(folder, "sessions.db")).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.join(folder, "sessiond.key")).st_mode) == 0o600
        d.stop()


run_tests([
    test_kill9_keeps_acknowledged_writes,
    test_kill9_pipelined_creates,
    test_touch_survives_clean_stop,
    test_garbage_database_refused,
    test_truncated_database_refused,
    test_newer_database_refused,
    test_foreign_database_refused,
    test_key_file,
    test_persistence_off,
    test_database_folder_created,
])
