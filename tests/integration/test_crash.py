"""Crash consistency: SIGKILL at random moments loses nothing acknowledged.

Concurrent clients (threads, each on its own connection and its own users)
create, rotate, switch, write sync state, validate and destroy sessions and
record every acknowledged answer in a model. The daemon is killed with
SIGKILL at a random moment, the database and its WAL are copied and checked
with PRAGMA integrity_check, the daemon is restarted and every token of the
model is checked against what was acknowledged:

  - an acknowledged create validates (these sessions cannot end on their
    own: long timeouts, no per-user limit reached);
  - an acknowledged destroy answers Expired(destroyed);
  - an acknowledged rotation: the old token answers Expired(rotated), the
    new one validates and carries the sync state and platform over;
  - an acknowledged SetSyncState is there with its version and data, an
    acknowledged SwitchPlatform with its platform.

A request in flight at the kill may or may not have happened: after the
restart its token must be in one of the two states, never a third, and the
model takes the state found. The rounds are seeded (CRASH_SEED, else a
random seed; it is printed so a failure can be replayed) and accumulate:
every round checks everything acknowledged since the first.

Also: a kill in the middle of a deep cleanup (thousands of ended sessions
past retention being purged in small batches) and in the middle of reloads,
each followed by the integrity check and the data check.
"""

import json
import os
import random
import select
import shutil
import signal
import sqlite3
import tempfile
import threading
import time

from harness import Daemon, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "15"))
WORKERS = 4

# Sessions that cannot end by themselves during the test, timers out of the
# way, no eviction.
SETTINGS = {
    "debug_mode": False,
    "timeout.session_lifetime": 86400,
    "timeout.idle_timeout": 86400,
    "timeout.absolute_timeout": 604800,
    "security.max_concurrent_per_user": 100000,
    "security.max_platform_switches_per_hour": 100000,
    "security.suspicious_activity_threshold": 1000000,
    "sync.max_data_size": 4096,
    "cleanup.interval": 3600,
    "cleanup.batch_interval": 7200,
    "cleanup.deep_interval": 86400,
    "cleanup.trigger_threshold": 100000,
    "cleanup.max_expired_threshold": 100000,
}


def msg(method, params):
    return json.dumps({"method": method, "parameters": params}).encode() + b"\0"


def pipeline(c, calls, chunk=200):
    """Sends the (method, params) calls pipelined, `chunk` at a time (the
    daemon stops reading a peer that does not read its replies); returns
    the replies in order."""
    replies = []
    for i in range(0, len(calls), chunk):
        part = calls[i:i + chunk]
        c.send_raw(b"".join(msg(m, p) for m, p in part))
        replies.extend(c.recv() for _ in part)
    return replies


