"""Background jobs of the real daemon: the cleanup timers, the trigger, the
switches that stop them, retention purges and re-arming on reload.

Sessions here live two seconds (idle_timeout 2, expiration_grace 1,
cleanup_grace 1): three seconds after their last activity they await
cleanup. Each test waits for what the daemon reports (Status, ListSessions,
Audit) rather than for a fixed time.
"""

import json
import re
import socket
import sqlite3
import time

from harness import Daemon, VarlinkError, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

SHORT = {
    "timeout.idle_timeout": 2,
    "timeout.expiration_grace": 1,
    "timeout.cleanup_grace": 1,
    "timeout.warning_threshold": 1,
}
# Timers out of the way unless a test asks for them.
QUIET = {
    "cleanup.interval": 3600,
    "cleanup.batch_interval": 7200,
    "cleanup.deep_interval": 86400,
    "cleanup.trigger_threshold": 100000,
    "cleanup.max_expired_threshold": 100000,
}


def settings(**kw):
    s = dict(SHORT)
    s.update(QUIET)
    s.update({k.replace("__", "."): v for k, v in kw.items()})
    return s


def create_many(c, n, user="u", prefix=None):
    """Creates n sessions pipelined on one connection; returns their tokens."""
    msgs = []
    for i in range(n):
        params = {"user_id": user if prefix is None else "%s%d" % (prefix, i)}
        msgs.append(json.dumps({"method": S + "Create", "parameters": params}).encode() + b"\0")
    c.send_raw(b"".join(msgs))
    tokens = []
    for _ in range(n):
        r = c.recv()
        assert "error" not in r, r
        tokens.append(r["parameters"]["token"])
    return tokens


def status(c):
    return c.call(A + "Status")["status"]


def awaiting(c, n):
    return wait_for(lambda: status(c)["sessions_awaiting_cleanup"] == n, what="%d sessions awaiting cleanup" % n)


def ended(c, user=None):
    params = {"include_ended": True, "limit": 100000}
    if user:
        params["user_id"] = user
    return [s for s in c.call(A + "ListSessions", params)["sessions"] if s["state"] == "ended"]


def audit(c, **params):
    return c.call(A + "Audit", params)["entries"]


def poll_passed(c, since):
    """True once the trigger poll counted after `since` (Unix seconds)."""
    return (status(c)["cleanup"]["counted_at"] or 0) > since


# ---- regular cleanup ------------------------------------------------------------------------

def test_regular_timer_ends_idle_sessions():
    with Daemon(settings(cleanup__interval=1, cleanup__batch_interval=3600)) as d, d.connect() as c:
        tokens = create_many(c, 3)
        st = status(c)["jobs"]["regular"]
        assert st["enabled"] and st["interval"] == 1 and st["next_run"], st
        done = wait_for(lambda: len(ended(c)) == 3 and ended(c), timeout=15, what="the regular timer")
        assert {s["end_reason"] for s in done} == {"idle"}, done
        # ended at the session's end, not when cleanup came by
        assert all(s["ended_at"] == s["last_activity"] + 2 for s in done), done
        for t in tokens:
            err = None
            try:
                c.call(S + "Validate", {"token": t})
            except VarlinkError as e:
                err = e
            assert err and err.error == S + "Expired" and err.parameters["reason"] == "idle", err
        rows = audit(c, kind="ended")
        assert len(rows) == 3 and all(r["detail"]["reason"] == "idle" for r in rows), rows
        job = status(c)["jobs"]["regular"]
        assert job["runs"] >= 1 and job["last_run"] and "(timer)" in job["last_result"], job
        assert status(c)["sessions_awaiting_cleanup"] == 0


def test_regular_respects_batches():
    # batch_size 2, max_batches 2: a regular run ends at most 4.
    s = settings(cleanup__batch_size=2, cleanup__max_batches=2, features__background_cleanup=False)
    with Daemon(s) as d, d.connect() as c:
        create_many(c, 10, prefix="r")
        awaiting(c, 10)
        assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 4, "purged": 0}
        assert "more remain" in status(c)["jobs"]["regular"]["last_result"]
        assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 4, "purged": 0}
        assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 2, "purged": 0}
        assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 0, "purged": 0}
        assert len(ended(c)) == 10
        # batch cleanup has no max_batches: it ends everything in one run
        create_many(c, 7, prefix="b")
        awaiting(c, 7)
        assert c.call(A + "Cleanup", {"kind": "batch"}) == {"ended": 7, "purged": 0}


