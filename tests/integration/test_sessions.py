"""io.sessiond.Session and the session methods of io.sessiond.Admin, over
the real socket: every method and every error, expiry and grace with a
2-second idle timeout, eviction, fingerprints, platform switches, sync
state, rotation, watch streams."""

import contextlib
import grp
import os
import socket
import time

from harness import Daemon, VarlinkError, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

# Short timeouts for expiry tests: idle 2 s, grace 1 s; cleanup waits a
# minute so that the tests see "expired" sessions before they are ended.
SHORT = {
    "timeout.idle_timeout": 2,
    "timeout.expiration_grace": 1,
    "timeout.cleanup_grace": 60,
    "timeout.warning_threshold": 1,
}


@contextlib.contextmanager
def daemon(settings=None):
    """A Daemon that must stop cleanly at the end of the test: exit status 0,
    so that ASan and valgrind builds report what leaked."""
    with Daemon(settings) as d:
        yield d
        d.stop()


def admin_settings():
    """Lets this test's user call io.sessiond.Admin when it is not root."""
    if os.getuid() == 0:
        return {}
    return {"daemon.admin_group": grp.getgrgid(os.getgid()).gr_name}


def create(c, user="alice", **kw):
    params = {"user_id": user}
    params.update(kw)
    return c.call(S + "Create", params)


def expect_error(c, name, params, error, more=False, **expected):
    """Calls name and checks the error and its parameters; returns them."""
    if more:
        c.send(name, params, more=True)
        reply = c.recv()
        assert "error" in reply, "%s succeeded unexpectedly: %r" % (name, reply)
        err, p = reply["error"], reply.get("parameters", {})
    else:
        err, p = c.call_error(name, params)
    assert err == error, "%s: %s %r, expected %s" % (name, err, p, error)
    for k, v in expected.items():
        assert p.get(k) == v, "%s: %s has %s=%r, expected %r" % (name, err, k, p.get(k), v)
    return p


def test_create_and_validate():
    with daemon() as d, d.connect() as c:
        client = {"user_agent": "Firefox/120", "ip": "192.0.2.1", "accept_language": "en",
                  "accept_encoding": "gzip"}
        r = create(c, platform_id="web", client=client)
        assert len(r["token"]) == 43
        s = r["session"]
        assert len(s["id"]) == 22 and s["id"] not in r["token"]
        assert s["user_id"] == "alice" and s["platform_id"] == "web"
        assert s["state"] == "active"
        assert s["ip"] == "192.0.2.1" and s["user_agent"] == "Firefox/120"
        assert s["expires_at"] > s["created_at"]
        assert r["evicted"] == []

        v = c.call(S + "Validate", {"token": r["token"], "client": client})
        assert v["state"] == "active"
        assert v["session"]["id"] == s["id"]
        assert v["expires_in"] > 0 and v["warning"] is False
        assert "ended_at" not in v["session"]
        v = c.call(S + "Validate", {"token": r["token"], "touch": False})
        assert v["state"] == "active"

        h = c.call(S + "Heartbeat", {"token": r["token"]})
        assert h["expires_in"] > 0 and h["warning"] is False
        e = c.call(S + "Extend", {"token": r["token"]})
        assert e["expires_in"] > 0 and e["session"]["id"] == s["id"]

        cfg = c.call(S + "GetClientConfig")["config"]
        assert isinstance(cfg, dict) and cfg


