"""Hostile peers meet limits, and everybody else keeps being served.

test_protocol.py has one of each: max_connections, the per-uid share, one
half-sent message, an oversized message, deep nesting, one Watch peer that
never reads. This file adds the attacks as they come in practice, each
while an ordinary client keeps getting answers (asserted by calls, never by
timing):

  - slowloris proper: many connections trickling a byte at a time, which
    must not reset the 10 s half-message timeout;
  - a peer that pipelines thousands of calls and never reads: back
    pressure, then every reply in order once it reads;
  - huge but well-framed JSON (long strings, wide arrays, many keys) and
    deep nesting inside a method call's parameters under the default
    max_message_size;
  - several Watch peers that never read at once: each is cut off at the
    output cap, and their slots are given back;
  - a flood of connections over max_connections, refused and then usable
    again.
"""

import json
import socket
import threading
import time

from harness import Daemon, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."


def msg(method, params=None):
    m = {"method": method}
    if params is not None:
        m["parameters"] = params
    return json.dumps(m).encode() + b"\0"


def assert_served(c):
    assert c.call("org.varlink.service.GetInfo")["product"] == "sessiond"


def served_connection(d):
    def attempt():
        c = d.connect()
        try:
            assert_served(c)
            return c
        except (ConnectionError, OSError):
            c.close()
            return None
    return wait_for(attempt, what="a served connection")


def connections(c):
    return c.call(A + "Status")["status"]["connections"]