def test_trigger_starts_cleanup_early():
    # The regular timer is an hour away; the trigger does the work.
    s = settings(cleanup__trigger_threshold=5, cleanup__max_expired_threshold=10)
    with Daemon(s) as d, d.connect() as c:
        create_many(c, 4)
        awaiting(c, 4)
        seen = time.time()
        wait_for(lambda: poll_passed(c, seen + 1), what="two trigger polls")
        assert status(c)["sessions_awaiting_cleanup"] == 4, "below the threshold, nothing happens"
        assert status(c)["jobs"]["regular"]["runs"] == 0
        create_many(c, 2, user="v")
        wait_for(lambda: len(ended(c)) == 6, timeout=15, what="the trigger's cleanup")
        job = status(c)["jobs"]["regular"]
        assert job["runs"] == 1 and "(trigger)" in job["last_result"], job
        metrics = c.call(A + "Metrics")["metrics"]
        triggered = [m["value"] for m in metrics if m["name"] == "cleanup_triggered_total"]
        assert triggered == [1], triggered
        assert "trigger_threshold 5" in d.read_log()


def test_background_cleanup_off():
    s = settings(cleanup__interval=1, cleanup__batch_interval=2, cleanup__deep_interval=3,
                 cleanup__trigger_threshold=1, cleanup__max_expired_threshold=2,
                 features__background_cleanup=False)
    with Daemon(s) as d, d.connect() as c:
        jobs = status(c)["jobs"]
        for kind in ("regular", "batch", "deep"):
            assert not jobs[kind]["enabled"] and jobs[kind]["next_run"] is None, jobs[kind]
        create_many(c, 3)
        awaiting(c, 3)
        seen = time.time()
        wait_for(lambda: poll_passed(c, seen + 1), what="two trigger polls")
        st = status(c)
        assert st["sessions_awaiting_cleanup"] == 3 and ended(c) == [], st
        assert all(st["jobs"][k]["runs"] == 0 for k in ("regular", "batch", "deep")), st["jobs"]
        # the backlog still counts for alerts and health
        assert any(a["name"] == "cleanup_backlog" and a["state"] == "firing"
                   for a in c.call(A + "Alerts")["alerts"])
        # a manual cleanup still works
        assert c.call(A + "Cleanup", {"kind": "regular"}) == {"ended": 3, "purged": 0}
        assert len(ended(c)) == 3


def test_reload_rearms_timers():
    s = settings(features__background_cleanup=False)
    with Daemon(s) as d, d.connect() as c:
        create_many(c, 2)
        awaiting(c, 2)
        assert not status(c)["jobs"]["regular"]["enabled"]
        d.write_config({"features.background_cleanup": True, "cleanup.interval": 1,
                        "cleanup.batch_interval": 3600})
        assert c.call(A + "Reload") == {}
        job = status(c)["jobs"]["regular"]
        assert job["enabled"] and job["interval"] == 1 and job["next_run"], job
        wait_for(lambda: len(ended(c)) == 2, timeout=15, what="the re-armed regular timer")
        assert "Job regular: every 1s" in d.read_log()
        # switched off again: the timer stops
        d.write_config({"features.background_cleanup": False})
        assert c.call(A + "Reload") == {}
        job = status(c)["jobs"]["regular"]
        assert not job["enabled"] and job["next_run"] is None, job


# ---- batch cleanup: the per-user limit --------------------------------------------------------

def test_batch_enforces_lowered_limit():
    s = settings(cleanup__interval=1, cleanup__batch_interval=2, cleanup__deep_interval=3600,
                 timeout__idle_timeout=600, timeout__warning_threshold=60)
    with Daemon(s) as d, d.connect() as c:
        tokens = create_many(c, 5, user="carol")
        for t in tokens[2:]:
            time.sleep(1.05)  # distinct last_activity: the eviction order is defined
            c.call(S + "Heartbeat", {"token": t})
        d.write_config({"security.max_concurrent_per_user": 2})
        assert c.call(A + "Reload") == {}
        live = wait_for(lambda: (lambda l: len(l) == 2 and l)(
            c.call(S + "ListUser", {"user_id": "carol"})["sessions"]), timeout=15,
            what="the batch timer to enforce the lowered limit")
        # the two most recently active remain
        kept = {c.call(S + "Validate", {"token": t, "touch": False})["session"]["id"] for t in tokens[3:]}
        assert {s["id"] for s in live} == kept
        gone = ended(c, "carol")
        assert len(gone) == 3 and {s["end_reason"] for s in gone} == {"evicted"}, gone
        assert len(audit(c, kind="evicted", user_id="carol")) == 3
        assert "over the per-user limit" in status(c)["jobs"]["batch"]["last_result"]


