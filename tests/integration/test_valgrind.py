"""A whole daemon lifetime under valgrind: no leak, no memory error, exit 0.

meson runs this file with VALGRIND=1, so harness.Daemon starts sessiond under
`valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
--error-exitcode=99`. The lifetime covers every path that allocates: start,
sessions created, validated, rotated, destroyed, a Watch stream cut by its
peer, pipelined and oneway calls, a reload (good and bad), protocol errors,
a connection refused over the limit, and a clean stop with a connection
still open.
"""

import json
import os
import re
import shutil
import signal


from harness import Daemon, Skip, run_tests, wait_for


def msg(obj):
    return json.dumps(obj).encode() + b"\0"


def served_connection(d):
    """A second connection, once the ones closed before have left the count."""
    def attempt():
        c = d.connect(timeout=60)
        try:
            c.call("org.varlink.service.GetInfo")
            return c
        except (ConnectionError, OSError):
            c.close()
            return None
    return wait_for(attempt, timeout=60, what="a served connection")


def lifetime(d):
    client = {"user_agent": "Mozilla/5.0 (valgrind)", "ip": "192.0.2.1"}
    with d.connect(timeout=60) as c:
        c.call("org.varlink.service.GetInfo")
        for name in ("org.varlink.service", "io.sessiond.Session", "io.sessiond.Admin", "x.y"):
            try:
                c.call("org.varlink.service.GetInterfaceDescription", {"interface": name})
            except Exception:
                pass
        tokens = []
        for i in range(4):
            r = c.call("io.sessiond.Session.Create",
                       {"user_id": "user-%d" % (i % 2), "client": client, "sync_data": "{}"})
            tokens.append(r["token"])
        for t in tokens:
            c.call("io.sessiond.Session.Validate", {"token": t, "client": client})
        rotated = c.call("io.sessiond.Session.Rotate", {"token": tokens[0]})["token"]
        c.call_error("io.sessiond.Session.Validate", {"token": tokens[0]})
        c.call("io.sessiond.Session.Destroy", {"token": rotated})
        c.call("io.sessiond.Session.DestroyUser", {"user_id": "user-1"})
        c.call("io.sessiond.Admin.ListSessions", {"include_ended": True})

        # A reply larger than a connection's kept buffer becomes its output
        # as it is (no copy); one behind it is appended to it.
        wide = dict(client, user_agent="Mozilla/5.0 " + "w" * 2000)
        for i in range(60):
            c.call("io.sessiond.Session.Create", {"user_id": "wide-%d" % (i % 10), "client": wide})
        c.send("io.sessiond.Admin.ListSessions", {})
        c.send("io.sessiond.Admin.ListSessions", {})
        replies = [c.recv()["parameters"]["sessions"] for _ in range(2)]
        assert replies[0] == replies[1] and len(json.dumps(replies[0])) > 100000

        # Deep cleanup: its maintenance runs in the thread pool.
        c.call("io.sessiond.Admin.Cleanup", {"kind": "deep"})

        # Pipelined and oneway.
        c.send_raw(b"".join(msg({"method": "org.varlink.service.GetInfo", "oneway": i % 2 == 0})
                            for i in range(20)))
        for _ in range(10):
            c.recv()

        # A Watch stream whose peer hangs up.
        with d.connect(timeout=60) as w:
            w.send("io.sessiond.Session.Watch", {"token": tokens[2]}, more=True)
            c.call("io.sessiond.Session.SetSyncState", {"token": tokens[2], "data": "{\"a\": 1}"})
            w.recv()

        # Reload: a good one, then a bad one.
        d.write_config({"sync.heartbeat_interval": 40})
        d.signal(signal.SIGHUP)
        wait_for(lambda: "Configuration reloaded" in d.read_log(), timeout=60, what="reload")
        d.write_config({"timeout.idle_timeout": 90000, "timeout.session_lifetime": 3600})
        err, _ = c.call_error("io.sessiond.Admin.Reload")
        assert err == "io.sessiond.Admin.ConfigInvalid", err

        # Protocol errors: each closes its own connection.
        for bad in (b"{garbage\0", b"[1]\0", msg({"method": 1}), b"{\"method\": \"a.B\"" + b"x" * 70000):
            with d.connect(timeout=60) as g:
                try:
                    g.send_raw(bad)
                except OSError:
                    pass
                assert g.is_closed(60)

        # Over the connection limit (2): accepted, closed.
        with served_connection(d):
            with d.connect(timeout=60) as third:
                assert third.is_closed(60)

        # Stop with this connection still open and a partial message buffered.
        c.send_raw(b"{\"method\": \"org.varlink.")
        return d.stop(expect=None)


def test_lifetime_under_valgrind():
    if not os.environ.get("VALGRIND"):
        raise Skip("run by meson with VALGRIND=1 (suite valgrind)")
    if not shutil.which("valgrind"):
        raise Skip("valgrind is not installed")
    with Daemon({"daemon.max_connections": 2, "debug_mode": True}) as d:
        rc = lifetime(d)
        with open(os.path.join(d.tmp, "valgrind.log")) as f:
            report = f.read()
        assert rc == 0, "exit %s\n%s\n%s" % (rc, d.read_log()[-3000:], report[-6000:])
        m = re.search(r"ERROR SUMMARY: (\d+) errors", report)
        assert m and m.group(1) == "0", report[-6000:]
        for kind in ("definitely lost", "indirectly lost"):
            m = re.search(kind + r": ([\d,]+) bytes", report)
            assert m is None or m.group(1) == "0", report[-6000:]


run_tests([test_lifetime_under_valgrind])
