"""Big replies in pages (issue 15): ListSessions, ListUser and Audit with a
`cursor` answer one page at a time; a paged listing returns every session
that lives throughout exactly once (and none twice) while other clients
create and end sessions between the pages; sessionctl list and audit page
through transparently. Without a cursor the same three answer the whole
listing in one reply, as they always did, but build it a page per loop
iteration: the reply is the listing the pages give, and other clients are
answered while it is built.
"""

import json
import socket
import threading
import time

from harness import LONG_LIVED_SETTINGS, Daemon, VarlinkError, create_pipelined, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

SETTINGS = LONG_LIVED_SETTINGS


def create_many(d, users, n, chunk=500):
    """n sessions spread over users, pipelined; returns (token, id) pairs."""
    return [(p["token"], p["session"]["id"]) for p in create_pipelined(d, users, n, chunk)]


class Churn:
    """Creates sessions and destroys them again, for users, until stopped."""

    def __init__(self, d, users):
        self.d, self.users, self.stop, self.rounds = d, users, threading.Event(), 0
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        with self.d.connect() as c:
            while not self.stop.is_set():
                made = []
                for u in self.users:
                    made.append(c.call(S + "Create", {"user_id": u})["token"])
                for tok in made[::2]:
                    c.call(S + "Destroy", {"token": tok})
                self.rounds += 1

    def done(self):
        self.stop.set()
        self.t.join()
        return self.rounds


def page_through(c, method, params, key):
    seen, pages = [], 0
    params = dict(params, cursor="")
    while True:
        r = c.call(method, params)
        seen.extend(r[key])
        pages += 1
        if "cursor" not in r:
            return seen, pages
        params["cursor"] = r["cursor"]


def test_list_sessions_pages_exactly_once():
    with Daemon(SETTINGS) as d:
        stable = create_many(d, ["u%d" % i for i in range(10)], 3000)
        churn = Churn(d, ["u1", "u2", "churner"])
        try:
            with d.connect() as c:
                for include_ended in (False, True):
                    seen, pages = page_through(c, A + "ListSessions",
                                               {"limit": 100, "include_ended": include_ended}, "sessions")
                    ids = [s["id"] for s in seen]
                    assert len(ids) == len(set(ids)), "a session listed twice"
                    missing = {i for _, i in stable} - set(ids)
                    assert not missing, "%d stable sessions missing" % len(missing)
                    assert pages >= 30, pages
                    if not include_ended:
                        assert all(s["state"] in ("active", "grace") for s in seen)
                # One user's, with ended ones merged in.
                seen, _ = page_through(c, A + "ListSessions", {"user_id": "u1", "limit": 37,
                                                               "include_ended": True}, "sessions")
                ids = [s["id"] for s in seen]
                assert len(ids) == len(set(ids))
                assert {i for k, (_, i) in enumerate(stable) if k % 10 == 1} <= set(ids)
                assert all(s["user_id"] == "u1" for s in seen)
        finally:
            rounds = churn.done()
        assert rounds > 0
        d.stop()


def test_list_user_pages_exactly_once():
    with Daemon(SETTINGS) as d:
        stable = create_many(d, ["big"], 1600)
        churn = Churn(d, ["big"])
        try:
            with d.connect() as c:
                seen, pages = page_through(c, S + "ListUser", {"user_id": "big"}, "sessions")
        finally:
            churn.done()
        ids = [s["id"] for s in seen]
        assert len(ids) == len(set(ids))
        assert {i for _, i in stable} <= set(ids)
        assert pages >= 4, pages
        # Without a cursor: everything at once, as before.
        assert len(d.call(S + "ListUser", {"user_id": "big"})["sessions"]) >= 1600
        try:
            d.call(S + "ListUser", {"user_id": "big", "cursor": "x"})
            raise AssertionError("a bad cursor was accepted")
        except VarlinkError as e:
            assert e.parameters.get("field") == "cursor", e
        d.stop()


def test_audit_pages():
    with Daemon(SETTINGS) as d:
        create_many(d, ["a", "b"], 1300)
        with d.connect() as c:
            whole = c.call(A + "Audit", {"limit": 1200})["entries"]
            # Pages: the client asks for what it still wants.
            got, params = [], {"limit": 1200, "cursor": ""}
            while True:
                r = c.call(A + "Audit", params)
                got.extend(r["entries"])
                if "cursor" not in r:
                    break
                params = {"limit": 1200 - len(got), "cursor": r["cursor"]}
            assert [e["id"] for e in got] == [e["id"] for e in whole]
            assert len(got) == 1200
            # Filters and a short listing: one page, no cursor.
            r = c.call(A + "Audit", {"user_id": "a", "kind": "created", "limit": 10, "cursor": ""})
            assert len(r["entries"]) == 10 and "cursor" not in r
            assert all(e["user_id"] == "a" for e in r["entries"])
        d.stop()


def test_sessionctl_pages():
    with Daemon(SETTINGS) as d:
        stable = create_many(d, ["x", "y"], 1200)
        p = d.sessionctl("--no-legend", "list", "--limit", "1100", check=0)
        lines = p.stdout.splitlines()
        assert len(lines) == 1100, len(lines)
        assert len({l.split()[0] for l in lines}) == 1100
        p = d.sessionctl("list", "--limit", "5000", check=0)
        assert "1200 sessions listed." in p.stdout
        assert p.stdout.count("ID ") == 1  # one header for all pages
        p = d.sessionctl("--json", "list", "--limit", "5000", check=0)
        listed = json.loads(p.stdout)["sessions"]
        assert {s["id"] for s in listed} == {i for _, i in stable}
        p = d.sessionctl("--json", "audit", "--limit", "700", check=0)
        entries = json.loads(p.stdout)["entries"]
        assert len(entries) == 700
        assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
        p = d.sessionctl("audit", check=0)
        assert "100 entries listed." in p.stdout
        d.stop()


