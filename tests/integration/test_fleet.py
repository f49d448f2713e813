#!/usr/bin/env python3
"""Several daemons on one PostgreSQL store (DESIGN 8, issue 11).

Run under tests/pg/pg-server, which starts a throwaway PostgreSQL and sets
SESSIOND_TEST_POSTGRES_URL (and how to stop and start it again); without
it every test is skipped. Each test gets a database of its own. The
consistency bound is measured and printed, never asserted as a timing: a
test waits for the change with the harness's timeout and says how long it
took.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import (Daemon, Skip, VarlinkError, TIMEOUT, run_tests, wait_for)

URL = os.environ.get("SESSIOND_TEST_POSTGRES_URL")
_db_counter = [0]


def psql(url, sql):
    p = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def fresh_database():
    """A new empty database on the test server; its URL."""
    if not URL:
        raise Skip("no PostgreSQL (run under tests/pg/pg-server)")
    _db_counter[0] += 1
    name = "fleet_%d_%d" % (os.getpid(), _db_counter[0])
    psql(URL, "CREATE DATABASE %s" % name)
    base, _, query = URL.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def pg_ctl(action):
    """Stops or starts the test server (pg-server says how)."""
    data = os.environ.get("SESSIOND_TEST_PG_DATA")
    bindir = os.environ.get("SESSIOND_TEST_PG_BINDIR")
    user = os.environ.get("SESSIOND_TEST_PG_USER")
    if not data or not bindir:
        raise Skip("pg-server did not say how to stop and start PostgreSQL")
    cmd = [os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-l", os.path.join(os.path.dirname(data), "restart.log")]
    cmd += ["-m", "fast", "stop"] if action == "stop" else ["start"]
    if os.geteuid() == 0 and user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


class Fleet:
    """n daemons on one fresh database, sharing one key file."""

    def __init__(self, n=3, settings=None, url=None):
        self.url = url or fresh_database()
        self.tmp = tempfile.mkdtemp(prefix="sessiond-fleet-")
        self.key = os.path.join(self.tmp, "fleet.key")
        self.settings = {
            "features.distributed": True,
            "features.caching": True,
            "daemon.postgres_url": self.url,
            "daemon.key_file": self.key,
            "security.max_concurrent_per_user": 100,
        }
        self.settings.update(settings or {})
        self.daemons = []
        for _ in range(n):
            self.add()

    def add(self, settings=None):
        s = dict(self.settings)
        s.update(settings or {})
        d = Daemon(s)
        self.daemons.append(d)
        return d

    def __enter__(self):
        return self

    def __exit__(self, *a):
        for d in self.daemons:
            d.cleanup()


def timed_wait(predicate, what, timeout=TIMEOUT):
    start = time.monotonic()
    wait_for(predicate, timeout=timeout, what=what)
    took = (time.monotonic() - start) * 1000
    print("     %s: %.0f ms" % (what, took))
    return took


def validate_state(d, token):
    try:
        return d.call("io.sessiond.Session.Validate", {"token": token, "touch": False})["state"]
    except VarlinkError as e:
        return e.error


def test_created_on_one_valid_on_the_others():
    with Fleet(3) as f:
        a, b, c = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "alice"})["token"]
        # At once, before any notification: memory asks the store.
        assert validate_state(b, token) == "active"
        assert validate_state(c, token) == "active"
        b.call("io.sessiond.Session.Destroy", {"token": token})
        for d in (a, c):
            timed_wait(lambda d=d: validate_state(d, token) == "io.sessiond.Session.Expired",
                       "destroy on B refused on another daemon")
        # The reason is the store's.
        try:
            a.call("io.sessiond.Session.Validate", {"token": token})
            assert False
        except VarlinkError as e:
            assert e.parameters.get("reason") == "destroyed", e.parameters


def fleet_reads(d):
    """B's reads of other daemons' changes: (by the writer after a commit, on the loop)."""
    where = {m["labels"]["where"]: m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
             if m["name"] == "fleet_change_reads_total"}
    return where["after_commit"], where["loop"]


def test_changes_heard_are_read_off_the_loop():
    """The rows of changes heard from other daemons are read by the store's
    writer after a commit, not on the event loop: B's loop serves its
    clients while they are read."""
    with Fleet(2) as f:
        a, b = f.daemons
        tokens = [a.call("io.sessiond.Session.Create", {"user_id": "reads"})["token"] for _ in range(5)]
        for t in tokens:
            assert validate_state(b, t) == "active"
        before = fleet_reads(b)
        for t in tokens:
            a.call("io.sessiond.Session.Destroy", {"token": t})
        timed_wait(lambda: all(validate_state(b, t) == "io.sessiond.Session.Expired" for t in tokens),
                   "5 destroys on A refused on B")
        after = fleet_reads(b)
        assert after[0] - before[0] >= 5 and after[1] == before[1], (before, after)


def token_reads(d):
    return [m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
            if m["name"] == "fleet_token_reads_total"][0]


def test_tokens_memory_does_not_know_are_read_off_the_loop():
    """A token B's memory does not know (created on A and not yet
    announced, ended on A, or unknown) is read by B's store writer after a
    commit while the call waits, not on B's loop; so is every token without
    features.caching. The answers are those of a read on the loop."""
    with Fleet(2) as f:
        a, b = f.daemons
        before = token_reads(b)
        token = a.call("io.sessiond.Session.Create", {"user_id": "fetch"})["token"]
        assert validate_state(b, token) == "active"  # at once: not yet announced
        ended = a.call("io.sessiond.Session.Create", {"user_id": "fetch"})["token"]
        a.call("io.sessiond.Session.Destroy", {"token": ended})
        # B may have heard of the creation and read the row before the end
        # (it announces creations at once when its queue was empty): then
        # it learns the end within the consistency bound, not at once.
        timed_wait(lambda: validate_state(b, ended) == "io.sessiond.Session.Expired", "the end seen by B")
        assert validate_state(b, "A" * 43) == "io.sessiond.Session.NotFound"
        assert b.call("io.sessiond.Session.GetSyncState", {"token": token})["version"] == 0
        assert token_reads(b) - before >= 2, (before, token_reads(b))
        # Several calls waiting for reads at once, on one connection each.
        out = [None] * 8

        def call(i):
            out[i] = validate_state(b, token if i % 2 else "B" * 43)
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == ["io.sessiond.Session.NotFound", "active"] * 4, out
    with Fleet(1, settings={"features.caching": False}) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "strong"})["token"]
        before = token_reads(d)
        assert validate_state(d, token) == "active"
        d.call("io.sessiond.Session.Destroy", {"token": token})
        assert validate_state(d, token) == "io.sessiond.Session.Expired"
        assert token_reads(d) - before >= 3, (before, token_reads(d))


def test_rotation_and_terminate_seen_elsewhere():
    with Fleet(2) as f:
        a, b = f.daemons
        old = a.call("io.sessiond.Session.Create", {"user_id": "bob"})["token"]
        assert validate_state(b, old) == "active"
        new = a.call("io.sessiond.Session.Rotate", {"token": old})["token"]
        timed_wait(lambda: validate_state(b, old) == "io.sessiond.Session.Expired", "rotation seen on B")
        assert validate_state(b, new) == "active"
        sid = b.call("io.sessiond.Session.Validate", {"token": new})["session"]["id"]
        a.call("io.sessiond.Admin.Terminate", {"id": sid})
        timed_wait(lambda: validate_state(b, new) == "io.sessiond.Session.Expired", "terminate seen on B")


def test_watch_sees_a_sync_write_made_elsewhere():
    with Fleet(2) as f:
        a, b = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "carol"})["token"]
        with a.connect() as w:
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            first = w.recv()
            assert first.get("continues") is True, first
            version = b.call("io.sessiond.Session.SetSyncState", {"token": token, "data": "{\"cart\":3}"})["version"]
            start = time.monotonic()
            while True:
                ev = w.recv()
                assert "error" not in ev, ev
                if ev["parameters"].get("event") == "sync":
                    break
            print("     sync on B seen by a Watch on A: %.0f ms" % ((time.monotonic() - start) * 1000))
            assert ev["parameters"].get("version") == version, ev
        assert a.call("io.sessiond.Session.GetSyncState", {"token": token})["version"] == version


def test_sync_writes_race_across_daemons():
    """SetSyncState is a compare-and-set across the fleet: three daemons
    writing one session's state from the version they all read get exactly
    one success and two Conflicts, and writes without expected_version all
    land, each with a version of its own."""
    with Fleet(3) as f:
        token = f.daemons[0].call("io.sessiond.Session.Create", {"user_id": "sync-race"})["token"]
        for d in f.daemons[1:]:
            assert validate_state(d, token) == "active"

        def race(writes):
            """writes: (daemon, parameters) started together; the replies or errors."""
            barrier = threading.Barrier(len(writes))
            out = [None] * len(writes)

            def write(i, d, parameters):
                barrier.wait()
                try:
                    out[i] = d.call("io.sessiond.Session.SetSyncState", dict(parameters, token=token))
                except VarlinkError as e:
                    out[i] = e
            threads = [threading.Thread(target=write, args=(i, d, p)) for i, (d, p) in enumerate(writes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out

        watch = f.daemons[0].connect()
        watch.send("io.sessiond.Session.Watch", {"token": token}, more=True)
        assert watch.recv().get("continues") is True
        version = f.daemons[0].call("io.sessiond.Session.GetSyncState", {"token": token})["version"]
        for n in range(15):
            out = race([(d, {"data": "r%d-%d" % (n, i), "expected_version": version})
                        for i, d in enumerate(f.daemons)])
            won = [i for i, r in enumerate(out) if not isinstance(r, VarlinkError)]
            assert len(won) == 1, out
            assert out[won[0]]["version"] == version + 1, out
            for r in out:
                if isinstance(r, VarlinkError):
                    assert r.error == "io.sessiond.Session.Conflict", r
                    assert r.parameters["version"] >= version + 1, r.parameters
            state = f.daemons[n % 3].call("io.sessiond.Session.GetSyncState", {"token": token})
            assert state["version"] == version + 1, (state, out)
            assert state["data"] == "r%d-%d" % (n, won[0]), (state, out)
            version += 1

        out = race([(d, {"data": "free-%d" % i}) for i, d in enumerate(f.daemons)] * 3)
        for r in out:
            assert not isinstance(r, VarlinkError), out
        versions = sorted(r["version"] for r in out)
        assert versions == list(range(version + 1, version + 10)), versions
        state = f.daemons[1].call("io.sessiond.Session.GetSyncState", {"token": token})
        assert state["version"] == version + 9, state

        # The Watch on the first daemon heard each version once at most: a
        # write that lost its race is no change to tell (the others may be
        # heard together, as one event with the newest version).
        f.daemons[2].call("io.sessiond.Session.Destroy", {"token": token})
        seen = []
        while True:
            ev = watch.recv()
            assert "error" not in ev, ev
            if ev["parameters"]["event"] == "ended":
                break
            if ev["parameters"]["event"] == "sync":
                seen.append(ev["parameters"]["version"])
        watch.close()
        assert seen and len(seen) == len(set(seen)), seen
        assert seen == sorted(seen), seen


def test_sync_state_read_after_commit_on_one_daemon():
    """On PostgreSQL the sync state is read by the store's writer after a
    commit (GetSyncState, Watch, SetSyncState's version): the answers are
    those of SQLite's, own writes included."""
    with Fleet(1) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "sync-one"})["token"]
        assert d.call("io.sessiond.Session.GetSyncState", {"token": token}) == {"version": 0}
        assert d.call("io.sessiond.Session.SetSyncState",
                      {"token": token, "data": "a", "expected_version": 0}) == {"version": 1}
        assert d.call("io.sessiond.Session.GetSyncState", {"token": token}) == {"version": 1, "data": "a"}
        try:
            d.call("io.sessiond.Session.SetSyncState", {"token": token, "data": "b", "expected_version": 0})
            raise AssertionError("a stale expected_version was accepted")
        except VarlinkError as e:
            assert e.error == "io.sessiond.Session.Conflict" and e.parameters == {"version": 1}, e
        assert d.call("io.sessiond.Session.SetSyncState", {"token": token, "data": "c"}) == {"version": 2}
        with d.connect() as w:
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            first = w.recv()
            assert first["parameters"]["event"] == "state", first
            assert first["parameters"]["version"] == 2 and first["parameters"]["data"] == "c", first
            # Two writes on one connection, pipelined: each answered after its own commit.
            with d.connect() as c:
                c.send("io.sessiond.Session.SetSyncState", {"token": token, "data": "d", "expected_version": 2})
                c.send("io.sessiond.Session.SetSyncState", {"token": token, "data": "e", "expected_version": 3})
                assert c.recv()["parameters"] == {"version": 3}
                assert c.recv()["parameters"] == {"version": 4}
            seen = []
            while not seen or seen[-1] < 4:
                ev = w.recv()["parameters"]
                assert ev["event"] == "sync", ev
                seen.append(ev["version"])
            assert ev["data"] == "e", ev
            d.call("io.sessiond.Session.Destroy", {"token": token})
            ev = w.recv()
            assert ev["parameters"]["event"] == "ended" and "continues" not in ev, ev
        try:
            d.call("io.sessiond.Session.GetSyncState", {"token": token})
            raise AssertionError("the sync state of an ended session was read")
        except VarlinkError as e:
            assert e.error == "io.sessiond.Session.Expired", e


