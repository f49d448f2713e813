"""Bulk ends in steps (issue 15): DestroyUser and Admin.TerminateUser of a
user with thousands of sessions work in time-capped steps, the loop serving
other clients between them, and answer when done; a DestroyUser cut by
kill -9 leaves a consistent store that is visibly partial, and calling it
again after the restart finishes the job.

No timing thresholds here: the latency figures are the benchmark's
(sessiond-bench --stall). What is checked is the order of answers (another
client is served while the job is still running, which a call ending 8,000
sessions in one piece could not allow) and the states in the store.
"""

import os
import shutil
import sqlite3
import tempfile
import threading

from harness import LONG_LIVED_SETTINGS, Daemon, VarlinkError, create_pipelined, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

SETTINGS = LONG_LIVED_SETTINGS


def create_many(d, user, n, chunk=500):
    """n sessions of user, pipelined; returns their tokens."""
    return [p["token"] for p in create_pipelined(d, [user], n, chunk)]


def live_count(d, user):
    return d.call(A + "Status")["status"]["sessions_active"] if user is None else \
        len(d.call(S + "ListUser", {"user_id": user})["sessions"])


def expect_expired(d, token, reason):
    try:
        d.call(S + "Validate", {"token": token})
    except VarlinkError as e:
        assert e.error == S + "Expired" and e.parameters["reason"] == reason, e
        return
    raise AssertionError("token still valid")


def bulk_served_between_steps(method, params, reason):
    n = 8000
    with Daemon(SETTINGS) as d:
        big = create_many(d, "big", n)
        small = create_many(d, "small", 2)
        with d.connect(timeout=60) as a, d.connect() as b:
            a.send(method, params)
            # Served while the job runs: the job has ended some, not all.
            mid = len(b.call(A + "ListSessions", {"user_id": "big", "limit": 100000})["sessions"])
            assert 0 < mid < n, mid
            assert len(b.call(S + "ListUser", {"user_id": "small"})["sessions"]) == 2
            reply = a.recv()
        assert "error" not in reply, reply
        expect = n - (1 if "except_token" in params else 0)
        assert reply["parameters"]["count"] == expect, reply
        left = d.call(S + "ListUser", {"user_id": "big"})["sessions"]
        assert len(left) == n - expect
        expect_expired(d, big[1], reason)
        expect_expired(d, big[-1], reason)
        d.call(S + "Validate", {"token": small[0]})
        # Again: nothing left to end (the excepted session stays).
        assert d.call(method, params)["count"] == 0
        d.stop()
        return big


def test_destroy_user_in_steps():
    bulk_served_between_steps(S + "DestroyUser", {"user_id": "big"}, "destroyed")


def test_terminate_user_in_steps():
    bulk_served_between_steps(A + "TerminateUser", {"user_id": "big"}, "terminated")