def test_errors():
    with daemon() as d, d.connect() as c:
        token = create(c)["token"]
        # Wrong JSON types: org.varlink.service.InvalidParameter naming the parameter.
        bad = "org.varlink.service.InvalidParameter"
        expect_error(c, S + "Create", {"user_id": 5}, bad, parameter="user_id")
        expect_error(c, S + "Create", {}, bad, parameter="user_id")
        expect_error(c, S + "Create", {"user_id": "a", "client": "x"}, bad, parameter="client")
        expect_error(c, S + "Create", {"user_id": "a", "client": {"ip": 1}}, bad, parameter="client")
        expect_error(c, S + "Create", {"user_id": "a", "platform_id": []}, bad, parameter="platform_id")
        expect_error(c, S + "Create", {"user_id": "a", "sync_data": {}}, bad, parameter="sync_data")
        expect_error(c, S + "Validate", {}, bad, parameter="token")
        expect_error(c, S + "Validate", {"token": token, "touch": "yes"}, bad, parameter="touch")
        expect_error(c, S + "SetSyncState", {"token": token}, bad, parameter="data")
        expect_error(c, S + "SetSyncState", {"token": token, "data": "x", "expected_version": "1"}, bad,
                     parameter="expected_version")
        expect_error(c, S + "SwitchPlatform", {"token": token}, bad, parameter="platform_id")
        # Bad values: InvalidArgument(field, reason).
        inv = S + "InvalidArgument"
        p = expect_error(c, S + "Create", {"user_id": ""}, inv, field="user_id")
        assert p["reason"]
        expect_error(c, S + "Create", {"user_id": "x" * 256}, inv, field="user_id")
        expect_error(c, S + "Create", {"user_id": "a\nb"}, inv, field="user_id")
        expect_error(c, S + "Create", {"user_id": "a", "platform_id": ""}, inv, field="platform_id")
        expect_error(c, S + "Create", {"user_id": "a", "client": {"user_agent": "u" * 3000}}, inv,
                     field="client.user_agent")
        expect_error(c, S + "Validate", {"token": "short"}, inv, field="token")
        expect_error(c, S + "SetSyncState", {"token": token, "data": "x", "expected_version": -1}, inv,
                     field="expected_version")
        # Unknown tokens: NotFound, for every method that takes one.
        unknown = "A" * 43
        for method, extra in (("Validate", {}), ("Heartbeat", {}), ("Extend", {}), ("Rotate", {}),
                              ("SwitchPlatform", {"platform_id": "ios"}), ("GetSyncState", {}),
                              ("SetSyncState", {"data": "x"}), ("Destroy", {})):
            params = {"token": unknown}
            params.update(extra)
            expect_error(c, S + method, params, S + "NotFound")
        # Unknown methods and interfaces.
        expect_error(c, S + "Frobnicate", {}, "org.varlink.service.MethodNotFound",
                     method="io.sessiond.Session.Frobnicate")
        expect_error(c, "io.sessiond.Nothing.Create", {}, "org.varlink.service.InterfaceNotFound",
                     interface="io.sessiond.Nothing")
        # The daemon is still fine.
        assert c.call(S + "Validate", {"token": token})["state"] == "active"


def test_expiry_and_grace():
    with daemon(SHORT) as d, d.connect() as c:
        r = create(c)
        token = r["token"]
        v = c.call(S + "Validate", {"token": token, "touch": False})
        assert v["state"] == "active"
        assert 0 < v["expires_in"] <= 2
        assert v["warning"] == (v["expires_in"] <= 1)

        # Past the idle timeout: grace, still honoured, and never touched.
        def in_grace():
            v = c.call(S + "Validate", {"token": token, "touch": False})
            return v if v["state"] == "grace" else None
        g = wait_for(in_grace, timeout=5, what="grace")
        assert g["expires_in"] == 0 and g["warning"] is True
        assert g["session"]["state"] == "grace"
        last = g["session"]["last_activity"]
        g2 = c.call(S + "Validate", {"token": token})  # touch = true, but in grace
        if g2["state"] == "grace":
            assert g2["session"]["last_activity"] == last

        # After the grace period: Expired(idle).
        def expired():
            try:
                c.call(S + "Validate", {"token": token})
            except VarlinkError as e:
                return e
            return None
        e = wait_for(expired, timeout=5, what="expiry")
        assert e.error == S + "Expired" and e.parameters == {"reason": "idle"}, e
        # An expired session (not yet ended by cleanup) is not live any more.
        assert c.call(S + "ListUser", {"user_id": "alice"})["sessions"] == []
        expect_error(c, S + "Heartbeat", {"token": token}, S + "Expired", reason="idle")


def test_touch_keeps_alive():
    with daemon(SHORT) as d, d.connect() as c:
        token = create(c)["token"]
        # Twice the idle timeout, with activity every 0.4 s.
        for i in range(11):
            if i % 2:
                c.call(S + "Heartbeat", {"token": token})
            else:
                c.call(S + "Validate", {"token": token})
            time.sleep(0.4)
        assert c.call(S + "Validate", {"token": token})["state"] == "active"


def test_eviction():
    with daemon({"security.max_concurrent_per_user": 2}) as d, d.connect() as c:
        first = create(c)
        second = create(c)
        time.sleep(1.1)
        c.call(S + "Validate", {"token": first["token"]})  # second is now the least recently active
        third = create(c)
        assert third["evicted"] == [second["session"]["id"]]
        expect_error(c, S + "Validate", {"token": second["token"]}, S + "Expired", reason="evicted")
        ids = sorted(s["id"] for s in c.call(S + "ListUser", {"user_id": "alice"})["sessions"])
        assert ids == sorted([first["session"]["id"], third["session"]["id"]])
        # Other users are not affected.
        assert create(c, "bob")["evicted"] == []