class RowLocks:
    """A psql session holding the row locks of a user's sessions (the
    units of work that write them wait)."""

    def __init__(self, url, user):
        self.p = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.p.stdin.write("BEGIN;\nSELECT 1 FROM sessions WHERE user_id = '%s' FOR UPDATE;\n" % user)
        self.p.stdin.flush()
        assert self.p.stdout.read(2) == "1\n"

    def release(self):
        self.p.stdin.write("COMMIT;\n")
        self.p.stdin.close()
        self.p.wait()


def call_in_background(out, name, d, method, parameters):
    def call():
        try:
            out[name] = d.call(method, parameters)
        except Exception as e:  # noqa: BLE001 (the test looks at what came back)
            out[name] = e
    t = threading.Thread(target=call)
    t.start()
    return t


def waiting_for_locks(url):
    return int(psql(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))


def test_destroy_and_validate_waiting_for_one_read():
    """A Destroy and a Validate of a token B's memory does not know both
    wait for its read after the same commit; the Destroy, run again first,
    ends it in B's open unit: the Validate must not bring the row it read
    before that end back into B's memory (found by review: it did)."""
    with Fleet(2) as f:
        a, b = f.daemons
        others = [b.call("io.sessiond.Session.Create", {"user_id": "k%d" % i})["token"] for i in (1, 2, 3)]
        out, threads = {}, []
        h1, h2 = RowLocks(f.url, "k1"), RowLocks(f.url, "k2")
        threads.append(call_in_background(out, "d1", b, "io.sessiond.Session.Destroy", {"token": others[0]}))
        wait_for(lambda: waiting_for_locks(f.url) >= 1, what="B's first unit waiting")
        token = a.call("io.sessiond.Session.Create", {"user_id": "victim"})["token"]
        threads.append(call_in_background(out, "d2", b, "io.sessiond.Session.Destroy", {"token": others[1]}))
        time.sleep(0.2)
        threads.append(call_in_background(out, "destroy", b, "io.sessiond.Session.Destroy", {"token": token}))
        time.sleep(0.2)
        threads.append(call_in_background(out, "validate", b, "io.sessiond.Session.Validate",
                                          {"token": token, "touch": False}))
        time.sleep(0.2)
        h1.release()
        wait_for(lambda: "d1" in out, what="B's first unit committed")
        wait_for(lambda: waiting_for_locks(f.url) >= 1, what="B's second unit waiting")
        threads.append(call_in_background(out, "d3", b, "io.sessiond.Session.Destroy", {"token": others[2]}))
        time.sleep(0.3)
        h2.release()
        for t in threads:
            t.join(TIMEOUT)
        assert out["destroy"] == {}, out
        assert psql(f.url, "SELECT end_reason FROM sessions WHERE user_id = 'victim'") == "destroyed"
        assert validate_state(b, token) == "io.sessiond.Session.Expired"
        assert validate_state(a, token) == "io.sessiond.Session.Expired"


def test_sync_write_then_rotate_on_one_daemon():
    """A SetSyncState whose version is still being read when a Rotate of
    the same token comes: either it is answered Expired (rotated) or its
    data is the rotated session's; never acknowledged and lost (found by
    review: it was written on the old, ended row)."""
    with Fleet(1) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "victim"})["token"]
        out = {}
        locks, threads = unit_held(f, d, out)
        threads.append(call_in_background(out, "set", d, "io.sessiond.Session.SetSyncState",
                                          {"token": token, "data": "NEW"}))
        time.sleep(0.2)
        threads.append(call_in_background(out, "rotate", d, "io.sessiond.Session.Rotate", {"token": token}))
        time.sleep(0.2)
        locks.release()
        for t in threads:
            t.join(TIMEOUT)
        state = d.call("io.sessiond.Session.GetSyncState", {"token": out["rotate"]["token"]})
        if isinstance(out["set"], VarlinkError):
            assert out["set"].error == "io.sessiond.Session.Expired", out
            assert out["set"].parameters == {"reason": "rotated"}, out
        else:
            assert state.get("data") == "NEW", ("acknowledged write lost", out, state)
        assert psql(f.url, "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL AND sync_data IS NOT NULL "
                           "AND sync_version > 0 AND user_id = 'victim'") == "0"


def test_watch_then_rotate_while_first_reply_pending():
    """A Watch whose first reply waits for its sync read, and a Rotate of
    the same token on the same daemon before that read is answered: the
    stream ends with "rotated" (as on one daemon), not "ended" (found by a
    second review)."""
    with Fleet(1) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "victim"})["token"]
        out = {}
        locks, threads = unit_held(f, d, out)
        with d.connect() as w:
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            time.sleep(0.2)
            threads.append(call_in_background(out, "rotate", d, "io.sessiond.Session.Rotate", {"token": token}))
            time.sleep(0.3)
            locks.release()
            for t in threads:
                t.join(TIMEOUT)
            evs = []
            while True:
                ev = w.recv()
                evs.append(ev)
                if not ev.get("continues"):
                    break
            assert "token" in out["rotate"], out
            assert evs[-1]["parameters"]["event"] == "rotated", evs


def sync_reads(d):
    """d's reads of sync states in the store: (by the writer after a commit, on the loop)."""
    where = {m["labels"]["where"]: m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
             if m["name"] == "sync_state_reads_total"}
    return where["after_commit"], where["loop"]