def test_batch_lowered_limit_in_steps():
    # Three users of 2,000 sessions, the limit lowered to 150: 5,550
    # evictions in batches of 1,000, each batch in time-capped steps with
    # the loop serving others in between. Exactly the least recently active
    # go: each user keeps the 100 used again and the 50 newest.
    s = settings(cleanup__batch_size=1000, features__background_cleanup=False,
                 timeout__idle_timeout=600, timeout__warning_threshold=60,
                 security__max_concurrent_per_user=100000)
    users = ("lim0", "lim1", "lim2")
    with Daemon(s) as d, d.connect(timeout=60) as c, d.connect() as v:
        tokens = {u: create_many(c, 2000, user=u) for u in users}
        for u in users:
            for t in tokens[u][:100]:
                c.call(S + "Heartbeat", {"token": t})
        d.write_config({"security.max_concurrent_per_user": 150})
        assert c.call(A + "Reload") == {}
        other = create_many(v, 1, user="other")[0]
        c.send(A + "Cleanup", {"kind": "batch"})
        # Served while the run goes on (or after it, on a fast machine).
        assert v.call(S + "Validate", {"token": other})["state"] == "active"
        r = c.recv()
        assert r["parameters"] == {"ended": 3 * 1850, "purged": 0}, r
        for u in users:
            kept = {v.call(S + "Validate", {"token": t, "touch": False})["session"]["id"]
                    for t in tokens[u][:100] + tokens[u][-50:]}
            live = {x["id"] for x in c.call(S + "ListUser", {"user_id": u})["sessions"]}
            assert live == kept, (u, len(live), len(kept))
            gone = ended(c, u)
            assert len(gone) == 1850 and {x["end_reason"] for x in gone} == {"evicted"}, u
        assert len(audit(c, kind="evicted", limit=10000)) == 3 * 1850
        ev = [e for e in c.call(A + "Events")["events"] if e["kind"] == "cleanup"][-1]["detail"]
        assert ev["evicted"] == 3 * 1850 and ev["batches"] >= 6, ev
        assert "ended 0 sessions, 5550 over the per-user limit" in status(c)["jobs"]["batch"]["last_result"]


# ---- deep cleanup: retention ------------------------------------------------------------------

def age_database(path, days):
    """Moves every time in the database `days` into the past (the daemon is stopped)."""
    shift = days * 86400
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sessions SET created_at = created_at - ?, last_activity = last_activity - ?, "
                   "renewed_at = renewed_at - ?, ended_at = ended_at - ? WHERE ended_at IS NOT NULL",
                   (shift, shift, shift, shift))
        db.execute("UPDATE audit SET time = time - ?", (shift,))
    n_sessions = db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone()[0]
    n_audit = db.execute("SELECT count(*) FROM audit").fetchone()[0]
    db.close()
    return n_sessions, n_audit


def make_ended(c, n, user):
    tokens = create_many(c, n, user=user)
    for t in tokens:
        c.call(S + "Destroy", {"token": t})


def test_deep_cleanup_purges_past_retention():
    s = settings(cleanup__expired_retention_days=1, cleanup__audit_retention_days=2,
                 cleanup__batch_size=2, features__background_cleanup=False)
    with Daemon(s) as d:
        with d.connect() as c:
            make_ended(c, 3, "old")
        d.stop()
        old_sessions, old_audit = age_database(d.database, 3)
        assert old_sessions == 3 and old_audit == 6  # created and ended rows
        d.start()
        with d.connect() as c:
            make_ended(c, 2, "new")
            live = create_many(c, 1, user="live")
            # ended 3 days ago: past both retentions; the new ones stay
            r = c.call(A + "Cleanup", {"kind": "deep"})
            assert r == {"ended": 0, "purged": old_sessions + old_audit}, r
            users = {s["user_id"] for s in ended(c)}
            assert users == {"new"}, users
            assert {e["user_id"] for e in audit(c, limit=10000)} == {"new", "live"}
            assert c.call(S + "Validate", {"token": live[0]})["state"] == "active"
            job = status(c)["jobs"]["deep"]
            assert re.fullmatch(r"purged 3 sessions and 6 audit rows; store compacted; integrity ok "
                                r"\(maintenance \d+ ms; longest step: purge \d+\.\d ms, maintenance \d+\.\d ms\) "
                                r"\(manual\)",
                                job["last_result"]), job
            assert job["last_longest_step_us"] > 0, job
            assert c.call(A + "Cleanup", {"kind": "deep"}) == {"ended": 0, "purged": 0}