def test_fingerprint():
    with daemon() as d, d.connect() as c:
        client = {"user_agent": "Firefox", "ip": "192.0.2.1", "accept_language": "en"}
        token = create(c, client=client)["token"]
        expect_error(c, S + "Validate", {"token": token, "client": dict(client, user_agent="curl")},
                     S + "FingerprintMismatch")
        # A new IP or language is recorded and passes.
        v = c.call(S + "Validate", {"token": token, "client": dict(client, ip="198.51.100.7")})
        assert v["state"] == "active"
        listed = c.call(S + "ListUser", {"user_id": "alice"})["sessions"]
        assert listed[0]["ip"] == "198.51.100.7"
        v = c.call(S + "Validate", {"token": token, "client": dict(client, ip="198.51.100.7",
                                                                    accept_language="de")})
        assert v["state"] == "active"
    with daemon({"security.fingerprinting": False}) as d, d.connect() as c:
        token = create(c, client={"user_agent": "Firefox"})["token"]
        v = c.call(S + "Validate", {"token": token, "client": {"user_agent": "curl"}})
        assert v["state"] == "active"


def test_rotation():
    with daemon() as d, d.connect() as c:
        r = create(c, platform_id="web")
        c.call(S + "SetSyncState", {"token": r["token"], "data": "tabs"})
        n = c.call(S + "Rotate", {"token": r["token"]})
        assert n["token"] != r["token"] and len(n["token"]) == 43
        assert n["session"]["id"] != r["session"]["id"]
        assert n["session"]["created_at"] == r["session"]["created_at"]
        assert n["session"]["platform_id"] == "web"
        assert c.call(S + "Validate", {"token": n["token"]})["state"] == "active"
        assert c.call(S + "GetSyncState", {"token": n["token"]}) == {"version": 1, "data": "tabs"}
        expect_error(c, S + "Validate", {"token": r["token"]}, S + "Expired", reason="rotated")
        expect_error(c, S + "Rotate", {"token": r["token"]}, S + "Expired", reason="rotated")


def test_switch_platform():
    with daemon({"security.max_platform_switches_per_hour": 2}) as d, d.connect() as c:
        token = create(c, platform_id="web")["token"]
        s = c.call(S + "SwitchPlatform", {"token": token, "platform_id": "ios"})["session"]
        assert s["platform_id"] == "ios"
        c.call(S + "SwitchPlatform", {"token": token, "platform_id": "android"})
        # The same platform again is no switch.
        c.call(S + "SwitchPlatform", {"token": token, "platform_id": "android"})
        p = expect_error(c, S + "SwitchPlatform", {"token": token, "platform_id": "web"}, S + "RateLimited")
        assert 3500 < p["retry_after"] <= 3600
        assert c.call(S + "Validate", {"token": token})["session"]["platform_id"] == "android"
        expect_error(c, S + "SwitchPlatform", {"token": token, "platform_id": ""}, S + "InvalidArgument",
                     field="platform_id")
    with daemon({"features.platform_switching": False}) as d, d.connect() as c:
        token = create(c)["token"]
        expect_error(c, S + "SwitchPlatform", {"token": token, "platform_id": "ios"}, S + "FeatureDisabled",
                     feature="platform_switching")


def test_sync_state():
    with daemon({"sync.max_data_size": 16}) as d, d.connect() as c:
        token = create(c, sync_data="first")["token"]
        assert c.call(S + "GetSyncState", {"token": token}) == {"version": 1, "data": "first"}
        assert c.call(S + "SetSyncState", {"token": token, "data": "second", "expected_version": 1}) == {"version": 2}
        expect_error(c, S + "SetSyncState", {"token": token, "data": "late", "expected_version": 1},
                     S + "Conflict", version=2)
        assert c.call(S + "SetSyncState", {"token": token, "data": "x" * 16}) == {"version": 3}
        expect_error(c, S + "SetSyncState", {"token": token, "data": "x" * 17}, S + "TooLarge", max=16)
        expect_error(c, S + "Create", {"user_id": "a", "sync_data": "y" * 17}, S + "TooLarge", max=16)
        # Multi-byte characters count in bytes.
        expect_error(c, S + "SetSyncState", {"token": token, "data": "\u00e9" * 9}, S + "TooLarge", max=16)
        assert c.call(S + "SetSyncState", {"token": token, "data": "\u00e9" * 8}) == {"version": 4}
        assert c.call(S + "GetSyncState", {"token": token})["data"] == "\u00e9" * 8
        fresh = create(c, "bob")["token"]
        assert c.call(S + "GetSyncState", {"token": fresh}) == {"version": 0}
    with daemon({"features.cross_tab_sync": False}) as d, d.connect() as c:
        token = create(c)["token"]
        expect_error(c, S + "GetSyncState", {"token": token}, S + "FeatureDisabled", feature="cross_tab_sync")
        expect_error(c, S + "SetSyncState", {"token": token, "data": "x"}, S + "FeatureDisabled",
                     feature="cross_tab_sync")
        expect_error(c, S + "Create", {"user_id": "a", "sync_data": "x"}, S + "FeatureDisabled",
                     feature="cross_tab_sync")