def test_sync_writes_outrun_or_ended_read_off_the_loop():
    """A SetSyncState learns what its write found (the version, whether the
    session still lives and its end reason) from reads by the store's
    writer after a commit, never on the loop: the first read, and the read
    again after its unit committed without applying it. Writes without
    expected_version on two daemons, each daemon's unit held back by row
    locks so that its writes all compare the same version (all but one
    outrun), all land, each with a version of its own; a write whose
    session another daemon destroyed while it waited gets Expired
    (destroyed)."""
    with Fleet(2) as f:
        daemons = f.daemons
        token = daemons[0].call("io.sessiond.Session.Create", {"user_id": "sync-outrun"})["token"]
        assert validate_state(daemons[1], token) == "active"
        blockers = [d.call("io.sessiond.Session.Create", {"user_id": "blocker%d" % i})["token"]
                    for i, d in enumerate(daemons)]
        before = [sync_reads(d) for d in daemons]
        k = 4
        locks = [RowLocks(f.url, "blocker%d" % i) for i in range(2)]
        out, threads = {}, []
        for i, d in enumerate(daemons):
            threads.append(call_in_background(out, "blocker%d" % i, d, "io.sessiond.Session.Destroy",
                                              {"token": blockers[i]}))
        wait_for(lambda: waiting_for_locks(f.url) >= 2, what="both daemons' units waiting")
        for i, d in enumerate(daemons):
            for j in range(k):
                threads.append(call_in_background(out, (i, j), d, "io.sessiond.Session.SetSyncState",
                                                  {"token": token, "data": "w%d-%d" % (i, j)}))
        time.sleep(0.3)  # the writes have come: their versions are read after the held unit
        for lock in locks:
            lock.release()
        for t in threads:
            t.join(TIMEOUT)
        writes = [out[(i, j)] for i in range(2) for j in range(k)]
        for w in writes:
            assert isinstance(w, dict) and "version" in w, out
        versions = sorted(w["version"] for w in writes)
        assert versions == list(range(1, 2 * k + 1)), versions
        after = [sync_reads(d) for d in daemons]
        reads = sum(x[0] - y[0] for x, y in zip(after, before))
        print("     %d writes, %d sync state reads after a commit" % (2 * k, reads))
        assert reads > 2 * k, (before, after)  # some were read again, having been outrun
        assert [x[1] for x in after] == [y[1] for y in before], (before, after)  # none on the loop
        state = daemons[1].call("io.sessiond.Session.GetSyncState", {"token": token})
        assert state["version"] == 2 * k, state

        # B's write waits for its version while A destroys the session.
        a, b = daemons
        before_b = sync_reads(b)
        other = b.call("io.sessiond.Session.Create", {"user_id": "blocker9"})["token"]
        lock = RowLocks(f.url, "blocker9")
        out, threads = {}, []
        threads.append(call_in_background(out, "blocker", b, "io.sessiond.Session.Destroy", {"token": other}))
        wait_for(lambda: waiting_for_locks(f.url) >= 1, what="B's unit waiting")
        threads.append(call_in_background(out, "set", b, "io.sessiond.Session.SetSyncState",
                                          {"token": token, "data": "late"}))
        time.sleep(0.3)  # the write has come: its version is read after the held unit
        a.call("io.sessiond.Session.Destroy", {"token": token})
        lock.release()
        for t in threads:
            t.join(TIMEOUT)
        assert isinstance(out["set"], VarlinkError), out
        assert out["set"].error == "io.sessiond.Session.Expired", out
        assert out["set"].parameters == {"reason": "destroyed"}, out
        after_b = sync_reads(b)
        assert after_b[0] > before_b[0] and after_b[1] == before_b[1], (before_b, after_b)
        assert psql(f.url, "SELECT sync_version FROM sessions WHERE user_id = 'sync-outrun'") == str(2 * k)


def test_sync_write_answered_at_stop():
    """A SetSyncState waiting for its unit of work when SIGTERM comes is
    answered once the unit commits, like any other write in flight (a
    stream is what a stop cancels), and so is a Destroy whose reply is held
    for that commit. Their unit is held back by row locks taken in another
    transaction."""
    with Fleet(1) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "stop-sync"})["token"]
        other = d.call("io.sessiond.Session.Create", {"user_id": "stop-sync"})["token"]
        holder = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", f.url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            holder.stdin.write("BEGIN;\nSELECT 1 FROM sessions FOR UPDATE;\n")
            holder.stdin.flush()
            assert holder.stdout.read(4) == "1\n1\n"
            out = {}

            def write(name, method, parameters):
                try:
                    out[name] = d.call(method, parameters)
                except Exception as e:  # a closed connection is the failure looked for
                    out[name] = e
            threads = [threading.Thread(target=write, args=a) for a in (
                ("sync", "io.sessiond.Session.SetSyncState", {"token": token, "data": "kept"}),
                ("destroy", "io.sessiond.Session.Destroy", {"token": other}))]
            for t in threads:
                t.start()
            wait_for(lambda: int(psql(f.url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                             "'Lock' AND query LIKE 'UPDATE sessions%'")) >= 1,
                     what="the writes waiting for the row locks")
            d.signal(signal.SIGTERM)
            time.sleep(0.3)  # the stop has begun: nothing is answered before its commit
            assert out == {}, out
            holder.stdin.write("COMMIT;\n")
            holder.stdin.close()
            for t in threads:
                t.join(TIMEOUT)
            assert out == {"sync": {"version": 1}, "destroy": {}}, out
            d.wait_stopped()
        finally:
            holder.kill()
            holder.wait()
        assert psql(f.url, "SELECT sync_version || ' ' || convert_from(sync_data, 'UTF8') FROM sessions "
                           "WHERE ended_at IS NULL") == "1 kept"
        assert psql(f.url, "SELECT count(*) FROM sessions WHERE end_reason = 'destroyed'") == "1"


def test_user_limit_holds_across_daemons():
    with Fleet(3, {"security.max_concurrent_per_user": 3}) as f:
        errors = []

        def create(d, n):
            try:
                for _ in range(n):
                    d.call("io.sessiond.Session.Create", {"user_id": "dave"})
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = []
        for i, n in enumerate((7, 7, 6)):
            for _ in range(n):
                threads.append(threading.Thread(target=create, args=(f.daemons[i], 1)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        live = psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = 'dave' AND ended_at IS NULL")
        assert live == "3", live
        ended = psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = 'dave' AND end_reason = 'evicted'")
        assert ended == "17", ended
        # Every daemon's memory comes to the same three.
        for d in f.daemons:
            timed_wait(lambda d=d: len(d.call("io.sessiond.Session.ListUser", {"user_id": "dave"})["sessions"]) == 3,
                       "the limit's ends seen by every daemon")


def test_platform_switch_limit_holds_across_daemons():
    """Switches of one session made at once on three daemons count each
    other: the store decides each under the row's lock."""
    with Fleet(3, {"security.max_platform_switches_per_hour": 3}) as f:
        a, b, c = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "pat", "platform_id": "start"})["token"]
        for d in (b, c):
            assert validate_state(d, token) == "active"
        made, refused, errors = [], [], []

        def switch(d, platform):
            try:
                r = d.call("io.sessiond.Session.SwitchPlatform", {"token": token, "platform_id": platform})
                assert r["session"]["platform_id"] == platform, r
                made.append(platform)
            except VarlinkError as e:
                if e.error == "io.sessiond.Session.RateLimited":
                    assert e.parameters.get("retry_after", 0) >= 1, e.parameters
                    refused.append(platform)
                else:
                    errors.append(e)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=switch, args=(f.daemons[i % 3], "p%d" % i)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(made) == 3 and len(refused) == 21, (made, refused)
        history = json.loads(psql(f.url, "SELECT platform_switches FROM sessions WHERE ended_at IS NULL"))
        assert len(history) == 3, history
        audited = psql(f.url, "SELECT count(*) FROM audit WHERE kind = 'platform_switched'")
        assert audited == "3", audited
        stored = psql(f.url, "SELECT platform_id FROM sessions WHERE ended_at IS NULL")
        assert stored in made, (stored, made)
        # Every daemon's memory comes to the platform stored, and refuses
        # a fourth switch.
        for d in f.daemons:
            timed_wait(lambda d=d: d.call("io.sessiond.Session.Validate",
                                          {"token": token, "touch": False})["session"].get("platform_id") == stored,
                       "the platform stored known by every daemon")
            try:
                d.call("io.sessiond.Session.SwitchPlatform", {"token": token, "platform_id": "late"})
                assert False, "a fourth switch was made"
            except VarlinkError as e:
                assert e.error == "io.sessiond.Session.RateLimited", e
        # Switching to the platform it is on is no switch.
        r = b.call("io.sessiond.Session.SwitchPlatform", {"token": token, "platform_id": stored})
        assert r["session"]["platform_id"] == stored


def test_platform_switch_of_a_session_ended_elsewhere():
    """A switch the store finds ended (here behind the daemons' backs, so
    that no notification comes) answers Expired with the store's reason,
    makes no audit row, and memory learns the end."""
    with Fleet(2) as f:
        a, b = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "pia"})["token"]
        assert validate_state(b, token) == "active"
        psql(f.url, "UPDATE sessions SET ended_at = last_activity, end_reason = 'terminated'")
        try:
            b.call("io.sessiond.Session.SwitchPlatform", {"token": token, "platform_id": "ios"})
            assert False, "switched an ended session"
        except VarlinkError as e:
            assert e.error == "io.sessiond.Session.Expired", e
            assert e.parameters.get("reason") == "terminated", e.parameters
        assert psql(f.url, "SELECT count(*) FROM audit WHERE kind = 'platform_switched'") == "0"
        assert psql(f.url, "SELECT platform_id IS NULL FROM sessions") == "t"
        timed_wait(lambda: validate_state(b, token) == "io.sessiond.Session.Expired", "memory learns the end")


