"""The guide's fine print, over the real binaries: clean messages and honest
state.

Control characters in bad values are escaped in sessionctl's errors and in
the daemon's log; debug mode in production is a warning and a degraded note
in health; sync.localstorage_prefix is restricted; the buffer sizes have an
upper bound, and a reload that cannot allocate a buffer fails as a whole
(the old configuration stays and sessionctl reload prints why); an env file
reports every line's problem at once, with one message for every key that
is not a name; the fingerprint log line lists the changed fields cleanly.
"""

import os
import re
import resource
import subprocess

from harness import SESSIOND, SESSIONCTL, TIMEOUT, Daemon, run_tests, wait_for

S = "io.sessiond.Session."
A = "io.sessiond.Admin."
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")  # anything but \t \n


def assert_clean(text, what):
    """No control character but the newlines between lines (and tabs)."""
    assert not RAW_CONTROL.search(text), "%s holds a raw control character: %r" % (what, text)


def ctl(d, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SESSION")}
    environ.update(env or {})
    return subprocess.run([SESSIONCTL, "-s", d.socket, "-c", d.config] + list(args), capture_output=True,
                          text=True, timeout=TIMEOUT * 3, env=environ)


def write_env(d, text):
    with open(d.env_file, "w") as f:
        f.write(text)


def get_config(c):
    return c.call(A + "GetConfig")["config"]


def test_control_characters_escaped():
    with Daemon() as d, d.connect() as c:
        # sessionctl's own errors quote what was typed
        p = ctl(d, "config", "--set-env", "prod\x1b[2J\nx")
        assert p.returncode == 1, p
        assert "unknown environment 'prod\\x1b[2J\\x0ax'" in p.stderr, p.stderr
        assert_clean(p.stderr, "sessionctl config --set-env")
        p = ctl(d, "show", "id\x1b]0;owned\x07")
        assert p.returncode != 0 and "\\x1b]0;owned\\x07" in p.stderr, p
        assert_clean(p.stderr, "sessionctl show")

        # a bad value in the env file, reloaded: the daemon's log and
        # sessionctl reload show it escaped, each message on one line
        write_env(d, "SESSION_CLEANUP_BATCH_SIZE=1\x1b[31m\nSESSION_ENVIRONMENT='prod\x9b\x1b[2J'\n")
        p = ctl(d, "reload")
        assert p.returncode == 1, p
        assert "SESSION_CLEANUP_BATCH_SIZE: value '1\\x1b[31m' is not an integer" in p.stderr, p.stderr
        assert "value 'prod\\u009b\\x1b[2J' is not an environment" in p.stderr, p.stderr
        assert_clean(p.stderr, "sessionctl reload")
        log = d.read_log()
        assert_clean(log, "the daemon's log")
        assert re.search(r"SESSION_CLEANUP_BATCH_SIZE: value '1\\x1b\[31m' is not an integer\n", log), log
        # a newline inside a value cannot start a line of its own in the log
        d.write_config({"environment": '"testing\\nsessiond[error]: forged"'})
        write_env(d, "")
        assert ctl(d, "reload").returncode == 1
        log = d.read_log()
        assert "testing\\x0asessiond[error]: forged" in log, log
        assert not re.search(r"^sessiond\[error\]: forged", log, re.M), log
        assert c.call("org.varlink.service.GetInfo")["product"] == "sessiond"
        d.stop()


def test_debug_mode_in_production():
    production = {"environment": '"production"', "debug_mode": True}
    with Daemon(production) as d, d.connect() as c:
        p = ctl(d, "config", "--validate")
        assert p.returncode == 0, p
        assert "warning: Debug mode should be off in production" in p.stdout, p.stdout
        assert "configuration is valid (1 warning)" in p.stdout, p.stdout
        h = c.call(A + "Health")
        sec = h["components"]["security"]
        assert h["status"] == "degraded" and sec["status"] == "degraded", h
        assert sec["message"] == "debug mode is on in production (debug_mode = true)", sec
        assert sec["debug_mode"] is True, sec
        p = ctl(d, "health")
        assert p.returncode == 3 and "security: degraded (debug mode is on in production" in p.stdout, p.stdout
        assert "Debug mode should be off in production" in d.read_log()
        # off again: healthy
        d.write_config({"debug_mode": False})
        assert c.call(A + "Reload") == {}
        sec = c.call(A + "Health")["components"]["security"]
        assert sec["status"] == "healthy" and "debug" not in sec["message"], sec
        d.stop()
    # elsewhere debug mode is nothing to report
    with Daemon({"environment": '"staging"', "debug_mode": True}) as d, d.connect() as c:
        assert "Debug mode" not in ctl(d, "config", "--validate").stdout
        assert c.call(A + "Health")["components"]["security"]["status"] == "healthy"
        d.stop()


def test_localstorage_prefix_restricted():
    with Daemon() as d, d.connect() as c:
        for bad in ("my app_", "app\x1b[31m_", 'a"b', "a'b", "caf\u00e9_"):
            quoted = bad.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
            write_env(d, 'SESSION_LOCALSTORAGE_PREFIX="%s"\n' % quoted)
            p = ctl(d, "config", "--validate")
            assert p.returncode == 1, (bad, p)
            assert "sync.localstorage_prefix may hold only printable ASCII characters without spaces or quotes" \
                in p.stdout, p.stdout
            assert_clean(p.stdout, "config --validate")
            p = ctl(d, "reload")
            assert p.returncode == 1 and "sync.localstorage_prefix may hold only" in p.stderr, p
        cfg = c.call(S + "GetClientConfig")["config"]
        assert cfg["sync"]["localstorage_prefix"] == "vedfolnir_session_", cfg
        write_env(d, "SESSION_LOCALSTORAGE_PREFIX=app:v2/sess-\n")
        assert ctl(d, "reload").returncode == 0
        assert c.call(S + "GetClientConfig")["config"]["sync"]["localstorage_prefix"] == "app:v2/sess-"
        d.stop()
    # a daemon with such a prefix does not start
    p = subprocess.run([SESSIOND, "--check-config", "-c", "/dev/null"], capture_output=True, text=True,
                       timeout=TIMEOUT, env={"SESSION_LOCALSTORAGE_PREFIX": "a b", "SESSIOND_ENV_FILE": "/nonexistent/session.env",
                                            "PATH": os.environ.get("PATH", "")})
    assert p.returncode == 1 and "sync.localstorage_prefix may hold only" in p.stderr, p


def vm_size(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def test_buffer_sizes_bounded_and_reload_as_a_whole():
    # Under AddressSanitizer an allocation that fails returns NULL, as with
    # glibc's malloc, instead of ending the process.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "allocator_may_return_null=1"}
    with Daemon({"monitoring.metrics_buffer_size": 10, "monitoring.events_buffer_size": 10}, env=env) as d, \
            d.connect() as c:
        # past the bound: refused by validation, at reload as at start
        d.write_config({"monitoring.metrics_buffer_size": 2147483647})
        p = ctl(d, "reload")
        assert p.returncode == 1, p
        assert "Metrics buffer size must be at most 100000 (monitoring.metrics_buffer_size=2147483647" in p.stderr, p
        assert get_config(c)["monitoring"]["metrics_buffer_size"] == 10
        p = subprocess.run([SESSIOND, "--check-config", "-c", d.config], capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert p.returncode == 1 and "Metrics buffer size must be at most 100000" in p.stderr, p

        # within the bound, but the memory is not there (an address-space
        # limit on the running daemon): the reload fails as a whole
        for setting in ("monitoring.metrics_buffer_size", "monitoring.events_buffer_size"):
            d.write_config({"monitoring.metrics_buffer_size": 10, "monitoring.events_buffer_size": 10,
                            "sync.max_data_size": 1024})
            assert ctl(d, "reload").returncode == 0
            d.write_config({setting: 100000, "sync.max_data_size": 2000})
            limit = resource.prlimit(d.proc.pid, resource.RLIMIT_AS)
            resource.prlimit(d.proc.pid, resource.RLIMIT_AS, (vm_size(d.proc.pid) + 128 * 1024, limit[1]))
            try:
                p = ctl(d, "reload")
            finally:
                resource.prlimit(d.proc.pid, resource.RLIMIT_AS, limit)
            assert p.returncode == 1, p
            assert "%s=100000 cannot be applied: its buffer cannot be allocated (Cannot allocate memory)" % setting \
                in p.stderr, p.stderr
            cfg = get_config(c)
            # nothing of it applied, the other settings of that reload neither
            assert cfg["monitoring"]["metrics_buffer_size"] == 10 and cfg["monitoring"]["events_buffer_size"] == 10
            assert cfg["sync"]["max_data_size"] != 2000, cfg["sync"]
            assert "%s=100000 cannot be applied" % setting in d.read_log()
            # with the memory back, the same reload applies
            assert ctl(d, "reload").returncode == 0
            cfg = get_config(c)
            assert cfg["monitoring"][setting.split(".")[1]] == 100000 and cfg["sync"]["max_data_size"] == 2000
            assert c.call(A + "Health")["components"]
        # the events ring really has the new size: more than 10 events kept
        for i in range(30):
            c.call(S + "Create", {"user_id": "u%d" % i})
        assert len(c.call(A + "Events")["events"]) > 10
        d.stop()


def test_env_file_reports_every_line():
    with Daemon() as d, d.connect() as c:
        write_env(d, "SESSION_CLEANUP_BATCH_SIZE=abc\n"
                     "this is not an assignment\n"
                     "SESSION_DEBUG_MODE=perhaps\n"
                     "=5\n"
                     "SESSION_CUSTOM_\u00dcBER=1\n")
        for p, out in ((ctl(d, "config", "--validate"), "stdout"), (ctl(d, "reload"), "stderr")):
            text = getattr(p, out)
            assert p.returncode == 1, p
            assert "%s:1: SESSION_CLEANUP_BATCH_SIZE: value 'abc' is not an integer" % d.env_file in text, text
            assert "%s:2: malformed line (expected KEY=VALUE): this is not an assignment" % d.env_file in text, text
            assert "%s:3: SESSION_DEBUG_MODE: value 'perhaps' is not a boolean" % d.env_file in text, text
            # one message for every key that is not a name
            name = "malformed line (the key is not a valid name ([A-Za-z_][A-Za-z0-9_]*))"
            assert "%s:4: %s: =5" % (d.env_file, name) in text, text
            assert "%s:5: %s: SESSION_CUSTOM_\u00dcBER=1" % (d.env_file, name) in text, text
        assert get_config(c)["custom"] == {}
        d.stop()


def test_client_changed_log_line():
    client = {"user_agent": "Firefox/120", "ip": "192.0.2.1", "accept_language": "en", "accept_encoding": "gzip"}
    with Daemon() as d, d.connect() as c:
        token = c.call(S + "Create", {"user_id": "alice", "client": client})["token"]
        c.call(S + "Validate", {"token": token, "client": dict(client, ip="192.0.2.2")})
        wait_for(lambda: "client changed (ip); recorded." in d.read_log(), what="the log line")
        c.call(S + "Validate", {"token": token, "client": dict(client, ip="192.0.2.3", accept_language="de",
                                                                accept_encoding="br")})
        wait_for(lambda: "client changed (ip, accept_language, accept_encoding); recorded." in d.read_log(),
                 what="the log line of three fields")
        c.call(S + "Validate", {"token": token, "client": dict(client, ip="192.0.2.3", accept_language="de",
                                                                accept_encoding="zstd")})
        wait_for(lambda: "client changed (accept_encoding); recorded." in d.read_log(),
                 what="the log line of one field")
        assert "( " not in d.read_log() and " )" not in d.read_log()
        d.stop()


if __name__ == "__main__":
    run_tests([
        test_control_characters_escaped,
        test_debug_mode_in_production,
        test_localstorage_prefix_restricted,
        test_buffer_sizes_bounded_and_reload_as_a_whole,
        test_env_file_reports_every_line,
        test_client_changed_log_line,
    ])