def test_destroy():
    with daemon() as d, d.connect() as c:
        mine = [create(c)["token"] for _ in range(3)]
        bob = create(c, "bob")["token"]
        assert c.call(S + "Destroy", {"token": mine[0]}) == {}
        expect_error(c, S + "Validate", {"token": mine[0]}, S + "Expired", reason="destroyed")
        expect_error(c, S + "Destroy", {"token": mine[0]}, S + "Expired", reason="destroyed")
        # Log out everywhere else.
        expect_error(c, S + "DestroyUser", {"user_id": "alice", "except_token": bob}, S + "InvalidArgument",
                     field="except_token")
        assert c.call(S + "DestroyUser", {"user_id": "alice", "except_token": mine[1]}) == {"count": 1}
        assert c.call(S + "Validate", {"token": mine[1]})["state"] == "active"
        expect_error(c, S + "Validate", {"token": mine[2]}, S + "Expired", reason="destroyed")
        assert c.call(S + "DestroyUser", {"user_id": "alice"}) == {"count": 1}
        assert c.call(S + "DestroyUser", {"user_id": "alice"}) == {"count": 0}
        assert c.call(S + "DestroyUser", {"user_id": "nobody"}) == {"count": 0}
        assert c.call(S + "Validate", {"token": bob})["state"] == "active"


def test_list_user():
    with daemon() as d, d.connect() as c:
        ids = {create(c, client={"ip": "192.0.2.%d" % i})["session"]["id"] for i in range(3)}
        create(c, "bob")
        sessions = c.call(S + "ListUser", {"user_id": "alice"})["sessions"]
        assert {s["id"] for s in sessions} == ids
        assert all(s["state"] == "active" and s["user_id"] == "alice" and s["ip"].startswith("192.0.2.")
                   for s in sessions)
        assert c.call(S + "ListUser", {"user_id": "nobody"})["sessions"] == []
        expect_error(c, S + "ListUser", {"user_id": ""}, S + "InvalidArgument", field="user_id")


def recv_reply(c):
    reply = c.recv()
    assert "error" not in reply, reply
    return reply


def test_watch():
    with daemon() as d, d.connect() as c:
        r = create(c, platform_id="web", sync_data="v1")
        token = r["token"]
        expect_error(c, S + "Watch", {"token": token}, "org.varlink.service.ExpectedMore")
        with d.connect() as w:
            w.send(S + "Watch", {"token": token}, more=True)
            first = recv_reply(w)
            assert first.get("continues") is True
            p = first["parameters"]
            assert p["event"] == "state" and p["session"]["id"] == r["session"]["id"]
            assert p["version"] == 1 and p["data"] == "v1"

            c.call(S + "SetSyncState", {"token": token, "data": "v2"})
            p = recv_reply(w)["parameters"]
            assert p["event"] == "sync" and p["version"] == 2 and p["data"] == "v2"

            c.call(S + "SwitchPlatform", {"token": token, "platform_id": "ios"})
            p = recv_reply(w)["parameters"]
            assert p["event"] == "platform" and p["session"]["platform_id"] == "ios"

            c.call(S + "Destroy", {"token": token})
            last = recv_reply(w)
            assert not last.get("continues")
            assert last["parameters"]["event"] == "ended"
            s = last["parameters"]["session"]
            assert s["state"] == "ended" and s["end_reason"] == "destroyed" and "ended_at" in s
            # The connection takes calls again.
            assert w.call(S + "GetClientConfig")["config"]
        expect_error(c, S + "Watch", {"token": token}, S + "Expired", more=True, reason="destroyed")
        expect_error(c, S + "Watch", {"token": "A" * 43}, S + "NotFound", more=True)