def unit_held(f, d, out, user="blocker"):
    """A Destroy on d of a session of user, its unit held by that row's
    lock (taken in another transaction): what d asks meanwhile goes in the
    unit behind it. The locks (release() lets the units go) and the
    threads, the Destroy's answer in out["destroy"]."""
    token = d.call("io.sessiond.Session.Create", {"user_id": user})["token"]
    locks = RowLocks(f.url, user)
    threads = [call_in_background(out, "destroy", d, "io.sessiond.Session.Destroy", {"token": token})]
    wait_for(lambda: waiting_for_locks(f.url) >= 1, what="a unit waiting")
    return locks, threads


def switch_held(f, d, user, out, name="to_b"):
    """A session of user on platform A, and a switch of it to B held by its
    row's lock (the switch's unit waits): the token, the locks, the call's thread."""
    token = d.call("io.sessiond.Session.Create", {"user_id": user, "platform_id": "A"})["token"]
    locks = RowLocks(f.url, user)
    t = call_in_background(out, name, d, "io.sessiond.Session.SwitchPlatform", {"token": token, "platform_id": "B"})
    wait_for(lambda: waiting_for_locks(f.url) >= 1, what="the switch waiting for the row lock")
    return token, locks, t


def test_switches_waiting_together_are_decided_by_the_store():
    """A switch waits for its unit (held by a row lock); meanwhile memory
    still says the old platform, so a switch back to it and a second
    switch to the new one are the store's to decide too: with a limit of
    one, the first is refused and the second is no switch (not counted,
    not audited)."""
    with Fleet(1, {"security.max_platform_switches_per_hour": 1}) as f:
        d, = f.daemons
        out = {}
        token, locks, t = switch_held(f, d, "uma", out)
        threads = [t]
        threads.append(call_in_background(out, "back_to_a", d, "io.sessiond.Session.SwitchPlatform",
                                          {"token": token, "platform_id": "A"}))
        threads.append(call_in_background(out, "to_b_again", d, "io.sessiond.Session.SwitchPlatform",
                                          {"token": token, "platform_id": "B"}))
        time.sleep(0.3)  # both asked, behind the first
        assert "back_to_a" not in out, out  # not answered from memory
        locks.release()
        for t in threads:
            t.join()
        assert out["to_b"]["session"]["platform_id"] == "B", out
        assert isinstance(out["back_to_a"], VarlinkError), out
        assert out["back_to_a"].error == "io.sessiond.Session.RateLimited", out
        assert out["to_b_again"]["session"]["platform_id"] == "B", out
        assert len(json.loads(psql(f.url, "SELECT platform_switches FROM sessions"))) == 1
        assert psql(f.url, "SELECT count(*) FROM audit WHERE kind = 'platform_switched'") == "1"


def test_rotation_while_a_switch_waits():
    """A Rotate made while a switch waits for its unit copies the row the
    switch changes: memory learns the new row's platform from the store."""
    with Fleet(1) as f:
        d, = f.daemons
        out = {}
        token, locks, t1 = switch_held(f, d, "una", out, "switch")
        t2 = call_in_background(out, "rotate", d, "io.sessiond.Session.Rotate", {"token": token})
        time.sleep(0.3)  # the rotation asked, behind the switch
        locks.release()
        t1.join()
        t2.join()
        assert out["switch"]["session"]["platform_id"] == "B", out
        new = out["rotate"]["token"]
        assert psql(f.url, "SELECT platform_id FROM sessions WHERE ended_at IS NULL") == "B"
        timed_wait(lambda: d.call("io.sessiond.Session.Validate", {"token": new, "touch": False})
                   ["session"].get("platform_id") == "B", "memory learns the rotated row's platform")


def test_switch_answered_at_stop():
    """A switch waiting for its unit when SIGTERM comes is answered."""
    with Fleet(1) as f:
        d, = f.daemons
        out = {}
        _, locks, t = switch_held(f, d, "ute", out, "switch")
        d.signal(signal.SIGTERM)
        time.sleep(0.3)  # the daemon stopping, the switch still held
        locks.release()
        t.join()
        assert not isinstance(out["switch"], Exception), out
        assert out["switch"]["session"]["platform_id"] == "B", out
        d.wait_stopped()


def test_cleanup_under_slow_steady_writes():
    """Commits slowed down (a trigger makes each write of one session take
    1.3 s) while that session is written again and again: the leader's
    cleanup still ends the idle sessions, each on the one read of its row
    after a commit. (The review's reproducer, with two writers and random
    pauses, showed the build before the fix asking again and again; this
    test's steady pattern does not catch that build every time.)"""
    settings = {"timeout.idle_timeout": 2, "cleanup.interval": 1, "timeout.expiration_grace": 1,
                "timeout.cleanup_grace": 1, "timeout.warning_threshold": 1}
    with Fleet(1, settings) as f:
        d, = f.daemons
        busy = d.call("io.sessiond.Session.Create", {"user_id": "busy"})["token"]
        for _ in range(3):
            d.call("io.sessiond.Session.Create", {"user_id": "idle"})
        psql(f.url, "CREATE FUNCTION slowdown() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN PERFORM pg_sleep(1.3); RETURN NEW; END $$")
        psql(f.url, "CREATE TRIGGER slowdown BEFORE UPDATE ON sessions FOR EACH ROW "
                    "WHEN (OLD.user_id = 'busy') EXECUTE FUNCTION slowdown()")
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                d.call("io.sessiond.Session.Extend", {"token": busy})
                stop.wait(0.3)  # a step of the cleanup waits for a moment without a unit in flight

        threads = [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        try:
            timed_wait(lambda: psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = 'idle' "
                                           "AND ended_at IS NOT NULL") == "3",
                       "the idle sessions ended under slow commits", timeout=90)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        metrics = d.call("io.sessiond.Admin.Metrics")["metrics"]
        reads = {m["labels"]["where"]: m["value"] for m in metrics if m["name"] == "fleet_cleanup_reads_total"}
        assert reads == {"after_commit": 3, "loop": 0}, reads


def test_key_mismatch_refused():
    with Fleet(1) as f:
        other = os.path.join(f.tmp, "other.key")
        d = Daemon(dict(f.settings, **{"daemon.key_file": other}), wait=False)
        try:
            rc = d.proc.wait(timeout=TIMEOUT)
            assert rc != 0
            log = d.read_log()
            assert "key" in log and "does not match" in log, log
        finally:
            d.cleanup()


def test_sessionctl_db_and_backup_point_to_postgresql():
    with Fleet(1) as f:
        d = f.daemons[0]
        p = d.sessionctl("backup", os.path.join(f.tmp, "copy.db"), check=1)
        assert "pg_dump" in p.stderr and not os.path.exists(os.path.join(f.tmp, "copy.db")), p.stderr
        p = d.sessionctl("db", "check", check=None)
        assert p.returncode != 0 and "PostgreSQL" in p.stderr, (p.returncode, p.stderr)


def test_password_never_shown():
    url = fresh_database()
    secret_url = url + ("&" if "?" in url else "?") + "password=hunter2secret"
    with Fleet(1, url=secret_url) as f:
        d = f.daemons[0]
        status = d.call("io.sessiond.Admin.Status")["status"]
        config = d.call("io.sessiond.Admin.GetConfig")["config"]
        text = json.dumps(status) + json.dumps(config) + d.read_log()
        assert "hunter2secret" not in text, text


def test_leader_runs_the_jobs_and_hands_them_over():
    settings = {"features.clustering": True, "timeout.idle_timeout": 2, "cleanup.interval": 1,
                "timeout.expiration_grace": 1, "timeout.cleanup_grace": 1, "timeout.warning_threshold": 1}
    with Fleet(3, settings) as f:
        def leaders():
            return [d for d in f.daemons if d.proc.poll() is None
                    and d.call("io.sessiond.Admin.Status")["status"]["fleet"]["leader"]]
        wait_for(lambda: len(leaders()) == 1, what="one leader")
        leader = leaders()[0]
        # The daemons seen are read once a tick, off the loop (LEADER_TICK_MS).
        timed_wait(lambda: len(leader.call("io.sessiond.Admin.Status")["status"]["fleet"]["daemons"]) == 3,
                   "the leader's Status shows the three daemons")
        fleet = leader.call("io.sessiond.Admin.Status")["status"]["fleet"]
        assert fleet["leader_id"] == fleet["daemon_id"], fleet
        out = leader.sessionctl("status", check=0).stdout
        assert "leader_id" in out and fleet["daemon_id"] in out, out
        leader.kill()
        timed_wait(lambda: len(leaders()) == 1, "another daemon leads after kill -9 of the leader")
        new_leader = leaders()[0]
        # The new leader's cleanup ends a session that went idle.
        token = new_leader.call("io.sessiond.Session.Create", {"user_id": "erin"})["token"]
        timed_wait(lambda: psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = 'erin' AND "
                                        "end_reason = 'idle'") == "1", "the new leader's cleanup ended it")
        assert validate_state(new_leader, token) == "io.sessiond.Session.Expired"


def test_touches_on_one_daemon_keep_the_session_alive_on_another():
    with Fleet(2, {"timeout.idle_timeout": 3, "timeout.expiration_grace": 1, "timeout.warning_threshold": 1}) as f:
        a, b = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "frank"})["token"]
        deadline = time.monotonic() + 6  # twice the idle timeout, touched on B only
        while time.monotonic() < deadline:
            b.call("io.sessiond.Session.Heartbeat", {"token": token})
            time.sleep(0.5)
        # A's memory last saw it at creation; the store says it is active
        # (read by A's store writer after a commit, not on A's loop).
        before = token_reads(a)
        assert validate_state(a, token) == "active"
        assert token_reads(a) == before + 1