def integrity_check(d, label):
    """PRAGMA integrity_check on a copy of the database and its WAL (the
    daemon is stopped or dead: the copy is what it left)."""
    tmp = tempfile.mkdtemp(prefix="sessiond-crash-check-")
    try:
        copy = os.path.join(tmp, "copy.db")
        shutil.copyfile(d.database, copy)
        if os.path.exists(d.database + "-wal"):
            shutil.copyfile(d.database + "-wal", copy + "-wal")
        db = sqlite3.connect(copy)
        try:
            result = [r[0] for r in db.execute("PRAGMA integrity_check")]
        finally:
            db.close()
        assert result == ["ok"], "%s: integrity_check: %r" % (label, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Session:
    """What the clients were told about one token."""

    def __init__(self, state="live", version=0, data=None, platform=None):
        self.state = state          # live, destroyed, rotated
        self.version = version
        self.data = data
        self.platform = platform

    def carried(self):
        """A rotation's new token: same sync state and platform."""
        return Session("live", self.version, self.data, self.platform)


class Model:
    def __init__(self):
        self.lock = threading.Lock()
        self.sessions = {}   # token -> Session
        self.pending = []    # (op, token, args, Session before) in flight at the kill
        self.acks = 0

    def live_tokens(self, owner):
        with self.lock:
            return [t for t, (o, s) in self.sessions.items() if o == owner and s.state == "live"]


class Worker(threading.Thread):
    """One client: random operations on its own sessions until the
    connection breaks (the kill)."""

    def __init__(self, d, model, wid, seed, round_no):
        super().__init__(daemon=True)
        self.d, self.model, self.wid = d, model, wid
        self.rng = random.Random(seed)
        self.round = round_no
        self.error = None
        self.ops = 0

    def record(self, token, session):
        with self.model.lock:
            self.model.sessions[token] = (self.wid, session)
            self.model.acks += 1

    def session(self, token):
        with self.model.lock:
            return self.model.sessions[token][1]

    def run(self):
        try:
            c = self.d.connect(timeout=10)
        except OSError:
            return
        inflight = None
        try:
            while True:
                inflight = None
                live = self.model.live_tokens(self.wid)
                roll = self.rng.random()
                if not live or roll < 0.25:
                    user = "w%d-u%d" % (self.wid, self.rng.randrange(8))
                    params = {"user_id": user}
                    if self.rng.random() < 0.5:
                        params["sync_data"] = "init-%d-%d" % (self.round, self.ops)
                    inflight = ("create", None, params, None)
                    r = c.call(S + "Create", params)
                    s = Session(version=1, data=params["sync_data"]) if "sync_data" in params else Session()
                    self.record(r["token"], s)
                    continue
                token = self.rng.choice(live)
                before = self.session(token)
                if roll < 0.45:
                    data = "d-%d-%d-%d" % (self.wid, self.round, self.ops)
                    inflight = ("sync", token, (data, before.version), before)
                    r = c.call(S + "SetSyncState", {"token": token, "data": data,
                                                     "expected_version": before.version})
                    assert r["version"] == before.version + 1, r
                    self.record(token, Session("live", r["version"], data, before.platform))
                elif roll < 0.55:
                    platform = "p%d" % self.rng.randrange(5)
                    inflight = ("switch", token, platform, before)
                    r = c.call(S + "SwitchPlatform", {"token": token, "platform_id": platform})
                    assert r["session"]["platform_id"] == platform, r
                    self.record(token, Session("live", before.version, before.data, platform))
                elif roll < 0.65:
                    inflight = ("rotate", token, None, before)
                    r = c.call(S + "Rotate", {"token": token})
                    with self.model.lock:
                        self.model.sessions[token] = (self.wid, Session("rotated"))
                        self.model.sessions[r["token"]] = (self.wid, before.carried())
                        self.model.acks += 1
                elif roll < 0.75:
                    inflight = ("destroy", token, None, before)
                    c.call(S + "Destroy", {"token": token})
                    self.record(token, Session("destroyed"))
                else:
                    # A read while running: the daemon agrees with the model.
                    inflight = None
                    r = c.call(S + "Validate", {"token": token})
                    assert r["state"] == "active", r
                    assert r["session"].get("platform_id") == before.platform, (r, before.platform)
                self.ops += 1
        except (ConnectionError, OSError):
            if inflight is not None:
                with self.model.lock:
                    self.model.pending.append(inflight)
        except Exception as e:  # a wrong answer while the daemon was running
            self.error = e
        finally:
            c.close()


class Pipeliner(threading.Thread):
    """Pipelines batches of creates: every reply read is acknowledged, the
    rest of a batch is in flight at the kill."""

    def __init__(self, d, model, wid, round_no, batch=25, pad=0):
        super().__init__(daemon=True)
        self.d, self.model, self.wid, self.round = d, model, wid, round_no
        self.batch, self.pad = batch, pad
        self.error = None

    def run(self):
        try:
            c = self.d.connect(timeout=10)
        except OSError:
            return
        n = 0
        try:
            while True:
                calls = []
                for _ in range(self.batch):
                    n += 1
                    data = "pipe-%d-%d-%d" % (self.wid, self.round, n)
                    calls.append((S + "Create", {"user_id": "pipe-%d" % (n % 7),
                                                 "sync_data": data + "." * self.pad}))
                c.send_raw(b"".join(msg(m, p) for m, p in calls))
                for _, p in calls:
                    r = c.recv()
                    assert "error" not in r, r
                    with self.model.lock:
                        self.model.sessions[r["parameters"]["token"]] = (self.wid, Session(
                            version=1, data=p["sync_data"]))
                        self.model.acks += 1
        except (ConnectionError, OSError):
            pass
        except Exception as e:
            self.error = e
        finally:
            c.close()


def observe(c, tokens):
    """token -> ("live", version, data, platform) | ("expired", reason) | ("error", name)."""
    replies = pipeline(c, [(S + "Validate", {"token": t, "touch": False}) for t in tokens])
    found, live = {}, []
    for t, r in zip(tokens, replies):
        if "error" in r:
            if r["error"] == S + "Expired":
                found[t] = ("expired", r["parameters"]["reason"])
            else:
                found[t] = ("error", r["error"])
        else:
            assert r["parameters"]["state"] == "active", r
            found[t] = ("live", r["parameters"]["session"].get("platform_id"))
            live.append(t)
    syncs = pipeline(c, [(S + "GetSyncState", {"token": t}) for t in live])
    for t, r in zip(live, syncs):
        assert "error" not in r, r
        p = r["parameters"]
        found[t] = ("live", p["version"], p.get("data"), found[t][1])
    return found


def expected(s):
    if s.state == "live":
        return ("live", s.version, s.data, s.platform)
    return ("expired", s.state)


def resolve_pending(model, found):
    """A request in flight at the kill happened or did not: its token is in
    the state before or after, and the model takes what was found."""
    for op, token, args, before in model.pending:
        if op == "create":
            continue  # its token was never seen: nothing to check
        got = found[token]
        if op == "sync":
            data, version = args
            after = Session("live", version + 1, data, before.platform)
        elif op == "switch":
            after = Session("live", before.version, before.data, args)
        elif op == "rotate":
            after = Session("rotated")  # the new token was never seen
        else:
            after = Session("destroyed")
        if got == expected(before):
            continue
        assert got == expected(after), "in-flight %s of %s: found %r, expected %r or %r" % (
            op, token[:8], got, expected(before), expected(after))
        model.sessions[token] = (model.sessions[token][0], after)
    model.pending = []


def check_model(d, model, label):
    with d.connect(timeout=30) as c:
        tokens = list(model.sessions)
        found = observe(c, tokens)
        pending_tokens = {p[1] for p in model.pending}
        resolve_pending(model, found)
        wrong = []
        for t in tokens:
            if t in pending_tokens:
                continue
            want = expected(model.sessions[t][1])
            if found[t] != want:
                wrong.append("%s...: found %r, acknowledged %r" % (t[:8], found[t], want))
        assert not wrong, "%s: %d of %d tokens differ from what was acknowledged:\n%s" % (
            label, len(wrong), len(tokens), "\n".join(wrong[:20]))


def test_random_kills_lose_nothing_acknowledged():
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 31)))
    print("crash seed: %d (CRASH_SEED=%d to replay; CRASH_ROUNDS=%d)" % (seed, seed, ROUNDS), flush=True)
    rng = random.Random(seed)
    model = Model()
    kinds = {"live": 0, "destroyed": 0, "rotated": 0}
    with Daemon(SETTINGS) as d:
        for round_no in range(ROUNDS):
            workers = [Worker(d, model, w, rng.randrange(1 << 31), round_no) for w in range(WORKERS)]
            workers.append(Pipeliner(d, model, WORKERS, round_no))
            for w in workers:
                w.start()
            # Let the clients get going, then kill at a random moment.
            start_acks = model.acks
            wait_for(lambda: model.acks - start_acks >= 20, timeout=20, interval=0.005,
                     what="the clients to get answers")
            time.sleep(rng.uniform(0.0, 0.4))
            d.kill()
            for w in workers:
                w.join(20)
                assert not w.is_alive(), "a client hung after the kill"
                assert w.error is None, "round %d: wrong answer while running: %r" % (round_no, w.error)
            integrity_check(d, "round %d" % round_no)
            d.start()
            check_model(d, model, "round %d (seed %d)" % (round_no, seed))
        for _, s in model.sessions.values():
            kinds[s.state] += 1
        d.stop()
        integrity_check(d, "after the clean stop")
    print("checked %d tokens (%s) over %d kills" % (len(model.sessions), kinds, ROUNDS), flush=True)
    # The test exercised every kind of acknowledged write.
    assert all(n > 0 for n in kinds.values()), kinds