def test_slowloris_trickle():
    with Daemon() as d, d.connect() as keep:
        token = keep.call(S + "Create", {"user_id": "alice"})["token"]
        slow = [d.connect(timeout=30) for _ in range(10)]
        payload = b'{"method": "io.sessiond.Session.Validate", "parameters": {"token": "' + b"x" * 200
        closed = [False] * len(slow)
        start = time.monotonic()
        i = 0
        # One byte per connection every 0.5 s: each keeps "sending", none
        # ever completes a message. The timeout counts from the first byte
        # of the half message, so the trickle does not keep them open.
        while not all(closed) and time.monotonic() - start < 25:
            for n, s in enumerate(slow):
                if closed[n]:
                    continue
                try:
                    s.send_raw(payload[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed[n] = True
                    continue
                s.sock.settimeout(0)
                try:
                    if s.sock.recv(1) == b"":
                        closed[n] = True
                except BlockingIOError:
                    pass
                except (ConnectionResetError, OSError):
                    closed[n] = True
                s.sock.settimeout(30)
            # The ordinary client is answered all along.
            assert keep.call(S + "Validate", {"token": token})["state"] == "active"
            i += 1
            time.sleep(0.5)
        assert all(closed), "trickling connections held past the half-message timeout: %r" % closed
        assert i < len(payload), "the trickle ran out before the timeout"
        for s in slow:
            s.close()
        assert "half a message" in d.read_log()
        assert_served(keep)


def test_pipelining_peer_that_never_reads():
    n = 20000
    with Daemon() as d, d.connect() as keep:
        flood = d.connect(timeout=30)
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        names = ["io.sessiond.Session", "io.sessiond.Admin"]
        data = b"".join(msg("org.varlink.service.GetInterfaceDescription",
                            {"interface": names[k % 2]}) for k in range(n))
        sent = threading.Event()
        errors = []

        def send():
            try:
                flood.send_raw(data)
            except OSError as e:
                errors.append(e)
            sent.set()

        t = threading.Thread(target=send, daemon=True)
        t.start()
        # The daemon stops reading the flood once its output cap is full:
        # our sender blocks in the kernel's buffers, while others are served.
        blocked = not sent.wait(2)
        for _ in range(50):
            assert_served(keep)
        assert blocked, "%d pipelined calls with replies nobody reads were all taken in" % n
        # Once the peer reads, every reply comes, complete and in order.
        for k in range(n):
            r = flood.recv()
            assert r["parameters"]["description"].startswith("# "), r
            assert ("interface " + names[k % 2] + "\n") in r["parameters"]["description"], k
        t.join(30)
        assert not errors, errors
        flood.close()
        assert_served(keep)


def call_or_closed(d, payload):
    """Sends payload on a fresh connection: the reply, or 'closed'."""
    with d.connect() as c:
        try:
            c.send_raw(payload)
            raw = c.recv_raw()
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        return "closed" if raw is None else json.loads(raw)


def test_huge_json_under_the_size_limit():
    with Daemon() as d, d.connect() as keep:
        limit = 65536
        cases = {
            "long user_id": msg(S + "Create", {"user_id": "u" * 60000}),
            "long token": msg(S + "Validate", {"token": "t" * 60000}),
            "wide array as user_id": msg(S + "Create", {"user_id": [0] * 20000}),
            "many parameters": msg(S + "Create", dict({"user_id": "bob"}, **{"k%d" % k: k for k in range(4000)})),
            "many client fields": msg(S + "Create", {"user_id": "bob", "client": {"x%d" % k: "y" for k in range(4000)}}),
            "long sync data": msg(S + "Create", {"user_id": "bob", "sync_data": "s" * 60000}),
            "deep array in parameters": b'{"method": "io.sessiond.Session.Create", "parameters": {"user_id": '
                                        + b"[" * 30000 + b"]" * 30000 + b"}}\0",
            "deep objects": b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"\0",
            "long method name": msg("io.sessiond.Session." + "M" * 60000),
        }
        answers = {}
        for name, payload in cases.items():
            assert len(payload) <= limit + 1, (name, len(payload))
            answers[name] = call_or_closed(d, payload)
            assert_served(keep)  # after every one
            assert d.proc.poll() is None, "daemon died on " + name
        # Unknown parameters and client fields are ignored (Varlink lets
        # interfaces grow): those two are answered, for user bob.
        for name in ("many parameters", "many client fields"):
            assert answers[name]["parameters"]["session"]["user_id"] == "bob", (name, answers[name])
        for name, a in answers.items():
            if name.startswith("many"):
                continue
            # A clear error or a closed connection, never a session made of
            # garbage or a crash.
            assert a == "closed" or "error" in a, (name, a)
        assert answers["long user_id"]["error"] == S + "InvalidArgument", answers["long user_id"]
        assert answers["deep array in parameters"] == "closed", answers
        assert answers["deep objects"] == "closed", answers
        assert answers["long sync data"]["error"] == S + "TooLarge", answers
        # Nothing else was created by any of them.
        users = [x["user_id"] for x in keep.call(A + "ListSessions", {"include_ended": True})["sessions"]]
        assert users == ["bob", "bob"], users


def test_many_watchers_that_never_read():
    with Daemon({"sync.max_data_size": 4096}) as d, d.connect() as c, d.connect() as keep:
        token = c.call(S + "Create", {"user_id": "alice"})["token"]
        before = connections(keep)
        watchers = []
        for _ in range(5):
            w = d.connect()
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            watchers.append(w)
        wait_for(lambda: connections(keep) == before + 5, what="the watchers to be connected")
        data = "x" * 4000
        batch = b"".join(msg(S + "SetSyncState", {"token": token, "data": data}) for _ in range(100))
        # Each sync write is an event on every stream; nobody reads them.
        for _ in range(60):
            c.send_raw(batch)
            for _ in range(100):
                assert "error" not in c.recv()
            assert_served(keep)
            if d.read_log().count("does not read") >= 5:
                break
        assert d.read_log().count("does not read") >= 5, d.read_log()[-2000:]
        for w in watchers:
            assert w.is_closed(5)
            w.close()
        # The slots are given back; the session and the writer are fine.
        wait_for(lambda: connections(keep) == before, what="the watchers' slots to be freed")
        assert c.call(S + "GetSyncState", {"token": token})["version"] > 1
        assert_served(keep)


def test_connection_flood():
    with Daemon({"daemon.max_connections": 20}) as d:
        keep = served_connection(d)
        flood = []
        for _ in range(200):
            try:
                flood.append(d.connect())
            except OSError:
                break
        # The first 19 got slots (keep holds one), the rest are closed at once.
        refused = sum(1 for f in flood[19:] if f.is_closed(5))
        assert refused == len(flood) - 19, (refused, len(flood))
        assert_served(keep)
        for f in flood:
            f.close()
        # All slots usable again.
        again = [served_connection(d) for _ in range(19)]
        assert_served(keep)
        assert connections(keep) == 20
        for c in again:
            c.close()
        keep.close()
        assert "max_connections" in d.read_log()


run_tests([
    test_slowloris_trickle,
    test_pipelining_peer_that_never_reads,
    test_huge_json_under_the_size_limit,
    test_many_watchers_that_never_read,
    test_connection_flood,
])
