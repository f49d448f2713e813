"""Tokens stay secret: never in the log, the database, audit rows or any
sessionctl output; the files that hold secrets are private.

A busy run with debug_mode on (the chattiest log) makes every kind of
session traffic: creates with client details, validations (good, tampered,
malformed, wrong user agent), heartbeats, extends, rotations, platform
switches, sync writes, a Watch stream, destroys and a logout everywhere,
cleanups of all three kinds. Every token handed out and every token
presented (including tampered ones) is then looked for, whole and as a
12-character prefix, base64url text and decoded bytes, in:

  - the daemon's log;
  - the database, its WAL and shared-memory file, byte for byte (the daemon
    killed so the WAL is still there), and every column of every audit row;
  - every sessionctl verb that shows sessions or their history (status,
    health, list, show, audit, events, metrics, analytics), tables and JSON,
    and the raw Admin replies (Events, Audit, ListSessions).

The password of daemon.postgres_url (issue 11) is never in the log, a
Varlink reply, sessionctl's output or an audit row either: it is shown as
***.

And: the key file (at daemon.key_file too), the database, its -wal and
-shm are 0600 and a database folder the daemon creates is 0700. That
comparisons of secret material run in constant time is a code property
(sodium_memcmp, keyed hashes), noted in the README; no black-box test can
show it.
"""

import base64
import json
import os
import sqlite3
import stat

from harness import Daemon, VarlinkError, run_tests

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

CLIENT = {"user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0", "ip": "192.0.2.10",
          "accept_language": "en-GB", "accept_encoding": "gzip"}


def call_any(c, method, params):
    try:
        return c.call(method, params)
    except VarlinkError as e:
        return e


def needles(tokens):
    """What must never appear: each token, a prefix of it, its raw bytes."""
    out = set()
    for t in tokens:
        out.add(t.encode())
        out.add(t[:12].encode())
        try:
            raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
            if len(raw) >= 16:
                out.add(raw)
                out.add(raw[:12])
        except ValueError:
            pass
    return out


def assert_absent(where, data, secrets):
    if isinstance(data, str):
        data = data.encode()
    found = [s for s in secrets if s in data]
    assert not found, "%s holds secret material: %r" % (where, found[:3])


def busy_run(d):
    """Every kind of traffic; returns every token seen or presented."""
    handed, presented = [], []
    with d.connect() as c, d.connect() as w:
        for i in range(6):
            r = c.call(S + "Create", {"user_id": "alice" if i % 2 else "bob", "platform_id": "web",
                                      "client": CLIENT, "sync_data": "state-%d" % i})
            handed.append(r["token"])
        a, b = handed[0], handed[1]
        w.send(S + "Watch", {"token": a}, more=True)
        for t in handed:
            c.call(S + "Validate", {"token": t, "client": CLIENT})
            c.call(S + "Heartbeat", {"token": t})
        c.call(S + "Extend", {"token": a})
        c.call(S + "SetSyncState", {"token": a, "data": "tab-state", "expected_version": 1})
        call_any(c, S + "SetSyncState", {"token": a, "data": "stale", "expected_version": 1})  # Conflict
        c.call(S + "SwitchPlatform", {"token": a, "platform_id": "ios"})
        c.call(S + "GetSyncState", {"token": a})
        # Failures: a tampered token, a malformed one, a changed user agent.
        tampered = [t[:-1] + ("A" if t[-1] != "A" else "B") for t in handed[:3]]
        presented += tampered
        for t in tampered:
            assert isinstance(call_any(c, S + "Validate", {"token": t}), VarlinkError)
        malformed = "not-a-token-" + handed[2][:20]
        presented.append(malformed)
        call_any(c, S + "Validate", {"token": malformed})
        e = call_any(c, S + "Validate", {"token": b, "client": dict(CLIENT, user_agent="curl/8.0")})
        assert isinstance(e, VarlinkError) and e.error == S + "FingerprintMismatch", e
        # Rotation, destroy, logout everywhere else, use of ended tokens.
        rotated = c.call(S + "Rotate", {"token": handed[2]})["token"]
        handed.append(rotated)
        call_any(c, S + "Validate", {"token": handed[2]})  # Expired rotated
        c.call(S + "Destroy", {"token": handed[3]})
        call_any(c, S + "Validate", {"token": handed[3]})  # Expired destroyed
        c.call(S + "DestroyUser", {"user_id": "alice", "except_token": handed[5]})
        c.call(S + "ListUser", {"user_id": "alice"})
        for kind in ("regular", "batch", "deep"):
            c.call(A + "Cleanup", {"kind": kind})
        c.call(A + "Reload")
    return handed, handed + presented


def sessionctl_outputs(d):
    outs = {}
    with d.connect() as c:
        ids = [s["id"] for s in c.call(A + "ListSessions", {"include_ended": True})["sessions"]]
        outs["Admin.ListSessions"] = json.dumps(c.call(A + "ListSessions", {"include_ended": True}))
        outs["Admin.Audit"] = json.dumps(c.call(A + "Audit", {"limit": 10000}))
        c.send(A + "Events", {}, more=False)
        outs["Admin.Events"] = json.dumps(c.recv())
    assert len(ids) >= 7, ids
    verbs = [["status"], ["health"], ["list", "--all"], ["audit"], ["events"], ["metrics"],
             ["metrics", "--prometheus"], ["analytics"], ["alerts"]] + [["show", i] for i in ids]
    for v in verbs:
        for j in ([], ["--json"]):
            p = d.sessionctl(*(j + v))
            assert p.returncode in (0, 3, 4), (v, p.returncode, p.stderr)
            outs["sessionctl " + " ".join(j + v)] = p.stdout + p.stderr
    # The verbs did show the sessions (the test looks at real output).
    assert ids[0] in outs["sessionctl list --all"] and "created" in outs["sessionctl audit"], outs
    return outs