def test_kill9_under_load_loses_nothing_acknowledged():
    # One user creates throughout: the limit is raised so that no session is
    # evicted whatever the load lets through before the kill (this test is
    # about durability, not the limit).
    with Fleet(2, {"security.max_concurrent_per_user": 100000}) as f:
        a, b = f.daemons
        acked = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    acked.append(b.call("io.sessiond.Session.Create", {"user_id": "gina"})["token"])
                except (OSError, VarlinkError):
                    return

        t = threading.Thread(target=load)
        t.start()
        wait_for(lambda: len(acked) > 50, what="load on B")
        b.kill()
        stop.set()
        t.join()
        for token in acked:
            state = validate_state(a, token)
            assert state == "active", (token, state, len(acked))


def listed_ids(d, user):
    return {s["id"] for s in d.call("io.sessiond.Session.ListUser", {"user_id": user})["sessions"]}


def test_creations_become_known_to_the_others_memory():
    """Creations are announced after their commit, coalesced (not in the
    creating transaction): the other daemons' memory (listings, Watch, the
    leader's cleanup) learns of them within PG_ANNOUNCE_MS plus a commit."""
    with Fleet(2) as f:
        a, b = f.daemons
        start = time.monotonic()
        ids = {a.call("io.sessiond.Session.Create", {"user_id": "ivy"})["session"]["id"] for _ in range(20)}
        timed_wait(lambda: listed_ids(b, "ivy") == ids, "20 creations on A listed by B")
        print("     (from the first Create: %.0f ms)" % ((time.monotonic() - start) * 1000))
        # Ended before the creation was announced or after: B reads the row, either way it is gone.
        tok = a.call("io.sessiond.Session.Create", {"user_id": "ivy"})["token"]
        a.call("io.sessiond.Session.Destroy", {"token": tok})
        time.sleep(0.2)
        assert listed_ids(b, "ivy") == ids


def test_creations_of_a_daemon_killed_are_learnt():
    """A daemon killed with creations committed but not yet announced: the
    others notice its connections gone (their liveness check, every second)
    and read the live sessions again, so every acknowledged creation is in
    their memory within a bound (printed)."""
    with Fleet(2) as f:
        a, b = f.daemons
        acked = []
        stop = threading.Event()

        def load():
            while not stop.is_set() and len(acked) < 90:  # under the user limit (100)
                try:
                    acked.append(a.call("io.sessiond.Session.Create", {"user_id": "jill"})["session"]["id"])
                except (OSError, VarlinkError):
                    return

        t = threading.Thread(target=load)
        t.start()
        wait_for(lambda: len(acked) > 30, what="load on A")
        a.kill()
        killed = time.monotonic()
        stop.set()
        t.join()
        try:
            wait_for(lambda: set(acked) <= listed_ids(b, "jill"), what="every acknowledged creation listed by B")
        except AssertionError:
            raise AssertionError("B misses %s of %d\n%s" % (sorted(set(acked) - listed_ids(b, "jill")), len(acked),
                                                             b.read_log()[-3000:]))
        print("     creations of a killed daemon listed elsewhere, %.0f ms after the kill" %
              ((time.monotonic() - killed) * 1000))
        # The catch-up ran (whether or not this kill left any creation unannounced).
        wait_for(lambda: "without saying goodbye" in b.read_log(), what="B noticed A gone")
        print("     B noticed the killed daemon gone (catch-up), %.0f ms after the kill" %
              ((time.monotonic() - killed) * 1000))


def test_a_daemon_stopped_cleanly_costs_the_others_no_catch_up():
    with Fleet(2) as f:
        a, b = f.daemons
        a.call("io.sessiond.Session.Create", {"user_id": "kim"})
        time.sleep(1.5)  # B's liveness check has seen A
        a.stop()
        time.sleep(2.5)
        assert "without saying goodbye" not in b.read_log(), b.read_log()