def test_watch_rotation():
    with daemon() as d, d.connect() as c, d.connect() as w:
        token = create(c)["token"]
        w.send(S + "Watch", {"token": token}, more=True)
        assert recv_reply(w)["parameters"]["event"] == "state"
        c.call(S + "Rotate", {"token": token})
        last = recv_reply(w)
        assert not last.get("continues")
        assert last["parameters"]["event"] == "rotated"
        assert last["parameters"]["session"]["end_reason"] == "rotated"


def test_watch_warning_and_end():
    with daemon(SHORT) as d, d.connect() as c, d.connect() as w:
        token = create(c)["token"]
        w.send(S + "Watch", {"token": token}, more=True)
        assert recv_reply(w)["parameters"]["event"] == "state"
        events = []
        while True:
            reply = recv_reply(w)
            events.append(reply["parameters"]["event"])
            if not reply.get("continues"):
                break
        assert events == ["warning", "ended"], events
        assert reply["parameters"]["session"]["state"] == "expired"


def sleep_until(t):
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.05) if left > 0.06 else left)


def test_fractional_times():
    """Issue 13: times are kept to the millisecond. A heartbeat at X.85 s of
    the wall clock (the daemon's clock is the wall clock read at start, to
    the ms) with idle_timeout 3 keeps the session active until X.85 + 3;
    whole seconds counted it from X and put it in grace at X + 3, warned it
    at X + 2 and showed expires_at X + 3."""
    settings = dict(SHORT, **{"timeout.idle_timeout": 3})
    with daemon(settings) as d, d.connect() as c, d.connect() as w:
        token = create(c)["token"]
        w.send(S + "Watch", {"token": token}, more=True)
        assert recv_reply(w)["parameters"]["event"] == "state"
        # The heartbeat at X.85, answered within 0.1 s (else the next second).
        for _ in range(10):
            sleep_until(int(time.time()) + 1.85)
            t0 = time.time()
            hb = c.call(S + "Heartbeat", {"token": token})
            if time.time() - t0 < 0.1:
                break
        else:
            raise AssertionError("no heartbeat answered within 0.1 s")
        second = int(t0)
        assert hb["expires_in"] == 3 and hb["warning"] is False, hb

        # 1.25 s left: not yet warned, and never told less than it has.
        sleep_until(t0 + 1.75)
        v = c.call(S + "Validate", {"token": token, "touch": False})
        assert v["state"] == "active" and v["warning"] is False and v["expires_in"] == 2, v
        assert v["session"]["last_activity"] == second, (v, t0)  # floored
        assert v["session"]["expires_at"] == second + 4, (v, t0)  # X.85 + 3, rounded up

        # The warning comes when 1 s is left, not before.
        reply = recv_reply(w)
        warned = time.time()
        assert reply["parameters"]["event"] == "warning", reply
        assert warned >= t0 + 2 - 0.01, (warned - t0)

        # Just before the whole idle timeout has passed: still active.
        sleep_until(t0 + 2.65)
        v = c.call(S + "Validate", {"token": token, "touch": False})
        assert v["state"] == "active", (v, time.time() - t0)
        assert v["expires_in"] == 1 and v["warning"] is True, v

        # Once it has passed: grace.
        sleep_until(t0 + 3.2)
        v = c.call(S + "Validate", {"token": token, "touch": False})
        assert v["state"] == "grace" and v["expires_in"] == 0, v


def test_watch_client_goes_away():
    with daemon() as d, d.connect() as c:
        token = create(c)["token"]
        for _ in range(3):
            w = d.connect()
            w.send(S + "Watch", {"token": token}, more=True)
            assert recv_reply(w)["parameters"]["event"] == "state"
            w.close()
        # Events for a session whose watchers left are harmless.
        c.call(S + "SetSyncState", {"token": token, "data": "x"})
        c.call(S + "Destroy", {"token": token})
        assert c.call(S + "GetClientConfig")["config"]


def test_watch_slow_reader():
    # A watcher that never reads: its stream is cut once the server's output
    # cap is reached, and the daemon goes on.
    with daemon({"sync.max_data_size": 60000, "daemon.max_message_size": 200000}) as d, d.connect() as c:
        token = create(c)["token"]
        w = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        w.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        w.connect(d.socket)
        w.sendall(b'{"method":"io.sessiond.Session.Watch","parameters":{"token":"%s"},"more":true}\0'
                  % token.encode())
        time.sleep(0.2)
        big = "x" * 60000
        for _ in range(60):
            c.call(S + "SetSyncState", {"token": token, "data": big})
        assert "does not read" in wait_for(lambda: d.read_log() if "does not read" in d.read_log() else None,
                                          what="the slow watcher to be cut")
        w.close()
        assert c.call(S + "Validate", {"token": token})["state"] == "active"