def test_tokens_never_leak():
    with Daemon({"debug_mode": True, "features.analytics": True}) as d:
        handed, all_tokens = busy_run(d)
        secrets = needles(all_tokens)
        assert "created" in d.read_log()  # debug lines were written
        for where, text in sessionctl_outputs(d).items():
            assert_absent(where, text, secrets)
        # The database as it is while running: file, WAL, shared memory.
        d.kill()
        files = [d.database + s for s in ("", "-wal", "-shm") if os.path.exists(d.database + s)]
        assert d.database + "-wal" in files
        for f in files:
            with open(f, "rb") as fh:
                assert_absent(f, fh.read(), secrets)
        # Every column of every audit row, as text.
        conn = sqlite3.connect("file:%s?mode=ro" % d.database, uri=True)
        rows = conn.execute("SELECT * FROM audit").fetchall()
        conn.close()
        assert len(rows) > 10, rows
        assert_absent("audit rows", json.dumps([[str(v) for v in r] for r in rows]), secrets)
        assert_absent("the log", d.read_log(), secrets)
        # A restart (reload of every session) and a clean stop log nothing either.
        d.start()
        with d.connect() as c:
            assert c.call(S + "Validate", {"token": handed[-1]})["state"] == "active"
        d.stop()
        assert_absent("the log", d.read_log(), secrets)


def test_postgres_password_never_leaks():
    secret, other = "s3cr3t-Pa55", "0ther-Pa55"
    url = "postgresql://app:%s@/sessions?host=/run/postgresql" % secret
    url2 = "host=db2 dbname=sessions user=app password='%s'" % other
    needles_ = [secret.encode(), other.encode(), b"s3cr3t", b"0ther"]
    with Daemon({"debug_mode": True, "daemon.postgres_url": url}) as d:
        outs = {}
        with d.connect() as c:
            cfg = c.call(A + "GetConfig")["config"]
            assert cfg["daemon"]["postgres_url"] == "postgresql://app:***@/sessions?host=/run/postgresql", cfg
            for m in ("GetConfig", "Status", "Health", "Metrics"):
                outs["Admin." + m] = json.dumps(c.call(A + m))
        # A reload that changes it is audited with the values it shows.
        d.write_config({"daemon.postgres_url": url2})
        d.sessionctl("reload", check=0)
        with d.connect() as c:
            assert c.call(A + "GetConfig")["config"]["daemon"]["postgres_url"] == \
                "host=db2 dbname=sessions user=app password='***'"
            audit = c.call(A + "Audit", {"limit": 10000})
            outs["Admin.Audit"] = json.dumps(audit)
        assert "host=db2" in outs["Admin.Audit"], outs["Admin.Audit"]  # the change was audited
        for v in (["status"], ["health"], ["config", "--show"], ["config", "--show", "--origin"],
                  ["config", "--validate"], ["audit"]):
            for j in ([], ["--json"]):
                p = d.sessionctl(*(j + v))
                outs["sessionctl " + " ".join(j + v)] = p.stdout + p.stderr
        for where, text in outs.items():
            assert_absent(where, text, needles_)
        log = d.read_log()
        assert "daemon.postgres_url is ignored while features.distributed is false" in log, log
        d.stop()
        assert_absent("the log", d.read_log(), needles_)
        with open(d.database, "rb") as fh:
            assert_absent("the database", fh.read(), needles_)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_files():
    with Daemon() as d:
        d.stop()
        folder = os.path.join(d.tmp, "state", "sessiond")
        db = os.path.join(folder, "sessions.db")
        d.write_config({"daemon.database_path": db})
        os.umask(0o022)  # the daemon must not rely on a strict umask
        d.start()
        with d.connect() as c:
            c.call(S + "Create", {"user_id": "alice"})
            assert mode(folder) == 0o700
            for f in (db, db + "-wal", db + "-shm", os.path.join(folder, "sessiond.key")):
                assert mode(f) == 0o600, (f, oct(mode(f)))
        d.stop()
        for f in (db, os.path.join(folder, "sessiond.key")):
            assert mode(f) == 0o600, (f, oct(mode(f)))

    # daemon.key_file: the key lives there (0600), none beside the database;
    # the same key on a restart, and a missing one is refused, not remade.
    with Daemon() as d:
        d.stop()
        keys = os.path.join(d.tmp, "keys")
        os.mkdir(keys, 0o700)
        key = os.path.join(keys, "fleet.key")
        d.write_config({"daemon.database_path": os.path.join(d.tmp, "db", "fleet.db"), "daemon.key_file": key})
        d.start()
        with d.connect() as c:
            token = c.call(S + "Create", {"user_id": "alice"})["token"]
        d.stop()
        assert mode(key) == 0o600, oct(mode(key))
        assert os.listdir(os.path.join(d.tmp, "db")) == ["fleet.db"], os.listdir(os.path.join(d.tmp, "db"))
        assert "Created key file %s." % key in d.read_log()
        d.start()
        with d.connect() as c:
            assert c.call(S + "Validate", {"token": token})["state"] == "active"
        d.stop()
        os.unlink(key)
        d.start(wait=False)
        assert d.proc.wait(timeout=30) == 1
        assert "its key file %s is missing" % key in d.read_log()
        assert not os.path.exists(key)


run_tests([
    test_tokens_never_leak,
    test_postgres_password_never_leaks,
    test_private_files,
])