def test_destroy_user_of_many_seen_elsewhere():
    """A DestroyUser of many sessions on A: B reads the ended rows a
    notification at a time (one statement for up to a thousand rows), not
    one by one. Prints how long B's memory took to let go of them all."""
    n = int(os.environ.get("FLEET_DESTROY_USER_SESSIONS", "3000"))
    with Fleet(2, settings={"security.max_concurrent_per_user": 100000}) as f:
        a, b = f.daemons

        def create(k):
            for _ in range(k):
                a.call("io.sessiond.Session.Create", {"user_id": "lou"})

        threads = [threading.Thread(target=create, args=(n // 10,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        timed_wait(lambda: len(listed_ids(b, "lou")) == n // 10 * 10, "%d creations on A listed by B" % n)
        commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        time.sleep(1.5)  # statistics reach pg_stat_database within a second of a transaction
        before = int(psql(f.url, commits))
        start = time.monotonic()
        assert a.call("io.sessiond.Session.DestroyUser", {"user_id": "lou"})["count"] == n // 10 * 10
        wait_for(lambda: not listed_ids(b, "lou"), what="B let go of them")
        took = (time.monotonic() - start) * 1000
        time.sleep(1.5)
        # B's reads of the ended rows are transactions of their own: one per notification, not per row.
        print("     DestroyUser of %d on A, all gone from B's memory: %.0f ms, %d transactions on the database" % (
            n // 10 * 10, took, int(psql(f.url, commits)) - before))


def test_postgres_restart_under_load():
    with Fleet(1) as f:
        d = f.daemons[0]
        acked, failures = [], []
        token = d.call("io.sessiond.Session.Create", {"user_id": "hank"})["token"]
        acked.append(token)
        pg_ctl("stop")
        try:
            for _ in range(5):
                try:
                    acked.append(d.call("io.sessiond.Session.Create", {"user_id": "hank"})["token"])
                except VarlinkError as e:
                    failures.append(e.error)
            assert failures and set(failures) == {"io.sessiond.Session.StorageError"}, failures
            health = d.call("io.sessiond.Admin.Health")
            assert health["status"] != "healthy", health
        finally:
            pg_ctl("start")
        # It reconnects by itself and writes again.
        timed_wait(lambda: _creates(d), "writes again after PostgreSQL came back")
        # Validations of cached sessions fail closed (StorageError) once the
        # store has been down for the grace (5 s, a slow stop and start can
        # take that long) until the next probe (every 2 s) sees it back.
        timed_wait(lambda: validate_state(d, acked[0]) != "io.sessiond.Session.StorageError",
                   "validations again after PostgreSQL came back")
        for i, t in enumerate(acked):
            state = validate_state(d, t)
            assert state == "active", (i, t, state)
        assert d.proc.poll() is None


def test_cached_validations_fail_closed_while_postgresql_is_down():
    with Fleet(1) as f:
        d = f.daemons[0]
        token = d.call("io.sessiond.Session.Create", {"user_id": "iris"})["token"]
        pg_ctl("stop")
        try:
            # Cached: honoured at first, without the store...
            assert validate_state(d, token) == "active"
            # ...then refused once the store has been out of reach for the
            # documented bound (5 s, noticed by the 2 s probe).
            timed_wait(lambda: validate_state(d, token) == "io.sessiond.Session.StorageError",
                       "cached validations fail closed", timeout=3 * TIMEOUT)
        finally:
            pg_ctl("start")
        timed_wait(lambda: validate_state(d, token) == "active", "validations again after PostgreSQL came back",
                   timeout=3 * TIMEOUT)


def _creates(d):
    try:
        d.call("io.sessiond.Session.Create", {"user_id": "hank"})
        return True
    except VarlinkError:
        return False


def cleanup_reads(d):
    """D's cleanup candidates read again: (by the writer after a commit, on the loop)."""
    where = {m["labels"]["where"]: m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
             if m["name"] == "fleet_cleanup_reads_total"}
    return where["after_commit"], where["loop"]


def test_leader_cleanup_reads_candidates_after_a_commit():
    """The leader's cleanup does not end a session on what its memory
    says (another daemon may have touched it: touches are not reported)
    and does not read PostgreSQL on its loop to learn it: each candidate's
    row is read by the store's writer after a commit, and the next step
    ends the sessions that, as read, expired everywhere. A session touched
    on the other daemon all along is not ended, until it is left alone."""
    settings = {"features.clustering": True, "timeout.idle_timeout": 4, "cleanup.interval": 1,
                "timeout.expiration_grace": 1, "timeout.cleanup_grace": 1, "timeout.warning_threshold": 1}
    with Fleet(2, settings) as f:
        def leaders():
            return [d for d in f.daemons if d.call("io.sessiond.Admin.Status")["status"]["fleet"]["leader"]]
        wait_for(lambda: len(leaders()) == 1, what="one leader")
        leader = leaders()[0]
        other = [d for d in f.daemons if d is not leader][0]
        reads_before, changes_before = cleanup_reads(leader), fleet_reads(leader)
        kept = leader.call("io.sessiond.Session.Create", {"user_id": "kept"})["token"]
        for _ in range(5):
            leader.call("io.sessiond.Session.Create", {"user_id": "gone"})
        assert validate_state(other, kept) == "active"

        def ended(user):
            return int(psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = '%s' AND "
                                   "end_reason = 'idle'" % user))

        def touch_until(predicate, what):
            # Touched on the other daemon only: the leader's memory never
            # hears of it, the store does (the other daemon's touch flush).
            def touched():
                other.call("io.sessiond.Session.Heartbeat", {"token": kept})
                return predicate()
            wait_for(touched, what=what, interval=0.3)

        touch_until(lambda: ended("gone") == 5, "the leader's cleanup ended the 5 idle sessions")
        # The kept session was a candidate in the leader's memory too, read
        # with the others; wait until it has been read again at least once.
        after = cleanup_reads(leader)
        assert after[0] - reads_before[0] >= 6, (reads_before, after)
        touch_until(lambda: cleanup_reads(leader)[0] > after[0], "the kept session read again by the cleanup")
        assert ended("kept") == 0
        assert validate_state(other, kept) == "active"
        # Left alone, it expires everywhere and the cleanup ends it.
        timed_wait(lambda: ended("kept") == 1, "the kept session ended once left alone")
        assert validate_state(leader, kept) == "io.sessiond.Session.Expired"
        # Every read was the writer's: none on the leader's loop.
        assert cleanup_reads(leader)[1] == reads_before[1], (reads_before, cleanup_reads(leader))
        assert fleet_reads(leader)[1] == changes_before[1], (changes_before, fleet_reads(leader))


def metric(d, name):
    return sum(m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"] if m["name"] == name)


def test_cleanup_asks_lost_while_postgresql_is_down():
    """The reads a cleanup asked for are lost with a unit that failed
    (PostgreSQL down): the run stops on the error (one that went on asking
    would never end) and, once PostgreSQL is back, a later run asks again
    and ends the sessions."""
    settings = {"timeout.idle_timeout": 2, "cleanup.interval": 1, "timeout.expiration_grace": 1,
                "timeout.cleanup_grace": 1, "timeout.warning_threshold": 1}
    with Fleet(1, settings) as f:
        d = f.daemons[0]
        for _ in range(3):
            d.call("io.sessiond.Session.Create", {"user_id": "lost"})
        failures = metric(d, "cleanup_failures_total")
        reads = cleanup_reads(d)
        pg_ctl("stop")
        try:
            timed_wait(lambda: metric(d, "cleanup_failures_total") > failures,
                       "a cleanup run failed on its lost reads", timeout=3 * TIMEOUT)
            assert cleanup_reads(d) == reads, (reads, cleanup_reads(d))
        finally:
            pg_ctl("start")
        timed_wait(lambda: psql(f.url, "SELECT count(*) FROM sessions WHERE user_id = 'lost' AND "
                                       "end_reason = 'idle'") == "3",
                   "the sessions ended once PostgreSQL came back", timeout=3 * TIMEOUT)
        assert cleanup_reads(d)[0] - reads[0] >= 3 and cleanup_reads(d)[1] == reads[1], (reads, cleanup_reads(d))


def watch_final_reads(d):
    """d's reads of ended rows for Watch final replies: (by the writer after a commit, on the loop)."""
    where = {m["labels"]["where"]: m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
             if m["name"] == "watch_final_reads_total"}
    return where["after_commit"], where["loop"]


def watch_until_final(w):
    """The replies of a Watch stream up to its final one."""
    evs = []
    while True:
        ev = w.recv()
        assert "error" not in ev, (evs, ev)
        evs.append(ev)
        if not ev.get("continues"):
            return evs


def test_watch_final_reply_read_off_the_loop():
    """A Watch's final reply tells the ended session as the store has it,
    read by the store's writer after a commit, never on the loop: a Watch on
    A of a session destroyed on B ends with "ended" (reason destroyed), one
    of a session rotated on A with "rotated" (the old id, reason rotated)."""
    with Fleet(2) as f:
        a, b = f.daemons
        reads, syncs = watch_final_reads(a), sync_reads(a)
        token = a.call("io.sessiond.Session.Create", {"user_id": "final-destroyed", "platform_id": "web"})["token"]
        assert validate_state(b, token) == "active"
        with a.connect() as w:
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            first = w.recv()
            assert first.get("continues") is True and first["parameters"]["event"] == "state", first
            sid = first["parameters"]["session"]["id"]
            b.call("io.sessiond.Session.Destroy", {"token": token})
            final = watch_until_final(w)[-1]["parameters"]
        assert final["event"] == "ended", final
        s = final["session"]
        assert (s["id"], s["user_id"], s["platform_id"], s["state"], s["end_reason"]) == \
            (sid, "final-destroyed", "web", "ended", "destroyed"), final
        assert s["ended_at"] > 0 and s["created_at"] == first["parameters"]["session"]["created_at"], final

        token = a.call("io.sessiond.Session.Create", {"user_id": "final-rotated"})["token"]
        with a.connect() as w:
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            first = w.recv()
            assert first.get("continues") is True, first
            sid = first["parameters"]["session"]["id"]
            new = a.call("io.sessiond.Session.Rotate", {"token": token})
            final = watch_until_final(w)[-1]["parameters"]
        assert final["event"] == "rotated", final
        s = final["session"]
        assert (s["id"], s["user_id"], s["state"], s["end_reason"]) == \
            (sid, "final-rotated", "ended", "rotated"), final
        assert new["session"]["id"] != sid, new

        after = watch_final_reads(a)
        assert after[0] - reads[0] == 2 and after[1] == reads[1], (reads, after)
        assert sync_reads(a)[1] == syncs[1], (syncs, sync_reads(a))


def test_watch_final_reply_pending_when_the_client_goes_or_the_daemon_stops():
    """A Watch's final reply waiting for its read after a commit: its
    client hanging up, or the daemon stopping, meanwhile costs nothing (the
    reply goes to nobody; the daemon answers on, or exits cleanly). Row
    locks hold the units so that the final read is in a unit that waits:
    the Watch's first reply waits for its sync read, the session is rotated
    in the same unit (which then waits too), and the final read joins the
    next unit, which waits for a lock of its own."""
    for stop in (False, True):
        with Fleet(1) as f:
            d, = f.daemons
            token = d.call("io.sessiond.Session.Create", {"user_id": "pending"})["token"]
            blockers = {u: d.call("io.sessiond.Session.Create", {"user_id": u})["token"]
                        for u in ("pending1", "pending2", "pending3")}
            locks = {u: RowLocks(f.url, u) for u in blockers}
            reads = watch_final_reads(d)
            out, threads = {}, {}

            def destroy(u):
                threads[u] = call_in_background(out, u, d, "io.sessiond.Session.Destroy", {"token": blockers[u]})
            destroy("pending1")
            wait_for(lambda: waiting_for_locks(f.url) >= 1, what="the first unit waiting")
            w = d.connect()
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            threads["rotate"] = call_in_background(out, "rotate", d, "io.sessiond.Session.Rotate", {"token": token})
            destroy("pending3")
            time.sleep(0.3)  # the Watch's sync read, the Rotate and a Destroy in the second unit
            locks["pending1"].release()
            threads["pending1"].join(TIMEOUT)
            wait_for(lambda: waiting_for_locks(f.url) >= 1, what="the second unit waiting")
            destroy("pending2")
            time.sleep(0.3)  # a Destroy in the third unit
            locks["pending3"].release()
            threads["rotate"].join(TIMEOUT)
            assert "token" in out["rotate"], out
            wait_for(lambda: waiting_for_locks(f.url) >= 1, what="the third unit waiting, with the final read")
            assert watch_final_reads(d) == reads, (reads, watch_final_reads(d))
            if stop:
                d.signal(signal.SIGTERM)
            w.close()
            time.sleep(0.3)  # the daemon stopping, or the hang-up heard
            locks["pending2"].release()
            threads["pending2"].join(TIMEOUT)
            assert "error" not in str(out["pending2"]), out
            if stop:
                d.wait_stopped()
                continue
            after = watch_final_reads(d)
            assert after[0] == reads[0] + 1 and after[1] == reads[1], (reads, after)
            assert validate_state(d, out["rotate"]["token"]) == "active"
def listener_pids(url):
    """The daemons' listening connections (named by application_name) on url's database."""
    db = url.split("?")[0].rsplit("/", 1)[1]
    return set(psql(URL, "SELECT pid FROM pg_stat_activity WHERE datname = '%s' AND application_name LIKE "
                         "'sessiond/%%'" % db).split())


def test_missed_changes_are_read_again_after_a_commit():
    """B's listening connection is lost and cannot come back at once, while
    A destroys and creates sessions: B misses those changes, and once its
    listener is back it reads every live session again, by its store's
    writer after commits, in pages, not on its loop (no session row read on
    the loop meanwhile). B then refuses the sessions A destroyed and lists
    those A created."""
    with Fleet(1) as f:
        a = f.daemons[0]
        a_listener = listener_pids(f.url)
        b = f.add()
        kept = [a.call("io.sessiond.Session.Create", {"user_id": "outage"})["token"] for _ in range(5)]
        doomed = [a.call("io.sessiond.Session.Create", {"user_id": "outage"})["token"] for _ in range(5)]
        ids = {a.call("io.sessiond.Session.Validate", {"token": t, "touch": False})["session"]["id"] for t in kept}
        timed_wait(lambda: len(listed_ids(b, "outage")) == 10, "A's creations in B's memory")
        for t in kept + doomed:
            assert validate_state(b, t) == "active"
        b_listener = listener_pids(f.url) - a_listener
        assert len(a_listener) == 1 and len(b_listener) == 1, (a_listener, b_listener)
        loop_reads = metric(b, "store_loop_row_reads_total")
        rereads = metric(b, "fleet_rereads_total")
        rows = metric(b, "fleet_reread_rows_total")
        db = f.url.split("?")[0].rsplit("/", 1)[1]
        psql(URL, "ALTER DATABASE %s ALLOW_CONNECTIONS false" % db)
        try:
            psql(URL, "SELECT pg_terminate_backend(%s)" % b_listener.pop())
            wait_for(lambda: "listens for other daemons' changes was lost" in b.read_log(), what="B's listener lost")
            for t in doomed:
                a.call("io.sessiond.Session.Destroy", {"token": t})
            created = {a.call("io.sessiond.Session.Create", {"user_id": "outage"})["session"]["id"] for _ in range(3)}
            time.sleep(0.3)  # A's announcements of the creations are sent (and missed by B)
            assert all(validate_state(b, t) == "active" for t in doomed)  # B's memory missed the destroys
        finally:
            psql(URL, "ALTER DATABASE %s ALLOW_CONNECTIONS true" % db)
        timed_wait(lambda: all(validate_state(b, t) == "io.sessiond.Session.Expired" for t in doomed),
                   "destroys missed by B refused on B")
        timed_wait(lambda: listed_ids(b, "outage") == ids | created, "creations missed by B listed by B")
        assert metric(b, "fleet_rereads_total") > rereads
        assert metric(b, "fleet_reread_rows_total") - rows >= 8, (rows, metric(b, "fleet_reread_rows_total"))
        assert metric(b, "store_loop_row_reads_total") == loop_reads, (
            loop_reads, metric(b, "store_loop_row_reads_total"), b.read_log()[-3000:])
        assert "re-read the live sessions after missing changes of other daemons (5 no longer live)" in \
            b.read_log(), b.read_log()[-3000:]


def test_reread_of_many_sessions_in_pages():
    """More than two pages' worth of sessions created on A while B's
    listener is out come into B's memory with the re-read that follows its
    return: page after page, each read by B's store writer after a commit,
    none on B's loop."""
    n = int(os.environ.get("FLEET_REREAD_SESSIONS", "25000"))
    bench = os.environ.get("SESSIOND_BENCH")
    if not bench:
        raise Skip("no sessiond-bench (SESSIOND_BENCH)")
    with Fleet(1) as f:
        a = f.daemons[0]
        a_listener = listener_pids(f.url)
        b = f.add()
        a.call("io.sessiond.Session.Create", {"user_id": "page"})
        timed_wait(lambda: metric(b, "sessions_in_memory") == 1, "A's creation in B's memory")
        b_listener = listener_pids(f.url) - a_listener
        assert len(b_listener) == 1, (a_listener, b_listener)
        loop_reads = metric(b, "store_loop_row_reads_total")
        rows = metric(b, "fleet_reread_rows_total")
        db = f.url.split("?")[0].rsplit("/", 1)[1]
        psql(URL, "ALTER DATABASE %s ALLOW_CONNECTIONS false" % db)
        try:
            psql(URL, "SELECT pg_terminate_backend(%s)" % b_listener.pop())
            wait_for(lambda: "listens for other daemons' changes was lost" in b.read_log(), what="B's listener lost")
            p = subprocess.run([bench, "-s", a.socket, "--timeout", "10", "-o", "validate", "--sessions", str(n),
                                "-n", "0", "-c", "4"], capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, (p.stdout, p.stderr)
            time.sleep(0.3)  # A's announcements of the creations are sent (and missed by B)
            assert metric(b, "sessions_in_memory") < n + 1
        finally:
            psql(URL, "ALTER DATABASE %s ALLOW_CONNECTIONS true" % db)
        try:
            timed_wait(lambda: metric(b, "sessions_in_memory") == n + 1,
                       "%d creations missed by B in B's memory" % n)
        except AssertionError:
            raise AssertionError("B holds %d of %d; rows read again %d\n%s" % (
                metric(b, "sessions_in_memory"), n + 1, metric(b, "fleet_reread_rows_total") - rows,
                "\n".join(l for l in b.read_log().splitlines() if "[debug]" not in l)[-3000:]))
        assert metric(b, "fleet_reread_rows_total") - rows >= n, (rows, metric(b, "fleet_reread_rows_total"))
        assert metric(b, "store_loop_row_reads_total") == loop_reads, (
            loop_reads, metric(b, "store_loop_row_reads_total"))


def page_reads(d):
    """d's pages of listings read from the store: (by the writer after a commit, on the loop)."""
    where = {m["labels"]["where"]: m["value"] for m in d.call("io.sessiond.Admin.Metrics")["metrics"]
             if m["name"] == "listing_page_reads_total"}
    return where["after_commit"], where["loop"]


def paged(d, method, params, key):
    """Every entry of a paged listing, walking its cursors."""
    out, cursor = [], ""
    while cursor is not None:
        r = d.call(method, dict(params, cursor=cursor))
        out += r[key]
        cursor = r.get("cursor")
    return out


def test_listings_read_off_the_loop():
    """On a fleet the listings read their pages by the store's writer after
    a commit, never on the loop: B lists what A created and ended (live and
    ended, whole and paged, by user and not), finds single sessions by id,
    reads the audit, and terminates a session A created; A then refuses it.
    The pages are the listing's, entry for entry, as on one host."""
    with Fleet(2, settings={"security.max_concurrent_per_user": 100000,
                            "security.audit_logging": True}) as f:
        a, b = f.daemons
        made = [a.call("io.sessiond.Session.Create", {"user_id": "lena", "client": {"ip": "192.0.2.7"}})
                for _ in range(450)]
        made += [a.call("io.sessiond.Session.Create", {"user_id": "other"}) for _ in range(30)]
        for m in made[:40]:  # ended on B, by token
            b.call("io.sessiond.Session.Destroy", {"token": m["token"]})
        live = {m["session"]["id"] for m in made[40:450]}
        ended = {m["session"]["id"] for m in made[:40]}
        timed_wait(lambda: {s["id"] for s in b.call("io.sessiond.Session.ListUser", {"user_id": "lena"})["sessions"]}
                   == live, "A's sessions listed by B")
        reads = page_reads(b)
        loop_rows = metric(b, "store_loop_row_reads_total")

        whole = b.call("io.sessiond.Session.ListUser", {"user_id": "lena"})["sessions"]
        assert [s["id"] for s in whole] == [s["id"] for s in paged(b, "io.sessiond.Session.ListUser",
                                                                    {"user_id": "lena"}, "sessions")]
        assert {s["id"] for s in whole} == live and len(whole) == len(live)
        assert {s.get("ip") for s in whole} == {"192.0.2.7"}, {s.get("ip") for s in whole}  # rows read for ip
        with_ended = b.call("io.sessiond.Admin.ListSessions", {"user_id": "lena", "include_ended": True,
                                                               "limit": 1000})["sessions"]
        assert {s["id"] for s in with_ended} == live | ended, len(with_ended)
        assert {s["id"] for s in with_ended if s["state"] == "ended"} == ended
        assert [s["id"] for s in with_ended] == [s["id"] for s in paged(
            b, "io.sessiond.Admin.ListSessions", {"user_id": "lena", "include_ended": True, "limit": 150},
            "sessions")][:len(with_ended)]
        everyone = b.call("io.sessiond.Admin.ListSessions", {"limit": 1000})["sessions"]
        assert {s["id"] for s in everyone} == live | {m["session"]["id"] for m in made[450:]}
        assert len(paged(b, "io.sessiond.Admin.ListSessions", {"limit": 100, "include_ended": True},
                         "sessions")) >= len(made)

        one = b.call("io.sessiond.Admin.GetSession", {"id": made[0]["session"]["id"]})["session"]
        assert one["state"] == "ended" and one["end_reason"] == "destroyed", one
        assert b.call("io.sessiond.Admin.GetSession", {"id": made[100]["session"]["id"]})["session"]["state"] == "active"
        with b.connect() as c:
            assert c.call_error("io.sessiond.Admin.GetSession", {"id": "A" * 22})[0].endswith("NotFound")

        audit = b.call("io.sessiond.Admin.Audit", {"user_id": "lena", "limit": 1000})["entries"]
        assert [e["id"] for e in audit] == [e["id"] for e in paged(
            b, "io.sessiond.Admin.Audit", {"user_id": "lena", "limit": 1000}, "entries")]
        assert len([e for e in audit if e["kind"] == "created"]) == 450, len(audit)
        newest = b.call("io.sessiond.Admin.Audit", {"user_id": "lena", "limit": 5})["entries"]
        assert [e["id"] for e in newest] == [e["id"] for e in audit[-5:]]

        b.call("io.sessiond.Admin.Terminate", {"id": made[200]["session"]["id"]})
        timed_wait(lambda: validate_state(a, made[200]["token"]) != "active", "the session terminated on B refused on A")
        with b.connect() as c:
            assert c.call_error("io.sessiond.Admin.Terminate",
                                {"id": made[200]["session"]["id"]})[0].endswith("NotFound")

        after = page_reads(b)
        assert after[1] == reads[1], (reads, after)  # nothing read on B's loop
        assert after[0] - reads[0] >= 20, (reads, after)
        assert metric(b, "store_loop_row_reads_total") == loop_rows
        print("     %d pages read after commits on B, none on its loop" % (after[0] - reads[0]))


def test_listing_pending_when_the_client_goes_or_postgresql_stops():
    """A listing waiting for its page: its client may go (the page is
    dropped when it comes), and a page lost with its unit (PostgreSQL
    stopped) answers StorageError; the daemon goes on serving."""
    with Fleet(1, settings={"security.max_concurrent_per_user": 100000}) as f:
        d = f.daemons[0]
        for _ in range(600):
            d.call("io.sessiond.Session.Create", {"user_id": "gone"})
        for _ in range(20):
            c = d.connect()
            c.send("io.sessiond.Session.ListUser", {"user_id": "gone"})
            c.close()
        assert len(d.call("io.sessiond.Session.ListUser", {"user_id": "gone"})["sessions"]) == 600
        pg_ctl("stop")
        try:
            with d.connect() as c:
                for method, params in (("io.sessiond.Admin.ListSessions", {"limit": 10, "cursor": ""}),
                                       ("io.sessiond.Session.ListUser", {"user_id": "gone"}),
                                       ("io.sessiond.Admin.Audit", {})):
                    err = c.call_error(method, params)[0]
                    assert err.endswith("StorageError"), (method, err)
        finally:
            pg_ctl("start")
        def listed():
            try:
                return len(d.call("io.sessiond.Session.ListUser", {"user_id": "gone"})["sessions"])
            except VarlinkError:
                return None

        timed_wait(lambda: listed() == 600, "listings again once PostgreSQL is back", timeout=3 * TIMEOUT)


def pg_freeze(freeze):
    """Stops (SIGSTOP) or resumes (SIGCONT) the test server and every one
    of its processes: a server that stops answering without closing its
    connections, as a frozen machine or a lost network does."""
    data = os.environ.get("SESSIOND_TEST_PG_DATA")
    if not data:
        raise Skip("pg-server did not say where PostgreSQL's data is")
    with open(os.path.join(data, "postmaster.pid")) as fh:
        pids = [int(fh.readline())]
    for pid in list(pids):
        with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
            pids += [int(x) for x in fh.read().split()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP if freeze else signal.SIGCONT)


def test_status_and_metrics_answer_while_postgresql_is_frozen():
    """PostgreSQL frozen (its processes stopped, its connections open): the
    loop still answers Status (with the daemons seen), Metrics (with the
    tables' size), and validations of cached sessions, at once; a listing
    waits for its page (the writer waits for the server) and is answered
    once the server runs again."""
    with Fleet(2, {"features.clustering": True}) as f:
        a, b = f.daemons
        token = a.call("io.sessiond.Session.Create", {"user_id": "ice"})["token"]
        timed_wait(lambda: len(a.call("io.sessiond.Admin.Status")["status"]["fleet"]["daemons"] or []) == 2,
                   "both daemons seen by A's Status")
        timed_wait(lambda: metric(a, "db_size_bytes") > 0, "the tables' size measured")
        lister = a.connect()
        pg_freeze(True)
        try:
            start = time.monotonic()
            fleet = a.call("io.sessiond.Admin.Status")["status"]["fleet"]
            assert len(fleet["daemons"]) == 2, fleet
            assert metric(a, "db_size_bytes") > 0
            assert a.call("io.sessiond.Session.Validate", {"token": token})["state"] == "active"
            took = time.monotonic() - start
            lister.send("io.sessiond.Session.ListUser", {"user_id": "ice"})
            lister.sock.settimeout(0.5)
            try:
                lister.recv()
                raise AssertionError("a listing answered while PostgreSQL was frozen")
            except socket.timeout:
                pass
        finally:
            pg_freeze(False)
        lister.sock.settimeout(TIMEOUT)
        assert len(lister.recv()["parameters"]["sessions"]) == 1
        lister.close()
        print("     Status, Metrics and a Validate answered in %.0f ms while PostgreSQL was frozen" % (took * 1000))
def test_pages_and_terminate_answered_at_stop():
    """A Terminate, a GetSession, a page of ListSessions and a whole
    ListUser waiting for their read after a commit when SIGTERM comes are
    answered once the unit commits, as a switch or a sync write is (a
    stream is what a stop cancels), and the Terminate's write is committed.
    The unit is held back by a row lock taken in another transaction."""
    with Fleet(1) as f:
        d, = f.daemons
        victim = d.call("io.sessiond.Session.Create", {"user_id": "victim"})
        shown = d.call("io.sessiond.Session.Create", {"user_id": "shown"})
        out = {}
        locks, threads = unit_held(f, d, out)
        threads += [
            call_in_background(out, "terminate", d, "io.sessiond.Admin.Terminate", {"id": victim["session"]["id"]}),
            call_in_background(out, "get", d, "io.sessiond.Admin.GetSession", {"id": shown["session"]["id"]}),
            call_in_background(out, "page", d, "io.sessiond.Admin.ListSessions", {"limit": 10, "cursor": ""}),
            call_in_background(out, "whole", d, "io.sessiond.Session.ListUser", {"user_id": "shown"})]
        time.sleep(0.3)  # the reads asked, in the unit behind the one held
        d.signal(signal.SIGTERM)
        time.sleep(0.3)  # the daemon stopping, the unit still held
        locks.release()
        for t in threads:
            t.join(TIMEOUT)
        d.wait_stopped()
        assert out["destroy"] == {} and out["terminate"] == {}, out
        assert out["get"]["session"]["id"] == shown["session"]["id"], out
        assert shown["session"]["id"] in [s["id"] for s in out["page"]["sessions"]], out
        assert [s["id"] for s in out["whole"]["sessions"]] == [shown["session"]["id"]], out
        assert psql(f.url, "SELECT end_reason FROM sessions WHERE user_id = 'victim'") == "terminated"


def test_session_ended_while_its_page_is_read():
    """A session ended on the loop while its row is being read (a Terminate
    answered from the same commit as the GetSession behind it, a Destroy
    while a listing with ended sessions waits): the page reads it again
    after the next commit, and shows it ended, not "not found" or left
    out. The units are held back by a row lock."""
    with Fleet(1) as f:
        d, = f.daemons
        victim = d.call("io.sessiond.Session.Create", {"user_id": "victim"})
        other = d.call("io.sessiond.Session.Create", {"user_id": "victim"})
        reads = page_reads(d)
        out = {}
        locks, threads = unit_held(f, d, out)
        threads.append(call_in_background(out, "terminate", d, "io.sessiond.Admin.Terminate",
                                          {"id": victim["session"]["id"]}))
        time.sleep(0.2)
        threads.append(call_in_background(out, "get", d, "io.sessiond.Admin.GetSession",
                                          {"id": victim["session"]["id"]}))
        threads.append(call_in_background(out, "list", d, "io.sessiond.Admin.ListSessions",
                                          {"user_id": "victim", "include_ended": True}))
        time.sleep(0.2)
        # Ended in memory at once, its row with a later unit.
        threads.append(call_in_background(out, "destroy2", d, "io.sessiond.Session.Destroy", {"token": other["token"]}))
        time.sleep(0.2)
        locks.release()
        for t in threads:
            t.join(TIMEOUT)
        assert out["terminate"] == {} and out["destroy2"] == {}, out
        got = out["get"]["session"]
        assert got["state"] == "ended" and got["end_reason"] == "terminated", out
        listed = {s["id"]: s for s in out["list"]["sessions"]}
        assert set(listed) == {victim["session"]["id"], other["session"]["id"]}, out
        assert listed[other["session"]["id"]]["end_reason"] == "destroyed", out
        assert page_reads(d)[0] - reads[0] >= 4, (reads, page_reads(d))  # read again, each


if __name__ == "__main__":
    run_tests([
        test_created_on_one_valid_on_the_others,
        test_listings_read_off_the_loop,
        test_listing_pending_when_the_client_goes_or_postgresql_stops,
        test_status_and_metrics_answer_while_postgresql_is_frozen,
        test_pages_and_terminate_answered_at_stop,
        test_session_ended_while_its_page_is_read,
        test_changes_heard_are_read_off_the_loop,
        test_tokens_memory_does_not_know_are_read_off_the_loop,
        test_rotation_and_terminate_seen_elsewhere,
        test_watch_sees_a_sync_write_made_elsewhere,
        test_sync_writes_race_across_daemons,
        test_sync_state_read_after_commit_on_one_daemon,
        test_sync_write_answered_at_stop,
        test_sync_writes_outrun_or_ended_read_off_the_loop,
        test_destroy_and_validate_waiting_for_one_read,
        test_sync_write_then_rotate_on_one_daemon,
        test_watch_then_rotate_while_first_reply_pending,
        test_user_limit_holds_across_daemons,
        test_platform_switch_limit_holds_across_daemons,
        test_platform_switch_of_a_session_ended_elsewhere,
        test_switches_waiting_together_are_decided_by_the_store,
        test_rotation_while_a_switch_waits,
        test_switch_answered_at_stop,
        test_key_mismatch_refused,
        test_sessionctl_db_and_backup_point_to_postgresql,
        test_password_never_shown,
        test_leader_runs_the_jobs_and_hands_them_over,
        test_touches_on_one_daemon_keep_the_session_alive_on_another,
        test_kill9_under_load_loses_nothing_acknowledged,
        test_creations_become_known_to_the_others_memory,
        test_creations_of_a_daemon_killed_are_learnt,
        test_a_daemon_stopped_cleanly_costs_the_others_no_catch_up,
        test_destroy_user_of_many_seen_elsewhere,
        test_postgres_restart_under_load,
        test_cached_validations_fail_closed_while_postgresql_is_down,
        test_leader_cleanup_reads_candidates_after_a_commit,
        test_cleanup_asks_lost_while_postgresql_is_down,
        test_cleanup_under_slow_steady_writes,
        test_watch_final_reply_read_off_the_loop,
        test_watch_final_reply_pending_when_the_client_goes_or_the_daemon_stops,
        test_missed_changes_are_read_again_after_a_commit,
        test_reread_of_many_sessions_in_pages,
    ])
