"""The findings of the security audit (issue 16) that concern requests and
peers: the text of names, sessions looked up by id, admin rights decided from
the peer's own credentials, the total output budget, the cap on sessions
held (daemon.max_sessions) and failed validations audited in aggregate.

(The state files and the files the tools write are in test_statefiles.py.)
Tests that switch to another uid or gid need root, as CI has.
"""

import grp
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading

from harness import SESSIOND, TIMEOUT, Connection, Daemon, Skip, VarlinkError, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."


def expect_invalid(c, method, params, field, reason):
    try:
        r = c.call(method, params)
    except VarlinkError as e:
        assert e.error.endswith(".InvalidArgument"), (method, params, e.error)
        assert e.parameters == {"field": field, "reason": reason}, (method, params, e.parameters)
        return
    raise AssertionError("%s %r succeeded: %r" % (method, params, r))


# ---- item 5: names are strict UTF-8 without controls or line separators ----

BAD_NAMES = [
    ("a\u0085b", "contains control characters"),   # NEL, a C1 control
    ("a\u009bb", "contains control characters"),   # CSI
    ("\u0080", "contains control characters"),
    ("a\u2028b", "contains line or paragraph separators"),
    ("a\u2029", "contains line or paragraph separators"),
    ("a\nb", "contains control characters"),       # C0, refused before too
    ("a\u007fb", "contains control characters"),   # DEL
]


def test_names_refuse_c1_controls_and_separators():
    with Daemon() as d, d.connect() as c:
        token = c.call(S + "Create", {"user_id": "alice"})["token"]
        for name, reason in BAD_NAMES:
            expect_invalid(c, S + "Create", {"user_id": name}, "user_id", reason)
            expect_invalid(c, S + "Create", {"user_id": "bob", "platform_id": name}, "platform_id", reason)
            expect_invalid(c, S + "SwitchPlatform", {"token": token, "platform_id": name}, "platform_id", reason)
            expect_invalid(c, S + "ListUser", {"user_id": name}, "user_id", reason)
            expect_invalid(c, S + "DestroyUser", {"user_id": name}, "user_id", reason)
        # What is next to them is still a name.
        for name in ["Zo\u00eb", "\u00a0x", "\u2027", "\u202a", "\U0001f600", "\u540d\u524d"]:
            r = c.call(S + "Create", {"user_id": name, "platform_id": name})
            assert r["session"]["user_id"] == name and r["session"]["platform_id"] == name, r
        # Nothing of the refused ones reached the store or the log.
        listed = {s["user_id"] for s in c.call(A + "ListSessions", {"include_ended": True})["sessions"]}
        assert not listed & {n for n, _ in BAD_NAMES}, listed
        c.close()
        d.stop()


def test_invalid_utf8_name_is_refused():
    """Raw bytes that are not UTF-8 never become a name: the connection is
    closed as a protocol error (the JSON parser refuses them), and the
    daemon keeps serving."""
    with Daemon() as d:
        for raw in [b"\xc0\xaf", b"a\xff", b"\xed\xa0\x80", b"\xe2\x80"]:
            with d.connect() as c:
                c.send_raw(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"' + raw + b'"}}\0')
                assert c.is_closed(5), raw
        # A lone surrogate escape is not a name either.
        with d.connect() as c:
            c.send_raw(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"a\\ud800"}}\0')
            assert c.is_closed(5)
        assert d.call(A + "ListSessions", {"include_ended": True})["sessions"] == []


# ---- item 6: Admin.GetSession and `sessionctl show` by id ----