def test_kill_during_writer_commits():
    """Large units of work (pipelined creates with 8 KiB of sync state, a
    few megabytes a unit): the writer thread is committing nearly all the
    time, so the kills land in the middle of a commit handed to it. Every
    acknowledged create must be there with its state; replies of a unit
    that was committed but not yet answered may have been lost with the
    process (the clients never saw them): those sessions are simply
    there."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 31)))
    rng = random.Random(seed + 1)
    s = dict(SETTINGS)
    s["sync.max_data_size"] = 16384
    model = Model()
    extra = []
    with Daemon(s) as d:
        for round_no in range(6):
            workers = [Pipeliner(d, model, 100 + w, round_no, batch=100, pad=8192) for w in range(3)]
            for w in workers:
                w.start()
            start_acks = model.acks
            wait_for(lambda: model.acks - start_acks >= 50, timeout=30, interval=0.005,
                     what="the pipelined creates to be answered")
            time.sleep(rng.uniform(0.0, 0.3))
            d.kill()
            for w in workers:
                w.join(20)
                assert not w.is_alive(), "a client hung after the kill"
                assert w.error is None, "round %d: %r" % (round_no, w.error)
            integrity_check(d, "writer round %d" % round_no)
            stored = count_rows(d)[1]
            extra.append(stored - len(model.sessions) - sum(extra))
            assert stored >= len(model.sessions), (stored, len(model.sessions))
            d.start()
            check_model(d, model, "writer round %d (seed %d)" % (round_no, seed))
        d.stop()
    print("stored beyond what was acknowledged at each kill (a unit committed, its replies lost): %s" % extra,
          flush=True)


def create_many(c, n, user, sync=None):
    calls = []
    for i in range(n):
        p = {"user_id": user}
        if sync:
            p["sync_data"] = "%s-%d" % (sync, i)
        calls.append((S + "Create", p))
    replies = pipeline(c, calls)
    for r in replies:
        assert "error" not in r, r
    return [r["parameters"]["token"] for r in replies]


def age_ended(path, days):
    """Moves ended sessions and all audit rows `days` into the past (the
    daemon is stopped); returns how many ended sessions there are."""
    shift = days * 86400
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sessions SET created_at = created_at - ?1, last_activity = last_activity - ?1, "
                   "renewed_at = renewed_at - ?1, ended_at = ended_at - ?1 WHERE ended_at IS NOT NULL",
                   (shift,))
        db.execute("UPDATE audit SET time = time - ?1", (shift,))
    n = db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone()[0]
    db.close()
    return n


def count_rows(d):
    db = sqlite3.connect("file:%s?mode=ro" % d.database, uri=True)
    try:
        return (db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone()[0],
                db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0])
    finally:
        db.close()


def test_kill_during_deep_cleanup():
    s = dict(SETTINGS)
    s.update({"cleanup.batch_size": 5, "cleanup.expired_retention_days": 1,
              "cleanup.audit_retention_days": 1, "features.background_cleanup": False})
    n_old = 6000
    with Daemon(s) as d:
        with d.connect(timeout=60) as c:
            old = create_many(c, n_old, "old")
            assert c.call(S + "DestroyUser", {"user_id": "old"}) == {"count": n_old}
        d.stop()
        assert age_ended(d.database, 3) == n_old
        d.start()
        with d.connect(timeout=60) as c:
            live = create_many(c, 300, "live", sync="keep")
            recent = create_many(c, 50, "recent")
            for t in recent:
                c.call(S + "Destroy", {"token": t})
        more, left = [], [n_old]
        # Kills later and later into the purge, each on a fresh run.
        for kill_no, delay in enumerate((0.0, 0.05, 0.15, 0.3)):
            with d.connect(timeout=60) as c:
                c.send(A + "Cleanup", {"kind": "deep"})
                with d.connect() as w:
                    # Once little is left to purge, the run may end before
                    # the first Status sees it: its reply on c says so.
                    seen = {}

                    def started_or_done():
                        if w.call(A + "Status")["status"]["cleanup"]["running"] == "deep":
                            seen["running"] = True
                            return True
                        return bool(select.select([c.sock], [], [], 0)[0])
                    wait_for(started_or_done, interval=0.002, what="the deep cleanup to start")
                    # The first kill, with all 6000 rows to purge, must land
                    # inside the run, or this test tests nothing.
                    assert kill_no > 0 or seen.get("running"), "the first deep cleanup was not seen running"
                    # Requests keep being answered (and written) while it runs.
                    more += create_many(w, 10, "live", sync="more%d" % kill_no)
                    time.sleep(delay)
                d.kill()
            integrity_check(d, "killed during deep cleanup %d" % kill_no)
            ended_left, live_left = count_rows(d)
            left.append(ended_left - 50)
            assert 50 <= ended_left <= left[-2] + 50, (ended_left, left)
            assert live_left == 300 + len(more), live_left
            d.start()
            with d.connect(timeout=60) as c:
                found = observe(c, live + more + recent + old[::20])
                for i, t in enumerate(live):
                    assert found[t] == ("live", 1, "keep-%d" % i, None), found[t]
                for i, t in enumerate(more):
                    assert found[t] == ("live", 1, "more%d-%d" % (i // 10, i % 10), None), found[t]
                for t in recent:
                    assert found[t] == ("expired", "destroyed"), found[t]
                for t in old[::20]:
                    # purged (unknown now) or still there, ended
                    assert found[t] in (("error", S + "NotFound"), ("expired", "destroyed")), found[t]
        print("old ended sessions left after each kill: %s" % left[1:], flush=True)
        with d.connect(timeout=60) as c:
            # The next deep cleanup finishes the job.
            r = c.call(A + "Cleanup", {"kind": "deep"})
            assert r["purged"] >= left[-1], (r, left)
        d.stop()
        assert count_rows(d) == (50, 300 + len(more))
        integrity_check(d, "after the last deep cleanup")


def test_kill_during_reload():
    rng = random.Random(7)
    with Daemon(SETTINGS) as d:
        tokens = {}
        for round_no in range(5):
            with d.connect() as c:
                for t in create_many(c, 50, "r%d" % round_no, sync="r%d" % round_no):
                    tokens[t] = round_no
                # A valid new configuration, then reloads by signal and by
                # call while writes go on; the kill lands among them.
                d.write_config({"timeout.warning_threshold": 600 + round_no})
                c.send(A + "Reload")
                d.signal(signal.SIGHUP)
                with d.connect() as w:
                    w.send_raw(msg(S + "Create", {"user_id": "during"}))
                    time.sleep(rng.uniform(0, 0.01))
                    d.kill()
            integrity_check(d, "killed during reload %d" % round_no)
            d.start()
            with d.connect() as c:
                cfg = c.call(A + "GetConfig")["config"]
                assert cfg["timeout"]["warning_threshold"] == 600 + round_no, cfg["timeout"]
                found = observe(c, list(tokens))
                for t, r in tokens.items():
                    assert found[t][0] == "live" and found[t][2].startswith("r%d-" % r), found[t]
        d.stop()
        integrity_check(d, "after the clean stop")


run_tests([
    test_random_kills_lose_nothing_acknowledged,
    test_kill_during_writer_commits,
    test_kill_during_deep_cleanup,
    test_kill_during_reload,
])