def test_retention_days_apply_separately():
    # ended sessions kept 5 days, audit rows 1 day: rows aged 2 days lose
    # their audit rows only.
    s = settings(cleanup__expired_retention_days=5, cleanup__audit_retention_days=1,
                 features__background_cleanup=False)
    with Daemon(s) as d:
        with d.connect() as c:
            make_ended(c, 2, "old")
        d.stop()
        age_database(d.database, 2)
        d.start()
        with d.connect() as c:
            assert c.call(A + "Cleanup", {"kind": "deep"}) == {"ended": 0, "purged": 4}
            assert len(ended(c)) == 2
            assert audit(c) == []


def test_deep_timer_purges():
    s = settings(cleanup__interval=1, cleanup__batch_interval=2, cleanup__deep_interval=3,
                 cleanup__expired_retention_days=1, cleanup__audit_retention_days=1)
    with Daemon(s) as d:
        with d.connect() as c:
            make_ended(c, 2, "old")
        d.stop()
        age_database(d.database, 2)
        d.start()
        with d.connect() as c:
            wait_for(lambda: ended(c) == [] and status(c)["jobs"]["deep"]["runs"] >= 1, timeout=20,
                     what="the deep timer")
            job = status(c)["jobs"]["deep"]
            assert "integrity ok (maintenance" in job["last_result"] and job["last_result"].endswith("(timer)"), job
            assert audit(c, user_id="old") == []


def test_deep_purge_in_steps():
    # 3,000 ended sessions and 6,000 audit rows past retention. The purge
    # begins with small steps and at most doubles them (batch_size 1000 is
    # the ceiling), so it takes several steps, each reported; everything
    # old goes, nothing new does.
    s = settings(cleanup__expired_retention_days=1, cleanup__audit_retention_days=1,
                 cleanup__batch_size=1000, features__background_cleanup=False,
                 security__max_concurrent_per_user=100000)
    with Daemon(s) as d:
        with d.connect(timeout=60) as c:
            create_many(c, 3000, user="old")
            assert c.call(S + "DestroyUser", {"user_id": "old"}) == {"count": 3000}
        d.stop()
        assert age_database(d.database, 2) == (3000, 6000)
        d.start()
        with d.connect(timeout=60) as c:
            live = create_many(c, 1, user="live")
            assert c.call(A + "Cleanup", {"kind": "deep"}) == {"ended": 0, "purged": 9000}
            assert ended(c) == []
            assert audit(c, user_id="old") == []
            assert c.call(S + "Validate", {"token": live[0]})["state"] == "active"
            ev = [e for e in c.call(A + "Events")["events"] if e["kind"] == "cleanup"][-1]
            detail = ev["detail"]
            assert detail["purged_sessions"] == 3000 and detail["purged_audit"] == 6000, ev
            assert detail["batches"] >= 8, ev  # 16, 32, ... 1000 rows a table at most
            assert detail["longest_step_us"] > 0, ev
            assert status(c)["jobs"]["deep"]["last_longest_step_us"] > 0


# ---- requests are answered while a cleanup runs ---------------------------------------------