def test_get_session_by_id_among_many():
    with Daemon() as d, d.connect() as c:
        ids = []
        for i in range(150):
            ids.append(c.call(S + "Create", {"user_id": "user-%d" % i})["session"]["id"])
        # Every one, also those past the first page of ListSessions.
        for i in (0, 99, 100, 149):
            s = c.call(A + "GetSession", {"id": ids[i]})["session"]
            assert s["id"] == ids[i] and s["user_id"] == "user-%d" % i and s["state"] == "active", s
            p = d.sessionctl("show", ids[i], check=0)
            assert "user_id: user-%d\n" % i in p.stdout, p.stdout
            p = d.sessionctl("--json", "show", ids[i], check=0)
            assert json.loads(p.stdout)["id"] == ids[i], p.stdout
        # Ended sessions too, with their end.
        c.call(A + "Terminate", {"id": ids[149]})
        s = c.call(A + "GetSession", {"id": ids[149]})["session"]
        assert s["state"] == "ended" and s["end_reason"] == "terminated" and s["ended_at"] > 0, s
        p = d.sessionctl("show", ids[149], check=0)
        assert "end_reason: terminated" in p.stdout, p.stdout
        p = d.sessionctl("terminate", ids[149], check=1)
        assert "session '%s' already ended (terminated)" % ids[149] in p.stderr, p.stderr
        # An id nobody holds, and a string that is no id.
        unknown = "A" * 22
        try:
            c.call(A + "GetSession", {"id": unknown})
            raise AssertionError("GetSession of an unknown id succeeded")
        except VarlinkError as e:
            assert e.error == A + "NotFound", e.error
        p = d.sessionctl("show", unknown, check=1)
        assert "no session with id '%s'" % unknown in p.stderr, p.stderr
        p = d.sessionctl("terminate", unknown, check=1)
        assert "no session with id '%s'" % unknown in p.stderr, p.stderr
        expect_invalid(c, A + "GetSession", {"id": "nope"}, "id", "not a session id (22 base64url characters)")
        try:
            c.call(A + "GetSession", {})
            raise AssertionError("GetSession without an id succeeded")
        except VarlinkError as e:
            assert e.error == "org.varlink.service.InvalidParameter", e.error
        # After a restart, from the store.
        d.restart()
        with d.connect() as c2:
            assert c2.call(A + "GetSession", {"id": ids[100]})["session"]["user_id"] == "user-100"
            assert c2.call(A + "GetSession", {"id": ids[149]})["session"]["state"] == "ended"


# ---- item 3: admin rights from the peer's own credentials ----

NOBODY = 65534
DENIED = "org.varlink.service.PermissionDenied"


def need_root():
    if os.geteuid() != 0:
        raise Skip("needs root to connect as another uid and gid")


def connect_as(d, uid, gid, groups):
    """A Connection whose peer is uid:gid with exactly these supplementary
    groups: a child process with those credentials connects (the kernel
    records them then) and hands the socket over with SCM_RIGHTS."""
    os.chmod(d.tmp, 0o711)
    os.chmod(d.socket, 0o666)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)
            socket.send_fds(child, [b"x"], [s.fileno()])
            code = 0
        finally:
            os._exit(code)
    child.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    assert status == 0 and len(fds) == 1, "the child could not connect as %d:%d" % (uid, gid)
    c = Connection.__new__(Connection)
    c.sock = socket.socket(fileno=fds[0])
    c.sock.settimeout(TIMEOUT)
    c.buf = b""
    return c


def admin_answer(c):
    try:
        c.call(A + "ListSessions")
        return "ok"
    except VarlinkError as e:
        return e.error


def test_admin_from_peer_gid_and_groups_not_passwd():
    """nobody's passwd group is nogroup, the admin group here; a process
    running as nobody with another gid and no groups is no administrator."""
    need_root()
    with Daemon({"daemon.admin_group": "nogroup"}) as d:
        assert "daemon.admin_group" not in d.read_log()
        cases = [
            ((NOBODY, 1234, []), DENIED),           # the audit's case
            ((NOBODY, 1234, [NOBODY]), "ok"),       # holds the group (supplementary)
            ((4321, NOBODY, []), "ok"),             # holds the group (its gid)
            ((4321, 1234, [1, 2, 3]), DENIED),      # other groups only
        ]
        for (uid, gid, groups), want in cases:
            with connect_as(d, uid, gid, groups) as c:
                assert admin_answer(c) == want, (uid, gid, groups, want)
                # Session calls are for anybody on the socket.
                assert "config" in c.call(S + "GetClientConfig")


def test_reload_reaches_open_connections():
    need_root()
    with Daemon({"daemon.admin_group": "nogroup"}) as d:
        member = connect_as(d, NOBODY, 1234, [NOBODY])          # in nogroup
        outsider = connect_as(d, 4321, 1234, [1])               # in group daemon
        stream = connect_as(d, NOBODY, 1234, [NOBODY])
        assert admin_answer(member) == "ok"
        assert admin_answer(outsider) == DENIED
        stream.send(A + "Events", {}, more=True)
        assert stream.recv()["continues"] is True

        d.write_config({"daemon.admin_group": "daemon"})
        d.call(A + "Reload")
        # The same connections, the new group.
        assert admin_answer(member) == DENIED
        assert admin_answer(outsider) == "ok"
        # An Admin stream whose peer lost its rights ends with its connection.
        assert stream.is_closed(5)
        assert "lost administrator rights" in d.read_log()

        # No such group: root only.
        d.write_config({"daemon.admin_group": "sessiond-test-no-such-group"})
        d.call(A + "Reload")
        assert admin_answer(outsider) == DENIED
        assert admin_answer(member) == DENIED
        assert "config" in d.call(A + "GetConfig")
        for c in (member, outsider, stream):
            c.close()
        d.stop()  # exit 0: nothing leaked (the sanitizer build checks)


