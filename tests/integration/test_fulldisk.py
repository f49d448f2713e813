"""A full file system: writes fail clearly, reads go on, nothing is lost or
corrupted, and writes work again once there is room.

The database lives on a 1 MiB tmpfs (root only: mount; skipped otherwise).
test_protocol.py checks that Create answers StorageFull in request order
and that acknowledged creates survive; this adds every other kind of write
(Rotate, SetSyncState, SwitchPlatform, Destroy, Extend, DestroyUser,
Admin.Terminate), validations and touches of existing sessions while the
disk is full, Health (the database component unhealthy, sessionctl health
exit 4) and back to healthy, the integrity of the file after the episode,
and a crash while full: what was refused is not there after a restart,
what was acknowledged is.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time

from harness import Daemon, SmallDisk, VarlinkError, fill, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."
# Sessions made before the disk fills (each commit adds a few pages to the
# WAL, and 1 MiB is small).
N = 10


def write_error(fn, *args):
    try:
        r = fn(*args)
    except VarlinkError as e:
        return e
    raise AssertionError("a write succeeded on a full disk: %r" % (r,))


def integrity(path):
    """integrity_check of a copy (database and WAL) made outside the tmpfs."""
    tmp = tempfile.mkdtemp(prefix="sessiond-check-")
    try:
        copy = os.path.join(tmp, "c.db")
        shutil.copyfile(path, copy)
        if os.path.exists(path + "-wal"):
            shutil.copyfile(path + "-wal", copy + "-wal")
        conn = sqlite3.connect(copy)
        try:
            return [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def health(c):
    return c.call(A + "Health")


def test_full_disk():
    with SmallDisk() as disk:
        database = os.path.join(disk.mnt, "sessions.db")
        # A health check every second: the failed commits it counted are
        # forgotten at the next one once writes work again.
        settings = {"daemon.database_path": database, "monitoring.health_check_interval": 1,
                    "security.max_concurrent_per_user": 1000}
        with Daemon(settings, tmpdir=disk.tmp) as d, d.connect() as c:
            tokens = [c.call(S + "Create", {"user_id": "u%d" % (i % 5), "sync_data": "v1-%d" % i})["token"]
                      for i in range(N)]
            assert health(c)["components"]["database"]["status"] == "healthy"
            filler = os.path.join(disk.mnt, "filler")
            fill(filler)
            # Creates until one fails (a page or two may still fit).
            for i in range(300):
                try:
                    tokens.append(c.call(S + "Create", {"user_id": "late", "sync_data": "v1-late"})["token"])
                except VarlinkError as e:
                    assert e.error == S + "StorageFull", e
                    break
            else:
                raise AssertionError("300 creates on a full disk")
            # A refusal tries to make room (the WAL copied into the database
            # and started over: test_small_disk_holds_what_fits), and the
            # WAL file's own blocks can then take small writes for a while.
            # Use that room up with the smallest writes, on a session of
            # their own, until they too are refused: the disk is now full
            # for every write.
            fill(filler + "2")
            spare = tokens[-1]
            for method, params in ((S + "Extend", {"token": spare}),
                                   (S + "SetSyncState", {"token": spare, "data": "x"})):
                for i in range(300):
                    try:
                        c.call(method, params)
                    except VarlinkError as e:
                        assert e.error == S + "StorageFull", e
                        break
                else:
                    raise AssertionError("300 %s on a full disk" % method)
            # Every kind of write answers StorageFull and changes nothing.
            t = tokens[0]
            session_id = c.call(S + "Validate", {"token": t, "touch": False})["session"]["id"]
            # A refusal truncates the WAL it copied into the database, which
            # may make room for the next small write: the disk is filled
            # again before each one.
            fills = []

            def refused_when_full(method, params):
                return write_error(c.call, method, params)
            refused = [
                refused_when_full(S + "Rotate", {"token": t}),
                refused_when_full(S + "SetSyncState", {"token": t, "data": "lost", "expected_version": 1}),
                refused_when_full(S + "SwitchPlatform", {"token": t, "platform_id": "lost"}),
                refused_when_full(S + "Destroy", {"token": tokens[1]}),
                refused_when_full(S + "Extend", {"token": tokens[2]}),
                refused_when_full(S + "DestroyUser", {"user_id": "u3"}),
                refused_when_full(A + "Terminate", {"id": session_id}),
            ]
            for e in refused:
                assert e.error in (S + "StorageFull",), e
                assert "space" in e.parameters["reason"], e
            # Reads go on, and tell the state as it was before the refusals.
            for i, tok in enumerate(tokens[:N]):
                v = c.call(S + "Validate", {"token": tok})  # a touch too
                assert v["state"] == "active", (i, v)
                assert c.call(S + "GetSyncState", {"token": tok}) == {"version": 1, "data": "v1-%d" % i}
            assert c.call(S + "Validate", {"token": t, "touch": False})["session"].get("platform_id") is None
            assert len(c.call(S + "ListUser", {"user_id": "u3"})["sessions"]) == N // 5
            # Health: the database component is unhealthy and says why.
            h = health(c)
            db = h["components"]["database"]
            assert h["status"] == "unhealthy" and db["status"] == "unhealthy", h
            assert "full" in db["message"] or "space" in db["message"], db
            p = d.sessionctl("health")
            assert p.returncode == 4, (p.returncode, p.stdout, p.stderr)
            # Nothing is corrupted by the failed writes.
            assert integrity(database) == ["ok"]

            # Room again: writes work, health comes back.
            for f in [filler, filler + "2"] + fills:
                os.unlink(f)
            later = c.call(S + "Create", {"user_id": "after", "sync_data": "v1-after"})["token"]
            assert c.call(S + "SetSyncState", {"token": t, "data": "v2", "expected_version": 1}) == {"version": 2}
            new = c.call(S + "Rotate", {"token": tokens[3]})["token"]
            c.call(S + "Destroy", {"token": tokens[1]})
            wait_for(lambda: health(c)["components"]["database"]["status"] == "healthy",
                     what="the database component to be healthy again")
            assert d.sessionctl("health").returncode == 0

            # A crash now: what was acknowledged is there, what was refused is not.
            d.kill()
            assert integrity(database) == ["ok"]
            d.start()
            with d.connect() as c2:
                assert c2.call(S + "GetSyncState", {"token": t}) == {"version": 2, "data": "v2"}
                assert c2.call(S + "Validate", {"token": t})["session"].get("platform_id") is None
                for tok in [later, new, tokens[2]] + tokens[4:]:
                    assert c2.call(S + "Validate", {"token": tok})["state"] == "active"
                for tok, reason in ((tokens[1], "destroyed"), (tokens[3], "rotated")):
                    e = write_error(c2.call, S + "Validate", {"token": tok})
                    assert e.error == S + "Expired" and e.parameters["reason"] == reason, e
                assert len(c2.call(S + "ListUser", {"user_id": "u3"})["sessions"]) == N // 5
            d.stop()
            assert integrity(database) == ["ok"]


def test_full_from_the_start():
    # The file system is already full when the daemon starts on a new
    # database: a clear refusal naming the file, not a half-made database.
    with SmallDisk() as disk:
        fill(os.path.join(disk.mnt, "filler"))
        db = os.path.join(disk.mnt, "sessions.db")
        d = Daemon({"daemon.database_path": db}, tmpdir=disk.tmp, wait=False)
        try:
            rc = d.proc.wait(timeout=10)
        finally:
            d.cleanup()
        log = d.read_log()
        assert rc != 0, log
        assert db in log or disk.mnt in log, log
        assert "space" in log, log


def test_small_disk_holds_what_fits():
    """A disk with little room: the WAL starts over well below the free
    space (and is copied into the database on a full file system before a
    write is refused), so the sessions that fit are what the data needs,
    not what a 64 MiB WAL leaves: several hundred sessions of 1 KiB on
    2 MiB, where the WAL alone used to fill the disk after a few dozen.
    Refused writes are clean, and writes work again once there is room."""
    with SmallDisk("2m") as disk:
        database = os.path.join(disk.mnt, "sessions.db")
        spare = os.path.join(disk.mnt, "spare")
        with open(spare, "wb") as f:
            f.write(b"\0" * 256 * 1024)
        settings = {"daemon.database_path": database, "security.max_concurrent_per_user": 100000,
                    "security.audit_logging": False}
        with Daemon(settings, tmpdir=disk.tmp) as d, d.connect() as c:
            tokens = []
            for i in range(5000):
                try:
                    tokens.append(c.call(S + "Create", {"user_id": "u%d" % (i % 50),
                                                         "sync_data": "%04d" % i + "x" * 1020})["token"])
                except VarlinkError as e:
                    assert e.error == S + "StorageFull", e
                    break
            else:
                raise AssertionError("5000 sessions of 1 KiB on 2 MiB")
            print("sessions of 1 KiB that fit on 2 MiB (256 KiB kept aside): %d" % len(tokens), flush=True)
            assert len(tokens) >= 600, len(tokens)
            # Everything acknowledged is there; reads go on.
            for i in (0, len(tokens) // 2, len(tokens) - 1):
                assert c.call(S + "GetSyncState", {"token": tokens[i]})["data"].startswith("%04d" % i)
            # Room again: writes work without a restart. (A write may still
            # be refused while the WAL that filled the disk is copied in and
            # started over: a few refusals are allowed, not a standstill.)
            os.unlink(spare)
            more, refused = [], 0
            while len(more) < 50:
                try:
                    more.append(c.call(S + "Create", {"user_id": "again", "sync_data": "x" * 1024})["token"])
                except VarlinkError as e:
                    assert e.error == S + "StorageFull", e
                    refused += 1
                    assert refused <= 10, (len(more), refused)
                    time.sleep(0.2)
            print("after room was made: 50 written, %d refused first" % refused, flush=True)
        assert integrity(database) == ["ok"]


run_tests([
    test_small_disk_holds_what_fits,
    test_full_disk,
    test_full_from_the_start,
])
