"""The Varlink protocol as sessiond speaks it on its socket.

org.varlink.service (GetInfo, GetInterfaceDescription served byte for byte
from the .varlink files), the standard errors, framing (partial writes,
pipelining, oneway), every kind of malformed input (each closes only its own
connection), the limits (daemon.max_message_size, daemon.max_connections
and the per-uid share of it, the 10 s timeout for half a message) and the
access check of io.sessiond.Admin for peers that are not root (run as
nobody with setpriv; those tests need root and are skipped otherwise).
"""

import grp
import json
import os
import pwd
import socket
import subprocess
import time

from harness import Connection, Daemon, Skip, VarlinkError, run_tests, wait_for

SOURCE = os.environ.get("MESON_SOURCE_ROOT",
                        os.path.join(os.path.dirname(__file__), "..", ".."))
INTERFACES = {
    "org.varlink.service": "org.varlink.service.varlink",
    "io.sessiond.Session": "io.sessiond.Session.varlink",
    "io.sessiond.Admin": "io.sessiond.Admin.varlink",
}
SYSTEM_PYTHON = "/usr/bin/python3"


def msg(obj):
    return json.dumps(obj).encode() + b"\0"


def assert_served(conn):
    """The connection still answers calls."""
    info = conn.call("org.varlink.service.GetInfo")
    assert info["product"] == "sessiond", info


