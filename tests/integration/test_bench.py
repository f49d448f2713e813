"""sessiond-bench against the real daemon: short smoke runs (a few hundred
requests) of each operation, its --json report, that the sessions it makes
are real, that error replies are counted by name, and its failures (bad
usage, no daemon, a daemon that dies mid-run).

Nothing here measures speed: the numbers in the report are only checked for
consistency (p50 <= p99 <= max, counts adding up).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

from harness import Daemon, Skip, run_tests

BENCH = os.environ.get("SESSIOND_BENCH", "sessiond-bench")


def bench(socket, *args, check=0, timeout=60):
    p = subprocess.run([BENCH, "-s", socket, "--timeout", "10"] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError("sessiond-bench %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), p.returncode, check, p.stdout, p.stderr))
    return p


def report(p):
    """The JSON object on the last line of stdout."""
    last = p.stdout.strip().splitlines()[-1]
    r = json.loads(last)
    assert isinstance(r, dict), last
    return r


def check_consistent(r, op, requests):
    assert r["op"] == op, r
    assert r["requests"] == requests, r
    assert r["creates"] + r["validates"] + r["destroys"] == requests, r
    assert r["rps"] > 0, r
    assert r["duration_s"] > 0, r
    assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["max_us"], r
    assert r["client_user_s"] >= 0 and r["client_sys_s"] >= 0, r
    assert r["errors"] == sum(r["errors_by_name"].values()), r


def test_create():
    with Daemon() as d:
        p = bench(d.socket, "-o", "create", "-n", "300", "-c", "4", "--json")
        r = report(p)
        check_consistent(r, "create", 300)
        assert r["creates"] == 300 and r["errors"] == 0, r
        # the text report for people comes first
        assert "rps:" in p.stdout and "latency:" in p.stdout, p.stdout
        # the sessions are real: with three users, each of them has some
        p = bench(d.socket, "-o", "create", "-n", "60", "-c", "3", "--users", "3", "--json")
        assert report(p)["errors"] == 0, p.stdout
        with d.connect() as c:
            for u in range(3):
                sessions = c.call("io.sessiond.Session.ListUser", {"user_id": "bench-user-%d" % u})["sessions"]
                assert len(sessions) >= 1, (u, sessions)


def test_validate_population():
    with Daemon() as d:
        # 100 sessions over 50 users: bench-user-K holds sessions K and K+50
        p = bench(d.socket, "-o", "validate", "-n", "400", "-c", "5", "--sessions", "100",
                  "--users", "50", "--json")
        r = report(p)
        check_consistent(r, "validate", 400)
        assert r["validates"] == 400 and r["errors"] == 0, r
        assert r["sessions"] == 100 and r["live_sessions"] == 100, r
        assert r["setup_s"] > 0, r
        with d.connect() as c:
            sessions = c.call("io.sessiond.Session.ListUser", {"user_id": "bench-user-7"})["sessions"]
        assert len(sessions) == 2, sessions
        # the fingerprint the bench sends is a real client's
        assert sessions[0]["user_agent"].startswith("Mozilla/5.0"), sessions[0]
        assert sessions[0]["ip"] == "10.0.0.7", sessions[0]


def test_mixed():
    with Daemon() as d:
        p = bench(d.socket, "-o", "mixed", "-n", "600", "-c", "6", "--sessions", "200",
                  "--warmup", "50", "--json")
        r = report(p)
        check_consistent(r, "mixed", 600)
        # a correct daemon answers every request of a mixed run
        assert r["errors"] == 0, r
        assert r["validates"] > r["creates"] > 0, r
        assert r["destroys"] > 0, r
        assert r["warmup"] == 50, r


def test_errors_counted_by_name():
    # A per-user limit of 1 and all sessions on one user: creating the
    # population evicts all but the last, so validations of the others fail.
    with Daemon({"security.max_concurrent_per_user": 1}) as d:
        p = bench(d.socket, "-o", "validate", "-n", "200", "-c", "2", "--sessions", "20",
                  "--users", "1", "--json")
        r = report(p)
        check_consistent(r, "validate", 200)
        assert r["errors"] > 0, r
        names = r["errors_by_name"]
        assert all(n.startswith("io.sessiond.Session.") for n in names), names
        # the text report names them too
        for n in names:
            assert n in p.stdout, p.stdout


def test_window():
    # SIGUSR1 opens a window and closes it; its requests are reported apart
    with Daemon() as d:
        proc = subprocess.Popen([BENCH, "-s", d.socket, "-o", "validate", "-n", "200000", "-c", "4",
                                 "--sessions", "100", "--timeout", "10", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            while line and "timed phase started" not in line:
                line = proc.stderr.readline()
            assert line, "the bench never started its timed phase"
            proc.send_signal(signal.SIGUSR1)
            assert "window opened" in proc.stderr.readline()
            # let some requests through the window, then close it
            with d.connect() as c:
                for _ in range(20):
                    c.call("org.varlink.service.GetInfo")
            proc.send_signal(signal.SIGUSR1)
            assert "window closed" in proc.stderr.readline()
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (out, err)
        r = json.loads(out.strip().splitlines()[-1])
        check_consistent(r, "validate", 200000)
        assert r["windows"] == 1, r
        assert 0 < r["window_requests"] < r["requests"], r
        assert r["window_errors"] == 0, r
        assert 0 < r["window_p50_us"] <= r["window_p99_us"] <= r["window_max_us"] <= r["max_us"], r
        assert "window:" in out, out


def wait_note(proc, text):
    line = proc.stderr.readline()
    while line and text not in line:
        line = proc.stderr.readline()
    assert line, "sessiond-bench never said %r" % text


def test_windows_apart_and_stop():
    # two windows, each reported apart; SIGUSR2 ends the run long before -n
    with Daemon() as d:
        proc = subprocess.Popen([BENCH, "-s", d.socket, "-o", "validate", "-n", "50000000", "-c", "4",
                                 "--sessions", "100", "--timeout", "10", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_note(proc, "timed phase started")
            for _ in range(2):
                proc.send_signal(signal.SIGUSR1)
                wait_note(proc, "window opened")
                with d.connect() as c:
                    for _ in range(20):
                        c.call("org.varlink.service.GetInfo")
                proc.send_signal(signal.SIGUSR1)
                wait_note(proc, "window closed")
            proc.send_signal(signal.SIGUSR2)
            wait_note(proc, "stopping")
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, (out, err)
        r = json.loads(out.strip().splitlines()[-1])
        assert 0 < r["requests"] < 50000000, r
        check_consistent(r, "validate", r["requests"])
        assert r["windows"] == 2, r
        each = r["window_list"]
        assert [w["window"] for w in each] == [1, 2], each
        assert sum(w["requests"] for w in each) == r["window_requests"], r
        for w in each:
            assert w["requests"] > 0 and w["errors"] == 0, w
            assert 0 < w["p50_us"] <= w["p99_us"] <= w["max_us"] <= r["window_max_us"], w
        assert "window 1:" in out and "window 2:" in out, out


def test_stalls_mode_runs():
    # bench-vs-redis --stalls at toy sizes: it fills a daemon, runs every
    # heavy operation beside a quiet window and prints the table (the
    # figures themselves are for the README, not for a test).
    src = os.environ.get("MESON_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
    build = os.environ.get("MESON_BUILD_ROOT", os.path.join(src, "build"))
    p = subprocess.run([sys.executable, os.path.join(src, "tools", "bench-vs-redis"), "--build-dir", build,
                        "--stalls", "--stall-rounds", "1", "--stall-sessions", "400", "--stall-user", "300",
                        "--stall-clients", "2", "--stall-quiet", "0.1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout
    assert "| operation | its time | quiet p50 / p99 / max | during p50 / p99 / max | requests during |" in out, out
    for op in ("list 100k (sessionctl, paged)", "ListSessions 100k (one call)", "audit 10k (sessionctl, paged)",
               "Audit 10k (one call)", "analytics", "ListUser 300 (one call)", "terminate-user 300",
               "DestroyUser 300", "deep cleanup"):
        assert ("| %s | " % op) in out, (op, out)
    # every operation did its work: 300 sessions listed, ended and purged
    assert "[300 sessions" in out and "[300 ended]" in out, out
    assert "purged 300 sessions and 600 audit rows" in out, out
    assert "Targets of issue 15" in out, out


def test_postgres_mode_runs():
    # bench-vs-redis --postgres at toy sizes: a throwaway PostgreSQL, one
    # daemon, three daemons on one database and the plain session table
    # under pgbench, and the table of medians (no figure is checked: they
    # are for the README, not for a test).
    src = os.environ.get("MESON_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
    build = os.environ.get("MESON_BUILD_ROOT", os.path.join(src, "build"))
    bindirs = ["/usr/lib/postgresql/15/bin"] + (
        [os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")]
        if os.path.isdir("/usr/lib/postgresql") else [])
    if not any(all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "pgbench", "psql"))
               for d in bindirs):
        raise Skip("no PostgreSQL binaries (initdb, pg_ctl, pgbench, psql)")
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        raise Skip("no redis-server / redis-benchmark (the mode runs the redis rounds too)")
    p = subprocess.run([sys.executable, os.path.join(src, "tools", "bench-vs-redis"), "--build-dir", build,
                        "--postgres", "--rounds", "2", "--requests", "300", "--clients", "6", "--sessions", "60"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout
    assert ("| operation | 1 sessiond rps | 3 sessionds rps | plain table (pgbench) tps | 3 daemons / table | "
            "1 daemon / table |") in out, out
    assert "| create (per-user limit 5) vs INSERT | " in out, out
    assert "| validate (cached) vs SELECT + UPDATE | " in out, out
    # every column ran in every round, without an error
    for line in ("1 daemon create", "3 daemons create", "table INSERT", "1 daemon validate", "3 daemons validate",
                 "table SELECT+UPDATE"):
        assert out.count(line) == 2, (line, out)
    assert "Errors: sessiond-bench create 0 / 0, validate 0 / 0" in out, out
    assert "pgbench failed transactions: INSERT 0, SELECT+UPDATE 0" in out, out
    assert "Targets of issue 11 (same run;" in out, out
    # the per-user limit (5) held on both stores
    m = re.search(r"Most live sessions of one user at the end: 1 daemon (\d+), 3 daemons (\d+) \(limit 5\)", out)
    assert m and 1 <= int(m.group(1)) <= 5 and 1 <= int(m.group(2)) <= 5, out


def test_postgres_misses_mode_runs():
    # bench-vs-redis --postgres-misses at toy sizes: one daemon on a
    # throwaway PostgreSQL, known clients alone and inside a flood of
    # unknown tokens, and the table (figures for the README only).
    src = os.environ.get("MESON_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
    build = os.environ.get("MESON_BUILD_ROOT", os.path.join(src, "build"))
    if not any(os.access(os.path.join(d, "pg_ctl"), os.X_OK) for d in
               [os.path.join("/usr/lib/postgresql", v, "bin") for v in
                (os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else [])]):
        raise Skip("no PostgreSQL binaries")
    p = subprocess.run([sys.executable, os.path.join(src, "tools", "bench-vs-redis"), "--build-dir", build,
                        "--postgres-misses", "--rounds", "1", "--requests", "300", "--sessions", "100"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout
    assert "Validate of unknown tokens on PostgreSQL (1 daemon)" in out, out
    assert re.search(r"^this build +\d+ +\d+ \| +\d+ ", out, re.M), out


def test_no_window():
    # without SIGUSR1 the report has no window fields at all
    with Daemon() as d:
        r = report(bench(d.socket, "-o", "create", "-n", "50", "-c", "2", "--json"))
        assert "windows" not in r and "window_p99_us" not in r, r


def test_tokens_across_restart():
    # a population saved after the setup validates after a daemon restart
    with Daemon() as d:
        path = os.path.join(d.tmp, "tokens")
        r = report(bench(d.socket, "-o", "create", "-n", "0", "--sessions", "100", "-c", "4",
                         "--save-tokens", path, "--json"))
        assert r["requests"] == 0 and r["sessions"] == 100, r
        with open(path) as f:
            lines = f.read().splitlines()
        assert len(lines) == 100, lines[:3]
        user, token = lines[0].split(" ")
        assert int(user) >= 0 and len(token) >= 40, lines[0]
        d.restart()
        r = report(bench(d.socket, "-o", "validate", "-n", "300", "-c", "4", "--load-tokens", path, "--json"))
        check_consistent(r, "validate", 300)
        assert r["loaded_sessions"] == 100 and r["sessions"] == 0, r
        assert r["errors"] == 0, r


def test_bad_token_file():
    with Daemon() as d:
        path = os.path.join(d.tmp, "tokens")
        with open(path, "w") as f:
            f.write("1 goodtoken\nnot a line\n")
        p = bench(d.socket, "-o", "validate", "-n", "10", "--load-tokens", path, check=1)
        assert path + ":2:" in p.stderr, p.stderr
        with open(path, "w") as f:
            f.write("")
        p = bench(d.socket, "-o", "validate", "-n", "10", "--load-tokens", path, check=1)
        assert "holds no tokens" in p.stderr, p.stderr
        p = bench(d.socket, "-o", "validate", "-n", "10", "--load-tokens", path + ".missing", check=1)
        assert "cannot read the tokens" in p.stderr, p.stderr


def test_bad_usage():
    for args, word in ((["-o", "delete"], "unknown operation"),
                       (["-n", "-1"], "--requests"),
                       (["-c", "many"], "--connections"),
                       (["-o", "validate", "--sessions", "0"], "--sessions"),
                       (["surplus"], "unexpected argument"),
                       (["--load-tokens", "/x", "--sessions", "5"], "exclude each other"),
                       (["-o", "create", "--save-tokens", "/x"], "--save-tokens needs")):
        p = bench("/nonexistent/socket", *args, check=2)
        assert word in p.stderr, (args, p.stderr)
        assert p.stdout == "", p.stdout


def test_no_daemon():
    p = bench("/nonexistent/sessiond.sock", "-o", "create", "-n", "10", check=1)
    assert "cannot connect to /nonexistent/sessiond.sock" in p.stderr, p.stderr


def test_daemon_dies_mid_run():
    with Daemon() as d:
        proc = subprocess.Popen([BENCH, "-s", d.socket, "-o", "create", "-n", "100000000", "-c", "2",
                                 "--timeout", "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # wait until the load runs
            line = proc.stderr.readline()
            while line and "timed phase started" not in line:
                line = proc.stderr.readline()
            assert line, "the bench never started its timed phase"
            d.kill()
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1, (proc.returncode, out, err)
        assert "the daemon closed a connection" in err, err


run_tests([test_create, test_validate_population, test_mixed, test_errors_counted_by_name,
           test_window, test_windows_apart_and_stop, test_stalls_mode_runs, test_postgres_mode_runs, test_postgres_misses_mode_runs, test_no_window, test_tokens_across_restart, test_bad_token_file, test_bad_usage, test_no_daemon, test_daemon_dies_mid_run])