def test_admin_sessions():
    with daemon(admin_settings()) as d, d.connect() as c:
        a1 = create(c)
        create(c)
        b = create(c, "bob")
        listed = c.call(A + "ListSessions")["sessions"]
        assert len(listed) == 3
        assert len(c.call(A + "ListSessions", {"limit": 2})["sessions"]) == 2
        assert len(c.call(A + "ListSessions", {"user_id": "bob"})["sessions"]) == 1
        expect_error(c, A + "ListSessions", {"limit": 0}, A + "InvalidArgument", field="limit")
        expect_error(c, A + "ListSessions", {"limit": "x"}, "org.varlink.service.InvalidParameter",
                     parameter="limit")

        assert c.call(A + "Terminate", {"id": a1["session"]["id"]}) == {}
        expect_error(c, S + "Validate", {"token": a1["token"]}, S + "Expired", reason="terminated")
        expect_error(c, A + "Terminate", {"id": a1["session"]["id"]}, A + "NotFound")
        expect_error(c, A + "Terminate", {"id": "nope"}, A + "InvalidArgument", field="id")
        ended = [s for s in c.call(A + "ListSessions", {"include_ended": True})["sessions"]
                 if s["state"] == "ended"]
        assert [s["end_reason"] for s in ended] == ["terminated"]
        assert ended[0]["ended_at"] > 0

        assert c.call(A + "TerminateUser", {"user_id": "alice"}) == {"count": 1}
        assert c.call(A + "TerminateUser", {"user_id": "alice"}) == {"count": 0}
        assert c.call(S + "Validate", {"token": b["token"]})["state"] == "active"

        st = c.call(A + "Status")["status"]
        for key in ("version", "pid", "uptime", "started_at", "environment", "config_file",
                    "sessions_active", "sessions_awaiting_cleanup", "connections", "reloads"):
            assert key in st, key
        assert st["sessions_active"] == 1 and st["pid"] == d.proc.pid
        cfg = c.call(A + "GetConfig")["config"]
        assert cfg["security"]["max_concurrent_per_user"] == 5


def test_admin_reload():
    with daemon(admin_settings()) as d, d.connect() as c:
        d.write_config({"security.max_concurrent_per_user": 3})
        assert c.call(A + "Reload") == {}
        assert c.call(A + "GetConfig")["config"]["security"]["max_concurrent_per_user"] == 3
        assert c.call(A + "Status")["status"]["reloads"] == 1
        d.write_config({"timeout.idle_timeout": 999999})
        p = expect_error(c, A + "Reload", {}, A + "ConfigInvalid")
        assert any("Idle timeout should be less than session lifetime" in i for i in p["issues"]), p
        assert c.call(A + "GetConfig")["config"]["security"]["max_concurrent_per_user"] == 3
        # The new limit applies to the next create.
        tokens = [create(c)["token"] for _ in range(4)]
        expect_error(c, S + "Validate", {"token": tokens[0]}, S + "Expired", reason="evicted")


def test_many_pipelined():
    with daemon({"security.max_concurrent_per_user": 1000}) as d, d.connect() as c:
        n = 300
        data = b"".join(b'{"method":"io.sessiond.Session.Create","parameters":{"user_id":"u%d"}}\0' % (i % 7)
                        for i in range(n))
        c.send_raw(data)
        tokens = [recv_reply(c)["parameters"]["token"] for _ in range(n)]
        assert len(set(tokens)) == n
        c.send_raw(b"".join(b'{"method":"io.sessiond.Session.Validate","parameters":{"token":"%s"}}\0'
                            % t.encode() for t in tokens))
        for _ in range(n):
            assert recv_reply(c)["parameters"]["state"] == "active"


run_tests([
    test_create_and_validate,
    test_errors,
    test_expiry_and_grace,
    test_touch_keeps_alive,
    test_eviction,
    test_fingerprint,
    test_rotation,
    test_switch_platform,
    test_sync_state,
    test_destroy,
    test_list_user,
    test_watch,
    test_watch_rotation,
    test_watch_warning_and_end,
    test_fractional_times,
    test_watch_client_goes_away,
    test_watch_slow_reader,
    test_admin_sessions,
    test_admin_reload,
    test_many_pipelined,
])