def assert_closed_alone(d, payload, opened_before):
    """Sends payload on a new connection: that one is closed, the daemon and
    a connection opened before keep working."""
    with d.connect() as c:
        try:
            c.send_raw(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: fine
        assert c.is_closed(5), "connection not closed after %r" % payload[:60]
    assert_served(opened_before)
    assert d.proc.poll() is None, "daemon died"


def served_connection(d):
    """A connection the daemon has accepted and answers (retries while a
    connection closed just before is still counted)."""
    def attempt():
        c = d.connect()
        try:
            assert_served(c)
            return c
        except (ConnectionError, OSError):
            c.close()
            return None
    return wait_for(attempt, what="a served connection")


# ---- org.varlink.service ----------------------------------------------------

def test_get_info():
    with Daemon() as d:
        info = d.call("org.varlink.service.GetInfo")
        assert info["vendor"] == "sessiond" and info["product"] == "sessiond", info
        with open(os.path.join(SOURCE, "meson.build")) as f:
            version = f.read().split("version : '", 1)[1].split("'", 1)[0]
        assert info["version"] == version, info
        assert info["url"], info
        assert info["interfaces"] == ["org.varlink.service", "io.sessiond.Session",
                                      "io.sessiond.Admin"], info


def test_interface_descriptions_verbatim():
    with Daemon() as d, d.connect() as c:
        for name, path in INTERFACES.items():
            with open(os.path.join(SOURCE, "daemon", path), encoding="utf-8") as f:
                text = f.read()
            got = c.call("org.varlink.service.GetInterfaceDescription", {"interface": name})
            assert got["description"] == text, "%s differs from daemon/%s" % (name, path)


def test_unknown_interface_and_method():
    with Daemon() as d, d.connect() as c:
        assert c.call_error("org.varlink.service.GetInterfaceDescription",
                            {"interface": "com.example.Nope"}) == \
            ("org.varlink.service.InterfaceNotFound", {"interface": "com.example.Nope"})
        assert c.call_error("com.example.Nope.Method") == \
            ("org.varlink.service.InterfaceNotFound", {"interface": "com.example.Nope"})
        assert c.call_error("org.varlink.service.Nope") == \
            ("org.varlink.service.MethodNotFound", {"method": "org.varlink.service.Nope"})
        assert c.call_error("io.sessiond.Session.Nope") == \
            ("org.varlink.service.MethodNotFound", {"method": "io.sessiond.Session.Nope"})
        assert c.call_error("io.sessiond.Admin.Nope") == \
            ("org.varlink.service.MethodNotFound", {"method": "io.sessiond.Admin.Nope"})
        for bad in ({}, {"interface": 42}, {"interface": None}):
            assert c.call_error("org.varlink.service.GetInterfaceDescription", bad) == \
                ("org.varlink.service.InvalidParameter", {"parameter": "interface"}), bad
        # A protocol upgrade is offered by no method.
        c.send_raw(msg({"method": "org.varlink.service.GetInfo", "upgrade": True}))
        r = c.recv()
        assert r["error"] == "org.varlink.service.MethodNotImplemented", r
        assert_served(c)


def test_null_parameters_mean_none():
    """"parameters": null, as the Go reference implementation sends every call
    without parameters: the same as absent, whichever parser reads it."""
    with Daemon() as d, d.connect() as c:
        c.send_raw(msg({"method": "org.varlink.service.GetInfo", "parameters": None}))
        assert c.recv()["parameters"]["product"] == "sessiond"
        # an array member makes the daemon's fast scanner hand the call to jansson
        c.send_raw(msg({"method": "org.varlink.service.GetInfo", "parameters": None, "x": []}))
        assert c.recv()["parameters"]["product"] == "sessiond"
        c.send_raw(msg({"method": "io.sessiond.Session.NoSuch", "parameters": None}))
        assert c.recv() == {"error": "org.varlink.service.MethodNotFound",
                            "parameters": {"method": "io.sessiond.Session.NoSuch"}}
        c.send_raw(msg({"method": "io.sessiond.Session.Validate", "parameters": None}))
        assert c.recv() == {"error": "org.varlink.service.InvalidParameter",
                            "parameters": {"parameter": "token"}}
        c.send_raw(msg({"method": "io.sessiond.Session.GetClientConfig", "parameters": None}))
        assert "config" in c.recv()["parameters"]
        assert_served(c)


# ---- framing ------------------------------------------------------------------

def test_partial_writes_byte_by_byte():
    with Daemon() as d, d.connect() as c:
        data = msg({"method": "org.varlink.service.GetInterfaceDescription",
                    "parameters": {"interface": "io.sessiond.Admin"}})
        for i, b in enumerate(data):
            c.send_raw(bytes([b]))
            if i < 20:
                time.sleep(0.002)  # make the first bytes arrive in separate reads
        assert "interface io.sessiond.Admin" in c.recv()["parameters"]["description"]


def test_pipelined_calls_answered_in_order():
    names = list(INTERFACES) + ["com.example.Missing"]
    with Daemon() as d, d.connect() as c:
        batch = b"".join(msg({"method": "org.varlink.service.GetInterfaceDescription",
                              "parameters": {"interface": names[i % len(names)]}})
                         for i in range(400))
        c.send_raw(batch)
        for i in range(400):
            r = c.recv()
            name = names[i % len(names)]
            if name == "com.example.Missing":
                assert r == {"error": "org.varlink.service.InterfaceNotFound",
                             "parameters": {"interface": name}}, (i, r)
            else:
                assert "interface " + name + "\n" in r["parameters"]["description"], (i, name)


def test_oneway_gets_no_reply():
    with Daemon() as d, d.connect() as c:
        c.send_raw(msg({"method": "org.varlink.service.GetInterfaceDescription",
                        "parameters": {"interface": "io.sessiond.Admin"}, "oneway": True}) +
                   msg({"method": "org.varlink.service.GetInfo"}))
        r = c.recv()
        assert r["parameters"]["product"] == "sessiond", r  # the first reply is GetInfo's
        c.sock.settimeout(0.3)
        try:
            extra = c.sock.recv(1)
        except socket.timeout:
            extra = None
        assert extra is None and c.buf == b"", "oneway call was answered"


# ---- malformed input closes that connection only -------------------------------

def test_garbage_and_invalid_messages():
    cases = [
        b"\x00",                                    # an empty message
        b"\xff\xfe garbage \x01\x02\0",
        b"{not json\0",
        b"{\"method\": \"org.varlink.service.GetInfo\"\0",   # truncated object
        b"[1, 2, 3]\0", b"\"a string\"\0", b"42\0", b"null\0",  # JSON, not an object
        msg({"parameters": {}}),                    # no method
        msg({"method": 42}),
        msg({"method": "NoDots"}),
        msg({"method": "org.varlink.service.GetInfo", "parameters": [1]}),
        msg({"method": "org.varlink.service.GetInfo", "more": "yes"}),   # wrong flag types
        msg({"method": "org.varlink.service.GetInfo", "oneway": 1}),
        msg({"method": "org.varlink.service.GetInfo", "upgrade": None}),
        msg({"method": "org.varlink.service.GetInfo", "oneway": True, "more": True}),
        b"{\"method\": \"org.varlink.service.GetInfo\", \"x\": \"\xc3\x28\"}\0",  # bad UTF-8
    ]
    with Daemon() as d, d.connect() as keep:
        assert_served(keep)
        for payload in cases:
            assert_closed_alone(d, payload, keep)
        # A valid call after garbage on the same connection is never reached.
        assert_closed_alone(d, b"{]\0" + msg({"method": "org.varlink.service.GetInfo"}), keep)
        assert "closing it" in d.read_log()


def test_deeply_nested_json():
    # Large enough to hold the whole thing: the nesting itself is refused.
    with Daemon({"daemon.max_message_size": 400000}) as d, d.connect() as keep:
        assert_closed_alone(d, b"[" * 100000 + b"]" * 100000 + b"\0", keep)
        assert_closed_alone(d, b"{\"method\": \"a.B\", \"parameters\": {\"x\": " + b"[" * 100000 + b"\0",
                            keep)
    # With the default limit the same input is simply too long.
    with Daemon() as d, d.connect() as keep:
        assert_closed_alone(d, b"[" * 100000 + b"\0", keep)


def test_oversized_message():
    with Daemon({"daemon.max_message_size": 1024}) as d, d.connect() as keep:
        big = msg({"method": "org.varlink.service.GetInterfaceDescription",
                   "parameters": {"interface": "x" * 2000}})
        assert_closed_alone(d, big, keep)
        # Without a NUL at all: closed as soon as it passes the limit.
        assert_closed_alone(d, b"{\"method\": \"" + b"a" * 4000, keep)
        # Just under the limit is fine.
        fits = msg({"method": "org.varlink.service.GetInterfaceDescription",
                    "parameters": {"interface": "y" * 900}})
        assert len(fits) - 1 <= 1024
        assert keep.call_error("org.varlink.service.GetInterfaceDescription",
                               {"interface": "y" * 900})[0] == "org.varlink.service.InterfaceNotFound"
        assert "max_message_size" in d.read_log()


def test_half_sent_message_times_out():
    with Daemon() as d, d.connect() as idle, d.connect(timeout=20) as slow:
        assert_served(idle)
        start = time.monotonic()
        slow.send_raw(b"{\"method\": \"org.varlink.service.Get")
        assert slow.is_closed(20), "half a message was held for 20 s"
        waited = time.monotonic() - start
        assert waited >= 9, "closed after %.1f s, before the 10 s timeout" % waited
        # A connection that only sat idle for as long is still served.
        assert_served(idle)
        assert "half a message" in d.read_log()


# ---- limits -------------------------------------------------------------------------

def test_max_connections():
    with Daemon({"daemon.max_connections": 3}) as d:
        held = [served_connection(d) for _ in range(3)]
        extra = d.connect()
        assert extra.is_closed(5), "a 4th connection was served with max_connections = 3"
        extra.close()
        for c in held:
            assert_served(c)
        assert "Refused" in d.read_log() and "max_connections" in d.read_log()
        held.pop().close()
        c = served_connection(d)  # the freed slot is usable again
        c.close()
        for c in held:
            c.close()


def test_stream_peer_that_never_reads():
    with Daemon() as d, d.connect() as c:
        token = c.call("io.sessiond.Session.Create", {"user_id": "alice"})["token"]
        w = d.connect()
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
        # Every sync write is an event on the stream, which w never reads:
        # once the kernel's buffers and the daemon's output cap (1 MiB) are
        # full, the daemon ends the stream instead of buffering more.
        data = "x" * 1000
        batch = b"".join(msg({"method": "io.sessiond.Session.SetSyncState",
                              "parameters": {"token": token, "data": data}}) for _ in range(100))
        for _ in range(40):
            c.send_raw(batch)
            for _ in range(100):
                c.recv()
            if "does not read" in d.read_log():
                break
        assert "does not read" in d.read_log(), "stream output grew past the cap"
        assert w.is_closed(5)
        w.close()
        assert_served(c)


# ---- access control (needs root: setpriv to nobody) ----------------------------------

# Run by the system python as nobody: opens `n` connections one after the
# other, makes the calls on each, prints one JSON line of results, then keeps
# the connections open until its stdin closes.
CLIENT = r'''
import json, socket, sys
path, n, calls = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
conns, results = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
    except OSError as e:
        results.append(["connect-failed", str(e)])
        continue
    conns.append(s)
    buf, res = b"", []
    for method, params in calls:
        try:
            s.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
            while b"\0" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            m, buf = buf.split(b"\0", 1)
            r = json.loads(m)
            res.append(r.get("error", "ok"))
        except (OSError, ConnectionError):
            res.append("closed")
            break
    results.append(res)
print(json.dumps(results), flush=True)
sys.stdin.read()
'''


class NobodyClient:
    """CLIENT running as nobody:nogroup with no supplementary groups (or
    the gids given as groups)."""

    def __init__(self, d, n, calls, groups=None):
        if os.geteuid() != 0:
            raise Skip("needs root to switch to nobody")
        if not os.path.exists(SYSTEM_PYTHON):
            raise Skip(SYSTEM_PYTHON + " is missing")
        # nobody must reach the socket: the folder traversable, the socket
        # in nobody's group (its mode stays 0660).
        os.chmod(d.tmp, 0o711)
        os.chown(d.socket, -1, grp.getgrnam("nogroup").gr_gid)
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid=nobody", "--regid=nogroup"]
            + (["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"])
            + [SYSTEM_PYTHON, "-c", CLIENT, d.socket, str(n), json.dumps(calls)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise AssertionError("nobody client failed (exit %s)" % self.proc.returncode)
        self.results = json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


ACCESS_CALLS = [
    ["org.varlink.service.GetInfo", {}],
    ["io.sessiond.Session.GetClientConfig", {}],
    ["io.sessiond.Admin.GetConfig", {}],
    ["io.sessiond.Admin.Reload", {}],
    ["io.sessiond.Session.GetClientConfig", {}],
]


def test_non_admin_refused_on_admin_interface():
    with Daemon({"daemon.admin_group": "sessiond-test-no-such-group"}) as d:
        client = NobodyClient(d, 1, ACCESS_CALLS)
        client.close()
        assert client.results == [["ok", "ok",
                                   "org.varlink.service.PermissionDenied",
                                   "org.varlink.service.PermissionDenied",
                                   "ok"]], client.results
        # root on the same daemon is an administrator.
        assert "config" in d.call("io.sessiond.Admin.GetConfig")


def test_admin_group_grants_access():
    if os.geteuid() != 0:
        raise Skip("needs root to create a group")
    group = "sessiond-test-%d" % os.getpid()
    subprocess.run(["groupadd", "--users", "nobody", group], check=True, capture_output=True)
    try:
        with Daemon({"daemon.admin_group": group}) as d:
            gid = grp.getgrnam(group).gr_gid
            # A process holding the group (a supplementary group) is an
            # administrator.
            client = NobodyClient(d, 1, ACCESS_CALLS[:4], groups=[gid])
            client.close()
            assert client.results == [["ok", "ok", "ok", "ok"]], client.results
            # Membership in /etc/group alone is not: the process dropped the
            # group (setpriv cleared its groups), and rights come from the
            # peer's credentials, never from the user database.
            client = NobodyClient(d, 1, ACCESS_CALLS[:4])
            client.close()
            assert client.results == [["ok", "ok", "org.varlink.service.PermissionDenied",
                                       "org.varlink.service.PermissionDenied"]], client.results
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


def test_per_uid_share_of_connections():
    # max_connections 8: one uid other than root gets at most 6 (3/4).
    with Daemon({"daemon.max_connections": 8}) as d:
        client = NobodyClient(d, 7, [["org.varlink.service.GetInfo", {}]])
        try:
            assert client.results == [["ok"]] * 6 + [["closed"]], client.results
            # The other users still get in while nobody holds its share.
            with served_connection(d) as c:
                assert_served(c)
        finally:
            client.close()
        assert "3/4 of daemon.max_connections" in d.read_log()


# ---- group commit: a failed commit is never acknowledged --------------------------

def fill(path):
    """Writes to path until the file system is full; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                n += f.write(b"\0" * 4096)
        except OSError:
            pass
    return n


def test_storage_full_answers_writes_with_an_error():
    if os.geteuid() != 0:
        raise Skip("needs root to mount a small tmpfs")
    tmp = __import__("tempfile").mkdtemp(prefix="sessiond-test-")
    mnt = os.path.join(tmp, "small")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                      capture_output=True).returncode != 0:
        raise Skip("cannot mount a tmpfs here")
    try:
        with Daemon({"daemon.database_path": os.path.join(mnt, "sessions.db")}, tmpdir=tmp) as d, \
                d.connect() as c:
            first = c.call("io.sessiond.Session.Create", {"user_id": "alice"})["token"]
            filler = os.path.join(mnt, "filler")
            fill(filler)
            acknowledged, errors = [], []
            for i in range(300):
                try:
                    r = c.call("io.sessiond.Session.Create", {"user_id": "user-%d" % i})
                    acknowledged.append(r["token"])
                except VarlinkError as e:
                    errors.append(e)
                    if len(errors) >= 3:
                        break
            assert errors, "300 sessions created on a full file system"
            for e in errors:
                assert e.error == "io.sessiond.Session.StorageFull", e
                assert e.parameters.get("reason"), e
            # Reads go on; the connection and the daemon too. Pipelined, a
            # read between two failed writes keeps its place and its answer.
            assert_served(c)
            c.send_raw(msg({"method": "io.sessiond.Session.Create", "parameters": {"user_id": "x"}}) +
                       msg({"method": "org.varlink.service.GetInfo"}) +
                       msg({"method": "io.sessiond.Session.Create", "parameters": {"user_id": "y"}}))
            replies = [c.recv() for _ in range(3)]
            assert [r.get("error") for r in replies] == [
                "io.sessiond.Session.StorageFull", None, "io.sessiond.Session.StorageFull"], replies
            assert replies[1]["parameters"]["product"] == "sessiond"
            os.unlink(filler)
            later = c.call("io.sessiond.Session.Create", {"user_id": "bob"})["token"]
            # Everything acknowledged survives a crash.
            d.kill()
            d.start()
            with d.connect() as c2:
                for t in [first, later] + acknowledged:
                    assert c2.call("io.sessiond.Session.Validate", {"token": t})["state"] == "active"
            d.stop()
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        __import__("shutil").rmtree(tmp, ignore_errors=True)


run_tests([
    test_get_info,
    test_interface_descriptions_verbatim,
    test_unknown_interface_and_method,
    test_null_parameters_mean_none,
    test_partial_writes_byte_by_byte,
    test_pipelined_calls_answered_in_order,
    test_oneway_gets_no_reply,
    test_garbage_and_invalid_messages,
    test_deeply_nested_json,
    test_oversized_message,
    test_half_sent_message_times_out,
    test_max_connections,
    test_stream_peer_that_never_reads,
    test_storage_full_answers_writes_with_an_error,
    test_non_admin_refused_on_admin_interface,
    test_admin_group_grants_access,
    test_per_uid_share_of_connections,
])