# ---- item 4 (the server's part): a total output budget ----

MIB = 1024 * 1024


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sanitized(path):
    """An ASan build keeps freed memory in its quarantine: RSS says nothing
    about our buffers there, so only the daemon's own count is checked."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def test_output_budget_across_connections():
    """Many connections of one peer pipeline calls with large replies and
    never read: together they hold at most the budget (not connections x
    the per-connection cap), others are still served, a flooded peer that
    reads gets every reply, and the memory goes back once they close."""
    n_conns, n_calls = 300, 150
    with Daemon() as d, d.connect() as c:
        agent = "Mozilla/5.0 " + "x" * 2000
        for i in range(5):
            c.call(S + "Create", {"user_id": "big", "client": {"user_agent": agent, "ip": "192.0.2.%d" % i}})
        reply = len(json.dumps(c.call(S + "ListUser", {"user_id": "big"})))
        status = c.call(A + "Status")["status"]
        budget = status["output_budget"]
        assert status["output_buffered"] == 0 and budget == 32 * MIB, status
        base = rss(d.proc.pid)

        call = json.dumps({"method": S + "ListUser", "parameters": {"user_id": "big"}}).encode() + b"\0"
        flood = []
        for _ in range(n_conns):
            f = d.connect(timeout=30)
            f.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            f.send_raw(call * n_calls)
            flood.append(f)
        # The budget fills up (each connection alone could hold 1 MiB: 300
        # MiB in all) and stays there, give or take one reply a connection.
        wait_for(lambda: c.call(A + "Status")["status"]["output_buffered"] >= budget, timeout=60,
                 what="the output budget to fill")
        held = c.call(A + "Status")["status"]["output_buffered"]
        assert held <= budget + n_conns * (reply + 64), (held, budget)
        if not sanitized(SESSIOND):
            grown = rss(d.proc.pid) - base
            assert grown < 3 * budget, "RSS grew by %d MiB for a budget of %d MiB" % (grown // MIB, budget // MIB)
        # Others are served meanwhile (this very Status call, and a new peer).
        with d.connect() as other:
            assert len(other.call(S + "ListUser", {"user_id": "big"})["sessions"]) == 5
        # A flooded peer that reads gets every reply, complete and in order.
        first = flood.pop(0)
        for k in range(n_calls):
            r = first.recv()
            assert len(r["parameters"]["sessions"]) == 5, k
        first.close()
        for f in flood:
            f.close()
        wait_for(lambda: c.call(A + "Status")["status"]["output_buffered"] == 0, what="the buffers to go")
        if not sanitized(SESSIOND):
            wait_for(lambda: rss(d.proc.pid) < base + 16 * MIB, timeout=10,
                     what="the memory to go back (RSS %d MiB, %d MiB before)" % (rss(d.proc.pid) // MIB, base // MIB))
        c.close()
        d.stop()


# ---- item 4: a total cap on live sessions -----------------------------------------------

def metric(c, name, **labels):
    found = [m["value"] for m in c.call(A + "Metrics")["metrics"]
             if m["name"] == name and (m.get("labels") or {}) == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def expect_full(c, user_id):
    try:
        r = c.call(S + "Create", {"user_id": user_id, "platform_id": "web", "sync_data": "x"})
    except VarlinkError as e:
        assert e.error == S + "StorageFull" and e.parameters == {"reason": "max_sessions"}, e
        return
    raise AssertionError("Create for %s succeeded at the cap: %r" % (user_id, r))


def test_max_sessions_refuses_creates():
    with Daemon({"daemon.max_sessions": 5, "security.max_concurrent_per_user": 2}) as d, d.connect() as c:
        tokens = [c.call(S + "Create", {"user_id": "u%d" % i})["token"] for i in range(5)]
        expect_full(c, "u5")
        expect_full(c, "u0")  # below its own limit: it would hold one more too
        # Nothing of the refused ones is stored: no session, no audit row.
        listed = c.call(A + "ListSessions", {"include_ended": True})["sessions"]
        assert sorted(s["user_id"] for s in listed) == ["u%d" % i for i in range(5)], listed
        assert c.call(A + "Audit", {"user_id": "u5"})["entries"] == []
        assert len(c.call(A + "Audit", {"kind": "created"})["entries"]) == 5
        status = c.call(A + "Status")["status"]
        assert status["max_sessions"] == 5 and status["sessions_in_memory"] == 5, status
        assert metric(c, "sessions_max") == 5
        assert metric(c, "sessions_refused_total", reason="max_sessions") == 2
        assert d.read_log().count("daemon.max_sessions reached") == 1, d.read_log()

        # Rotate ends one and makes one: not refused.
        tokens[0] = c.call(S + "Rotate", {"token": tokens[0]})["token"]
        # A destroy makes room for one.
        c.call(S + "Destroy", {"token": tokens[1]})
        tokens[1] = c.call(S + "Create", {"user_id": "u5"})["token"]
        expect_full(c, "u6")

        # A reload that lowers the cap below the count ends nothing and
        # refuses new creates; raising it lets them in again.
        d.write_config({"daemon.max_sessions": 2})
        assert c.call(A + "Reload") == {}
        for t in tokens:
            c.call(S + "Validate", {"token": t})
        expect_full(c, "u7")
        assert c.call(A + "Status")["status"]["sessions_in_memory"] == 5
        d.write_config({"daemon.max_sessions": 6})
        assert c.call(A + "Reload") == {}
        c.call(S + "Create", {"user_id": "u7"})
        expect_full(c, "u8")
        # The cap holds across a restart (the count comes from the store).
        c.close()
        d.restart()
        with d.connect() as c2:
            expect_full(c2, "u8")
            assert c2.call(A + "Status")["status"]["sessions_in_memory"] == 6
        d.stop()


# ---- item 4: failed validations audited in aggregate -----------------------------------------

def failed_rows(c):
    return c.call(A + "Audit", {"kind": "validation_failed", "limit": 10000})["entries"]


def test_failed_validations_audited_in_aggregate():
    """5,000 bogus tokens write a handful of rows whose counts add up; the
    metrics and events still count each failure; the suspicious-activity
    threshold still triggers exactly once per crossing."""
    with Daemon({"security.suspicious_activity_threshold": 3}) as d, d.connect() as c:
        rows_before = metric(c, "audit_rows_total")
        events_before = metric(c, "events_total")
        n, malformed = 5000, 100
        for start in range(0, n, 500):
            batch = [secrets.token_urlsafe(32) for _ in range(500)]
            for i, t in enumerate(batch):
                c.send(S + "Validate", {"token": t if start + i >= malformed else "bogus"})
            for i in range(len(batch)):
                r = c.recv()
                assert r.get("error") in (S + "NotFound", S + "InvalidArgument"), r
        assert metric(c, "validations_total", result="not_found") == n - malformed
        assert metric(c, "validations_total", result="invalid") == malformed
        assert metric(c, "events_total") - events_before >= n, "an event per failure"

        rows = failed_rows(c)
        assert 2 <= len(rows) <= 4, rows  # one per reason, per minute
        assert sum(r["detail"]["count"] for r in rows) == n, rows
        for r in rows:
            assert r["user_id"] is None and r["session_id"] is None, r
            assert r["detail"]["reason"] in ("not_found", "invalid"), r
            assert r["detail"]["since"] <= r["time"], r
        assert metric(c, "audit_rows_total") - rows_before == len(rows)

        # A user's failures: one row with the session's id; the suspicious
        # counting stays per failure (3 user-agent changes, threshold 3:
        # one "suspicious" row, one crossing).
        made = c.call(S + "Create", {"user_id": "mallory", "client": {"user_agent": "A"}})
        for _ in range(3):
            e = c.call_error(S + "Validate", {"token": made["token"], "client": {"user_agent": "B"}})
            assert e[0] == S + "FingerprintMismatch", e
        assert metric(c, "suspicious_events_total") == 3
        assert metric(c, "suspicious_threshold_reached_total") == 1
        assert len(c.call(A + "Audit", {"kind": "suspicious", "user_id": "mallory"})["entries"]) == 1
        mine = [r for r in failed_rows(c) if r["user_id"] == "mallory"]
        assert len(mine) == 1 and mine[0]["session_id"] == made["session"]["id"], mine
        assert mine[0]["detail"] == {"reason": "fingerprint", "count": 3, "since": mine[0]["detail"]["since"]}, mine

        # Shutdown writes the counts still held.
        for _ in range(7):
            c.call_error(S + "Validate", {"token": secrets.token_urlsafe(32)})
        c.close()
        d.stop()
        db = sqlite3.connect(d.database)
        try:
            got = db.execute("SELECT detail FROM audit WHERE kind = 'validation_failed' ORDER BY id").fetchall()
        finally:
            db.close()
        counts = [json.loads(x[0])["count"] for x in got]
        assert counts[-1] == 7 and sum(counts) == n + 3 + 7, counts


TESTS = [
    test_names_refuse_c1_controls_and_separators,
    test_invalid_utf8_name_is_refused,
    test_get_session_by_id_among_many,
    test_admin_from_peer_gid_and_groups_not_passwd,
    test_reload_reaches_open_connections,
    test_output_budget_across_connections,
    test_max_sessions_refuses_creates,
    test_failed_validations_audited_in_aggregate,
]

if __name__ == "__main__":
    run_tests(TESTS)
