"""The wall clock jumping forward or back neither ends nor revives sessions.

The daemon's now is the wall clock read at start plus the monotonic time
elapsed since (daemon/clock.h). The daemon runs under libfaketime
(Debian's faketime package; skipped when it is missing) with the faked
offset read from a file the test rewrites (FAKETIME_TIMESTAMP_FILE,
FAKETIME_NO_CACHE=1) and the monotonic clock left alone
(DONT_FAKE_MONOTONIC=1): the test jumps the daemon's wall clock by days
while sessions live, validates, and lets the cleanup timers run, and checks
that nothing ends or comes back because of the jump. A restart reads the
wall clock anew.
"""

import os
import time

from harness import Daemon, Skip, VarlinkError, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."

LIBFAKETIME = None
for lib in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/faketime/libfaketimeMT.so.1"):
    if os.path.exists(lib):
        LIBFAKETIME = lib
        break

DAY = 86400
# Sessions idle out after 2 s (grace 1 s); the regular cleanup runs every
# second and would end anything it believes expired.
SETTINGS = {
    "timeout.idle_timeout": 2,
    "timeout.expiration_grace": 1,
    "timeout.cleanup_grace": 1,
    "timeout.warning_threshold": 1,
    "cleanup.interval": 1,
    "cleanup.batch_interval": 2,
    "cleanup.deep_interval": 3,
    "cleanup.trigger_threshold": 1,
    "cleanup.max_expired_threshold": 100,
}


class FakeClockDaemon(Daemon):
    """A daemon whose wall clock is real time + the offset in a file."""

    def __init__(self, settings, offset=0):
        if LIBFAKETIME is None:
            raise Skip("libfaketime is not installed (apt-get install faketime)")
        self.clock_file = None
        self.offset_value = offset
        super().__init__(settings, wait=False)
        self.wait_ready()

    def environ(self):
        env = super().environ()
        if self.clock_file is None:
            self.clock_file = os.path.join(self.tmp, "faketime")
            self.set_offset(self.offset_value)
        preload = env.get("LD_PRELOAD")
        env.update({
            "LD_PRELOAD": LIBFAKETIME + (" " + preload if preload else ""),
            "FAKETIME_TIMESTAMP_FILE": self.clock_file,
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
            # The sanitizer runtime wants to come first; libfaketime only
            # wraps clock calls.
            "ASAN_OPTIONS": ":".join(x for x in (env.get("ASAN_OPTIONS"), "verify_asan_link_order=0") if x),
        })
        return env

    def set_offset(self, seconds):
        """Jumps the daemon's wall clock to real time + seconds."""
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+ds\n" % seconds)
        os.rename(tmp, self.clock_file)


def expired(c, token):
    try:
        c.call(S + "Validate", {"token": token, "touch": False})
    except VarlinkError as e:
        assert e.error == S + "Expired", e
        return e.parameters["reason"]
    return None


def regular_runs(c):
    return c.call(A + "Status")["status"]["jobs"]["regular"]["runs"]


def test_faked_clock_reaches_the_daemon():
    # The premise: without the rule, this offset is what the daemon would
    # see. A daemon started with the clock 10 days ahead stamps its
    # sessions 10 days ahead (a start reads the wall clock).
    with FakeClockDaemon({}, offset=10 * DAY) as d, d.connect() as c:
        created = c.call(S + "Create", {"user_id": "alice"})["session"]["created_at"]
        assert abs(created - (time.time() + 10 * DAY)) < 60, (created, time.time())
        d.stop()


def test_jump_forward_ends_nothing():
    with FakeClockDaemon(SETTINGS) as d, d.connect() as c:
        token = c.call(S + "Create", {"user_id": "alice"})["token"]
        before = c.call(S + "Validate", {"token": token})
        runs = regular_runs(c)
        d.set_offset(30 * DAY)
        # Three cleanup runs after the jump, each a chance to end it (kept
        # busy meanwhile: it would idle out for real after 2 s)...
        def cleanups_ran():
            assert c.call(S + "Heartbeat", {"token": token})["expires_in"] <= 2
            return regular_runs(c) >= runs + 3
        wait_for(cleanups_ran, timeout=15, interval=0.3, what="three regular cleanups")
        for _ in range(3):
            v = c.call(S + "Validate", {"token": token})  # touches: stays alive
            assert v["state"] == "active", v
            time.sleep(0.5)
        # ...and its times did not jump either.
        assert abs(v["session"]["last_activity"] - before["session"]["last_activity"]) < 10, (v, before)
        assert c.call(A + "Status")["status"]["sessions_awaiting_cleanup"] == 0
        ended = [s for s in c.call(A + "ListSessions", {"include_ended": True})["sessions"]
                 if s["state"] == "ended"]
        assert ended == [], ended
        d.stop()


def test_jump_back_revives_nothing():
    with FakeClockDaemon(SETTINGS) as d, d.connect() as c:
        idle = c.call(S + "Create", {"user_id": "bob"})["token"]
        keep = c.call(S + "Create", {"user_id": "carol"})["token"]
        destroyed = c.call(S + "Create", {"user_id": "dave"})["token"]
        c.call(S + "Destroy", {"token": destroyed})
        # bob idles out for real (2 s + 1 s grace); carol keeps busy.
        def bob_gone():
            c.call(S + "Heartbeat", {"token": keep})
            return expired(c, idle) == "idle"
        wait_for(bob_gone, timeout=15, interval=0.3, what="the idle session to expire")
        # The clock goes back a day: bob's last activity is "in the future"
        # by the wall clock, yet he stays expired; nothing comes back.
        d.set_offset(-DAY)
        for _ in range(4):
            c.call(S + "Heartbeat", {"token": keep})
            assert expired(c, idle) == "idle"
            assert expired(c, destroyed) == "destroyed"
            time.sleep(0.5)
        assert c.call(S + "Validate", {"token": keep})["state"] == "active"
        # Cleanup ends bob by the daemon's clock, not the wall clock's.
        wait_for(lambda: any(s["user_id"] == "bob" and s["state"] == "ended" for s in
                             c.call(A + "ListSessions", {"include_ended": True})["sessions"]),
                 timeout=15, what="cleanup to end the idle session")
        # Forward and back again within a second: still the same answers.
        d.set_offset(DAY)
        assert expired(c, idle) == "idle"
        assert c.call(S + "Heartbeat", {"token": keep})["expires_in"] <= 2
        d.set_offset(0)
        assert c.call(S + "Validate", {"token": keep})["state"] == "active"
        d.stop()


def test_restart_reads_the_wall_clock_anew():
    long = dict(SETTINGS, **{"timeout.idle_timeout": 1200, "timeout.warning_threshold": 60,
                             "cleanup.interval": 3600, "cleanup.batch_interval": 7200,
                             "cleanup.deep_interval": 86400, "cleanup.trigger_threshold": 100})
    with FakeClockDaemon(long) as d:
        with d.connect() as c:
            token = c.call(S + "Create", {"user_id": "erin"})["token"]
            d.set_offset(2 * 3600)
            assert c.call(S + "Validate", {"token": token, "touch": False})["state"] == "active"
        # The jump is real as far as the next start can tell: two hours
        # later, a 20-minute idle timeout has passed.
        d.stop()
        d.start()
        with d.connect() as c:
            assert expired(c, token) == "idle"
        d.stop()


run_tests([
    test_faked_clock_reaches_the_daemon,
    test_jump_forward_ends_nothing,
    test_jump_back_revives_nothing,
    test_restart_reads_the_wall_clock_anew,
])