def test_unpaged_listings_are_the_pages():
    # Nothing changes meanwhile: a listing without a cursor (several pages'
    # worth) is exactly the paged walk, entry for entry, within its limit.
    with Daemon(SETTINGS) as d:
        made = create_many(d, ["s%d" % i for i in range(10)], 2500)
        big = [i for _, i in create_many(d, ["big"], 2600)]
        with d.connect(timeout=60) as c:
            for token, _ in made[:300]:
                c.call(S + "Destroy", {"token": token})
            for include_ended in (False, True):
                walk, pages = page_through(c, A + "ListSessions", {"limit": 200, "include_ended": include_ended},
                                           "sessions")
                assert pages > 10, pages
                whole = c.call(A + "ListSessions", {"limit": 100000, "include_ended": include_ended})["sessions"]
                assert whole == walk
                assert len(whole) == (5100 if include_ended else 4800), len(whole)
                first = c.call(A + "ListSessions", {"limit": 450, "include_ended": include_ended})["sessions"]
                assert first == walk[:450]
            walk, _ = page_through(c, A + "ListSessions", {"user_id": "s3", "include_ended": True}, "sessions")
            assert c.call(A + "ListSessions", {"user_id": "s3", "include_ended": True,
                                               "limit": 100000})["sessions"] == walk
            # more live sessions than a page examines: in row (creation) order
            walk, pages = page_through(c, S + "ListUser", {"user_id": "big"}, "sessions")
            assert pages > 1 and [x["id"] for x in walk] == big
            assert c.call(S + "ListUser", {"user_id": "big"})["sessions"] == walk
            assert c.call(S + "ListUser", {"user_id": "nobody"})["sessions"] == []
            for params in ({"limit": 5000}, {"limit": 3}, {"user_id": "s1", "kind": "ended", "limit": 10000},
                           {"since": 0, "limit": 1}, {"since": int(time.time()) - 3600, "limit": 4000}):
                whole = c.call(A + "Audit", params)["entries"]
                got, want = [], params["limit"]
                while True:
                    r = c.call(A + "Audit", dict(params, limit=want - len(got), cursor=r["cursor"] if got else ""))
                    got.extend(r["entries"])
                    if "cursor" not in r:
                        break
                assert whole == got, params
            assert len(c.call(A + "Audit", {"limit": 3})["entries"]) == 3
            assert len(c.call(A + "Audit", {"user_id": "s1", "kind": "ended", "limit": 10000})["entries"]) == 30
            # The contract's errors come as before, from the first page.
            err, params = c.call_error(S + "ListUser", {"user_id": ""})
            assert err == S + "InvalidArgument" and params["field"] == "user_id", (err, params)
        d.stop()


def test_unpaged_listing_serves_others():
    # 40,000 sessions in one ListSessions reply: 200 pages, one per loop
    # iteration. Another client's calls are answered while it is built,
    # and a peer that hangs up in the middle of one stops it (the daemon
    # goes on).
    with Daemon(SETTINGS) as d:
        create_many(d, ["u%d" % i for i in range(100)], 40000, chunk=2000)
        with d.connect(timeout=60) as c, d.connect() as v:
            c.send(A + "ListSessions", {"limit": 100000})
            v.call("org.varlink.service.GetInfo")
            c.sock.setblocking(False)
            try:
                early = c.sock.recv(1 << 20)
            except BlockingIOError:
                early = b""
            c.sock.setblocking(True)
            assert b"\0" not in early, "the listing was answered before a GetInfo sent after it"
            c.buf = early
            assert len(c.recv()["parameters"]["sessions"]) == 40000
        for _ in range(3):
            gone = d.connect()
            gone.send(A + "ListSessions", {"limit": 100000, "include_ended": True})
            gone.send(S + "ListUser", {"user_id": "u1"})
            gone.sock.shutdown(socket.SHUT_RDWR)
            gone.close()
        with d.connect() as v:
            assert v.call("org.varlink.service.GetInfo")["product"]
            assert len(v.call(S + "ListUser", {"user_id": "u7"})["sessions"]) == 400
        d.stop()


def test_big_reply_handed_over_whole():
    # A reply larger than the buffer a connection keeps becomes that
    # connection's output as it is (no copy): it counts once in the
    # daemon's output until the peer reads it, arrives whole and in order
    # with the replies queued behind it, and its memory goes when written.
    with Daemon(SETTINGS) as d:
        create_many(d, ["u%d" % i for i in range(20)], 6000, chunk=2000)
        with d.connect(timeout=60) as c, d.connect() as v:
            want = c.call(A + "ListSessions", {"limit": 100000})["sessions"]
            assert len(want) == 6000
            size = len(json.dumps({"parameters": {"sessions": want}}))
            assert size > 1 << 20, size
            for _ in range(2):
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.send(A + "ListSessions", {"limit": 100000})
                c.send("org.varlink.service.GetInfo")
                wait_for(lambda: v.call(A + "Status")["status"]["output_buffered"] > 0, what="the listing")
                buffered = v.call(A + "Status")["status"]["output_buffered"]
                assert buffered <= size + 4096, (buffered, size)
                assert c.recv()["parameters"]["sessions"] == want
                assert c.recv()["parameters"]["product"]
                wait_for(lambda: v.call(A + "Status")["status"]["output_buffered"] == 0, what="the output to go")
        d.stop()


if __name__ == "__main__":
    run_tests([test_list_sessions_pages_exactly_once, test_list_user_pages_exactly_once, test_audit_pages,
               test_sessionctl_pages, test_unpaged_listings_are_the_pages, test_unpaged_listing_serves_others,
               test_big_reply_handed_over_whole])