def test_requests_answered_during_cleanup():
    # 5000 sessions to end in batches of 10: 500 loop iterations. A Validate
    # sent once the cleanup started is answered before the cleanup is.
    s = settings(cleanup__batch_size=10, features__background_cleanup=False,
                 security__max_concurrent_per_user=100000)
    with Daemon(s) as d, d.connect(timeout=60) as c, d.connect() as v:
        create_many(c, 5000)
        awaiting(c, 5000)
        token = create_many(v, 1, user="busy")[0]
        c.send(A + "Cleanup", {"kind": "batch"})
        wait_for(lambda: status(v)["cleanup"]["running"] == "batch", what="the cleanup to start")
        for _ in range(20):
            assert v.call(S + "Validate", {"token": token})["state"] == "active"
        # twenty validations later the cleanup is still at work: it yields
        # between its batches instead of holding the loop
        st = status(v)
        assert st["cleanup"]["running"] == "batch", st["cleanup"]
        assert 0 < 5000 - st["sessions_awaiting_cleanup"] < 5000, st
        # The busy session stays busy until the cleanup answers (its idle
        # timeout is 2 s: a slow run, under the sanitizers on a loaded
        # machine, once ended it too).
        c.sock.settimeout(0.2)
        while True:
            try:
                r = c.recv()
                break
            except socket.timeout:
                assert v.call(S + "Validate", {"token": token})["state"] == "active"
        assert r["parameters"] == {"ended": 5000, "purged": 0}, r


def test_reload_lowers_batch_size_mid_batch():
    # A batch of 4000 spans many time-capped steps; a reload to 10 while it
    # runs changes the next batch, not the one in progress (which once hit
    # an assertion: the sessions ended so far were over the new size).
    s = settings(cleanup__batch_size=4000, features__background_cleanup=False,
                 security__max_concurrent_per_user=100000)
    with Daemon(s) as d, d.connect(timeout=60) as c, d.connect() as v:
        create_many(c, 5000)
        awaiting(c, 5000)
        c.send(A + "Cleanup", {"kind": "batch"})
        wait_for(lambda: status(v)["sessions_awaiting_cleanup"] < 5000, interval=0.002,
                 what="the first sessions to be ended")
        d.write_config({"cleanup.batch_size": 10})
        assert v.call(A + "Reload") == {}
        r = c.recv()
        assert r["parameters"] == {"ended": 5000, "purged": 0}, r
        assert status(v)["sessions_awaiting_cleanup"] == 0


def test_cleanup_arguments():
    with Daemon(settings()) as d, d.connect() as c:
        for bad in ("weekly", "", "Regular"):
            try:
                c.call(A + "Cleanup", {"kind": bad})
                raise AssertionError("accepted kind %r" % bad)
            except VarlinkError as e:
                assert e.error == A + "InvalidArgument" and e.parameters["field"] == "kind", e
        for params in ({}, {"kind": 3}):
            try:
                c.call(A + "Cleanup", params)
                raise AssertionError("accepted %r" % params)
            except VarlinkError as e:
                assert e.error == "org.varlink.service.InvalidParameter", e
        p = d.sessionctl("cleanup", "batch", check=0)
        assert p.stdout.strip() == "Batch cleanup: 0 sessions ended, 0 rows purged.", p.stdout


def test_stop_during_cleanup():
    # A daemon stopped in the middle of a long cleanup stops promptly, keeps
    # what was committed, and the rest is cleaned after the restart.
    s = settings(cleanup__batch_size=5, features__background_cleanup=False,
                 security__max_concurrent_per_user=100000)
    with Daemon(s) as d:
        with d.connect() as c:
            create_many(c, 2000)
            awaiting(c, 2000)
            c.send(A + "Cleanup", {"kind": "batch"})
            with d.connect() as w:
                wait_for(lambda: status(w)["cleanup"]["running"] == "batch", what="the run to start")
            d.stop()
            assert c.recv_raw() in (None, b'{"error":"io.sessiond.Session.StorageError","parameters":'
                                          b'{"reason":"the daemon is stopping"}}')
        d.start()
        with d.connect() as c:
            n_ended = len(ended(c))
            assert status(c)["sessions_awaiting_cleanup"] == 2000 - n_ended
            r = c.call(A + "Cleanup", {"kind": "batch"})
            assert r["ended"] == 2000 - n_ended, (r, n_ended)


run_tests([
    test_regular_timer_ends_idle_sessions,
    test_regular_respects_batches,
    test_trigger_starts_cleanup_early,
    test_background_cleanup_off,
    test_reload_rearms_timers,
    test_batch_enforces_lowered_limit,
    test_batch_lowered_limit_in_steps,
    test_deep_cleanup_purges_past_retention,
    test_retention_days_apply_separately,
    test_deep_timer_purges,
    test_deep_purge_in_steps,
    test_requests_answered_during_cleanup,
    test_reload_lowers_batch_size_mid_batch,
    test_cleanup_arguments,
    test_stop_during_cleanup,
])