def test_destroy_user_except_in_steps():
    n = 3000
    with Daemon(SETTINGS) as d:
        big = create_many(d, "big", n)
        keep = big[n // 2]
        r = d.call(S + "DestroyUser", {"user_id": "big", "except_token": keep})
        assert r["count"] == n - 1, r
        d.call(S + "Validate", {"token": keep})
        expect_expired(d, big[0], "destroyed")
        d.stop()


def test_small_user_answered_at_once():
    with Daemon(SETTINGS) as d:
        t = create_many(d, "alice", 3)
        assert d.call(S + "DestroyUser", {"user_id": "alice", "except_token": t[0]})["count"] == 2
        assert d.call(A + "TerminateUser", {"user_id": "alice"})["count"] == 1
        assert d.call(A + "TerminateUser", {"user_id": "nobody"})["count"] == 0
        d.stop()


def test_caller_gone_job_finishes():
    n = 4000
    with Daemon(SETTINGS) as d:
        create_many(d, "big", n)
        with d.connect() as a:
            a.send(S + "DestroyUser", {"user_id": "big"})
            wait_for(lambda: live_count(d, None) < n, what="the job started")
        # The caller hung up; the job goes on to its end.
        wait_for(lambda: live_count(d, "big") == 0, timeout=60, what="the job finished")
        d.stop()


def test_clean_stop_finishes_the_job():
    """SIGTERM while a DestroyUser runs: the daemon finishes it before it
    closes the store (the caller, whose connection closes, gets no reply)."""
    n = 8000
    with Daemon(SETTINGS) as d:
        create_many(d, "big", n)
        with d.connect(timeout=60) as a:
            a.send(S + "DestroyUser", {"user_id": "big"})
            wait_for(lambda: d.call(A + "Status")["status"]["sessions_active"] < n, what="the job started")
            d.stop()
        d.start()
        assert live_count(d, "big") == 0
        d.stop()


def test_kill_during_destroy_user():
    """kill -9 in the middle of a DestroyUser of 20,000 sessions while
    another client creates sessions: the store passes its integrity check,
    every session of the user is live or ended with reason destroyed (never
    anything else), every acknowledged create of the other client is there
    and live, and a second DestroyUser after the restart ends exactly the
    rest."""
    n = 20000
    with Daemon(SETTINGS) as d:
        create_many(d, "big", n)
        acked = []
        stop = threading.Event()

        def other():
            try:
                with d.connect() as c:
                    while not stop.is_set():
                        acked.append(c.call(S + "Create", {"user_id": "other"})["token"])
            except (OSError, ConnectionError, ValueError):
                pass  # the kill

        t = threading.Thread(target=other)
        t.start()
        with d.connect(timeout=60) as a:
            a.send(S + "DestroyUser", {"user_id": "big"})
            # Well into the job (memory runs a unit ahead of the store),
            # with the other client busy.
            wait_for(lambda: len(acked) > 10 and
                     d.call(A + "Status")["status"]["sessions_active"] < n * 3 // 4 + len(acked),
                     timeout=60, what="the job under way")
            d.kill()
        stop.set()
        t.join()

        copy = tempfile.mkdtemp(prefix="sessiond-bulk-")
        try:
            for suffix in ("", "-wal"):
                if os.path.exists(d.database + suffix):
                    shutil.copy(d.database + suffix, os.path.join(copy, "c.db" + suffix))
            db = sqlite3.connect(os.path.join(copy, "c.db"))
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = db.execute("SELECT ended_at IS NULL, end_reason, count(*) FROM sessions "
                              "WHERE user_id = 'big' GROUP BY 1, 2").fetchall()
            states = {(bool(live), reason): k for live, reason, k in rows}
            assert set(states) <= {(True, None), (False, "destroyed")}, states
            assert sum(states.values()) == n
            live = states.get((True, None), 0)
            assert live < n, live  # some steps were committed before the kill
            live = states.get((True, None), 0)
            print("killed with %d of %d sessions still live, %d other creates acknowledged" % (live, n, len(acked)))
            # Audit rows went with their ends, in the same units.
            ended_audit = db.execute("SELECT count(*) FROM audit WHERE kind = 'ended' AND user_id = 'big'").fetchone()[0]
            assert ended_audit == n - live, (ended_audit, live)
            db.close()
        finally:
            shutil.rmtree(copy, ignore_errors=True)

        d.start()
        for tok in acked:
            d.call(S + "Validate", {"token": tok})
        assert live_count(d, "big") == live
        assert d.call(S + "DestroyUser", {"user_id": "big"})["count"] == live
        assert live_count(d, "big") == 0
        d.stop()


if __name__ == "__main__":
    run_tests([test_small_user_answered_at_once, test_destroy_user_in_steps, test_terminate_user_in_steps,
               test_destroy_user_except_in_steps, test_caller_gone_job_finishes,
               test_clean_stop_finishes_the_job, test_kill_during_destroy_user])
