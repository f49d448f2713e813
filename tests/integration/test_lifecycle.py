"""sessiond's life as a process: options, start, reload, stop, systemd glue.

--version and --check-config; a start refused on an invalid configuration;
the socket (mode 0660, stale file removed, a second daemon refused); reload
by SIGHUP and by Admin.Reload, with a valid and an invalid configuration;
SIGTERM (exit 0, socket removed, a stuck peer does not hold the stop up);
sd_notify on a NOTIFY_SOCKET of our own (READY, RELOADING with
MONOTONIC_USEC, WATCHDOG, STOPPING); socket activation through
systemd-socket-activate; debug_mode and the journal's <N> prefixes.
"""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from harness import (SESSIOND, TIMEOUT, Connection, Daemon, Skip, VarlinkError, format_conf,
                     run_tests, wait_for)

SOURCE = os.environ.get("MESON_SOURCE_ROOT",
                        os.path.join(os.path.dirname(__file__), "..", ".."))
# idle_timeout above session_lifetime: one of the guide's validation errors.
INVALID = {"timeout.idle_timeout": 90000, "timeout.session_lifetime": 3600}
IDLE_MESSAGE = "Idle timeout should be less than session lifetime"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESSION_", "SESSIOND_", "LISTEN_", "WATCHDOG_"))
           and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env.update(extra)
    return env


def write_conf(tmp, settings, name="sessiond.conf"):
    path = os.path.join(tmp, name)
    base = {"environment": '"testing"',
            "daemon.socket_path": os.path.join(tmp, "sessiond.sock"),
            "daemon.database_path": os.path.join(tmp, "sessions.db"),
            "daemon.env_file": os.path.join(tmp, "session.env")}
    base.update(settings)
    with open(path, "w") as f:
        f.write(format_conf(base))
    return path


def run_sessiond(*args, env=None):
    return subprocess.run([SESSIOND] + list(args), capture_output=True, text=True,
                          timeout=TIMEOUT * 3, env=env or clean_env())


def get_config(d):
    return d.call("io.sessiond.Admin.GetConfig")["config"]


def wait_log(d, text, timeout=TIMEOUT):
    return wait_for(lambda: text in d.read_log(), timeout=timeout, what=repr(text) + " in the log")


class Notify:
    """A NOTIFY_SOCKET of our own: collects what sessiond sends."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait(self, pred, timeout=TIMEOUT, what="notification"):
        """Returns the first message (dict) received from now on matching pred."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            self.messages.append(fields)
            if pred(fields):
                return fields
        raise AssertionError("no %s; got %r" % (what, self.messages))

    def close(self):
        self.sock.close()


# ---- options --------------------------------------------------------------------

def test_version_and_help():
    p = run_sessiond("--version")
    with open(os.path.join(SOURCE, "meson.build")) as f:
        version = f.read().split("version : '", 1)[1].split("'", 1)[0]
    assert p.returncode == 0 and p.stdout == "sessiond %s\n" % version, p
    p = run_sessiond("--help")
    assert p.returncode == 0 and "--check-config" in p.stdout, p
    p = run_sessiond("--no-such-option")
    assert p.returncode == 2, p
    p = run_sessiond("stray-argument")
    assert p.returncode == 2 and "unexpected argument" in p.stderr, p


def test_check_config():
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    try:
        good = write_conf(tmp, {})
        p = run_sessiond("-c", good, "--check-config")
        assert p.returncode == 0, p
        assert p.stdout.startswith("Configuration valid"), p
        assert not os.path.exists(os.path.join(tmp, "sessiond.sock"))  # nothing started

        # Warnings are allowed: warning_threshold >= idle_timeout.
        warn = write_conf(tmp, {"timeout.warning_threshold": 90000}, "warn.conf")
        p = run_sessiond("--config", warn, "--check-config")
        assert p.returncode == 0 and "warning:" in p.stderr and "1 warning" in p.stdout, p

        # Every error at once, each on stderr, and a summary.
        bad = write_conf(tmp, dict(INVALID, **{"cleanup.batch_size": 0}), "bad.conf")
        p = run_sessiond("-c", bad, "--check-config")
        assert p.returncode == 1, p
        assert IDLE_MESSAGE in p.stderr, p
        assert "Cleanup batch size must be positive" in p.stderr, p
        assert p.stdout.startswith("Configuration invalid") and "errors" in p.stdout, p

        # A file that cannot be parsed, and one that does not exist.
        broken = os.path.join(tmp, "broken.conf")
        with open(broken, "w") as f:
            f.write("timeout: { idle_timeout = ; };\n")
        p = run_sessiond("-c", broken, "--check-config")
        assert p.returncode == 1 and "error:" in p.stderr and "broken.conf" in p.stderr, p
        p = run_sessiond("-c", os.path.join(tmp, "missing.conf"), "--check-config")
        assert p.returncode == 1 and "missing.conf" in p.stderr, p
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_start_refused_with_invalid_config():
    d = Daemon(INVALID, wait=False)
    try:
        rc = d.proc.wait(timeout=TIMEOUT)
        log = d.read_log()
        assert rc == 1, (rc, log)
        assert IDLE_MESSAGE in log, log
        assert not os.path.exists(d.socket), "socket created by a refused start"
    finally:
        d.cleanup()


# ---- the socket -------------------------------------------------------------------

def test_socket_mode_and_removal():
    old = os.umask(0)  # the daemon must not depend on the umask it inherits
    try:
        d = Daemon()
    finally:
        os.umask(old)
    with d:
        st = os.stat(d.socket)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        d.stop()
        assert not os.path.exists(d.socket), "socket left behind after SIGTERM"
        assert "Stopped" in d.read_log()


def test_stale_socket_and_second_daemon():
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    path = os.path.join(tmp, "sessiond.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays: what a crashed daemon leaves
    with Daemon(tmpdir=tmp) as d:
        assert "Removing the stale socket" in d.read_log()
        # A second daemon on the same socket refuses to start...
        conf = write_conf(tmp, {"daemon.database_path": os.path.join(tmp, "other.db")}, "second.conf")
        p = run_sessiond("-c", conf)
        assert p.returncode == 1 and "Another sessiond is listening on " + path in p.stderr, p
        # ...and leaves the first one's socket alone.
        d.call("org.varlink.service.GetInfo")
        # A path that is not a socket is never removed.
        d.stop()
    with open(path, "w") as f:
        f.write("not a socket\n")
    d = Daemon(tmpdir=tmp, wait=False)
    try:
        assert d.proc.wait(timeout=TIMEOUT) == 1
        assert "not a stale socket" in d.read_log(), d.read_log()
        with open(path) as f:
            assert f.read() == "not a socket\n"
    finally:
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- reload -------------------------------------------------------------------------

def test_sighup_reload():
    with Daemon() as d:
        assert get_config(d)["sync"]["heartbeat_interval"] == 30
        d.write_config({"sync.heartbeat_interval": 40})
        d.signal(signal.SIGHUP)
        wait_for(lambda: get_config(d)["sync"]["heartbeat_interval"] == 40, what="reloaded value")
        wait_log(d, "sync.heartbeat_interval changed from 30 to 40")
        # The env file is read again too.
        with open(d.env_file, "w") as f:
            f.write("SESSION_HEARTBEAT_INTERVAL_SECONDS=50\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: get_config(d)["sync"]["heartbeat_interval"] == 50, what="env file value")

        # Invalid: the old configuration stays, every issue is logged.
        d.write_config(dict(INVALID, **{"sync.heartbeat_interval": 60}))
        d.signal(signal.SIGHUP)
        wait_log(d, "Reload failed")
        assert IDLE_MESSAGE in d.read_log()
        config = get_config(d)
        assert config["sync"]["heartbeat_interval"] == 50, config["sync"]
        assert config["timeout"]["idle_timeout"] != 90000
        assert d.proc.poll() is None


def test_process_environment_fixed_at_start():
    env = {"SESSION_HEARTBEAT_INTERVAL_SECONDS": "45"}
    with Daemon(env=env) as d:
        assert get_config(d)["sync"]["heartbeat_interval"] == 45
        # The environment beats the file, at start and after a reload.
        d.write_config({"sync.heartbeat_interval": 40, "sync.check_interval": 3})
        d.signal(signal.SIGHUP)
        wait_for(lambda: get_config(d)["sync"]["check_interval"] == 3, what="reload")
        assert get_config(d)["sync"]["heartbeat_interval"] == 45


def test_admin_reload():
    with Daemon() as d, d.connect() as c:
        d.write_config({"sync.heartbeat_interval": 41})
        assert c.call("io.sessiond.Admin.Reload") == {}
        assert get_config(d)["sync"]["heartbeat_interval"] == 41
        d.write_config(INVALID)
        error, params = c.call_error("io.sessiond.Admin.Reload")
        assert error == "io.sessiond.Admin.ConfigInvalid", error
        assert any(IDLE_MESSAGE in i for i in params["issues"]), params
        assert get_config(d)["timeout"]["idle_timeout"] != 90000
        # The connection and the daemon go on.
        c.call("org.varlink.service.GetInfo")
        # Both reloads are in the audit log, oldest first.
        entries = c.call("io.sessiond.Admin.Audit", {"kind": "config_reloaded"})["entries"]
        entries.sort(key=lambda e: e["id"])
        assert [e["detail"]["ok"] for e in entries] == [True, False], entries
        assert entries[0]["detail"]["changed"]["sync.heartbeat_interval"] == {"from": 30, "to": 41}, entries
        assert any(IDLE_MESSAGE in m for m in entries[1]["detail"]["errors"]), entries


def test_reload_applies_connection_limits():
    with Daemon() as d, d.connect() as c:
        d.write_config({"daemon.max_message_size": 512})
        c.call("io.sessiond.Admin.Reload")
        with d.connect() as big:
            big.send("org.varlink.service.GetInterfaceDescription", {"interface": "x" * 1000})
            assert big.is_closed(5)
        c.call("org.varlink.service.GetInfo")


# ---- stop -----------------------------------------------------------------------------

def stuck_peer(d):
    """A connection whose replies pile up unread: the daemon cannot drain it.

    The daemon runs with debug_mode: its line saying it paused the peer's
    calls is what tells us the replies are over the cap (a full send buffer
    alone only says the daemon has not read everything yet)."""
    c = d.connect()
    call = json.dumps({"method": "org.varlink.service.GetInterfaceDescription",
                       "parameters": {"interface": "io.sessiond.Session"}}).encode() + b"\0"
    c.sock.setblocking(False)
    sent = 0
    try:
        while sent < 8 * 1024 * 1024:
            sent += c.sock.send(call * 64)
    except BlockingIOError:
        pass  # the daemon reads no more for now
    wait_log(d, "handling its calls paused until it reads")
    return c


def test_sigterm_exits_zero():
    with Daemon() as d:
        token = d.call("io.sessiond.Session.Create", {"user_id": "alice"})["token"]
        with d.connect() as c, d.connect() as w:
            c.call("org.varlink.service.GetInfo")
            # A Watch stream never ends by itself: the stop cancels it.
            w.send("io.sessiond.Session.Watch", {"token": token}, more=True)
            assert w.recv()["continues"] is True
            assert d.stop() == 0
            assert c.is_closed(5) and w.is_closed(5)
        assert not os.path.exists(d.socket)
        # What was acknowledged before the stop is there after it.
        d.start()
        assert d.call("io.sessiond.Session.Validate", {"token": token})["state"] == "active"
        d.stop()
    with Daemon() as d:
        assert d.stop(signal.SIGINT) == 0


def test_stop_deadline_and_second_signal():
    with Daemon({"debug_mode": True}) as d:
        c = stuck_peer(d)
        start = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - start < TIMEOUT
        assert "Connections still busy" in d.read_log(), d.read_log()
        c.close()
    with Daemon({"debug_mode": True}) as d:
        c = stuck_peer(d)
        d.signal(signal.SIGTERM)
        wait_log(d, "Stopping")
        assert d.stop() == 0  # the second SIGTERM
        assert "Stop requested again" in d.read_log()
        c.close()


# ---- systemd --------------------------------------------------------------------------

def test_sd_notify():
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    notify = Notify(tmp)
    try:
        with Daemon(tmpdir=tmp, env={"NOTIFY_SOCKET": notify.path}) as d:
            ready = notify.wait(lambda m: m.get("READY") == "1", what="READY=1")
            assert "STATUS" in ready, ready
            d.signal(signal.SIGHUP)
            reloading = notify.wait(lambda m: "RELOADING" in m, what="RELOADING=1")
            assert reloading["RELOADING"] == "1"
            usec = int(reloading["MONOTONIC_USEC"])
            now = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
            assert 0 < usec <= now, (usec, now)
            notify.wait(lambda m: m.get("READY") == "1", what="READY=1 after the reload")
            # A failed reload ends with READY=1 too, and says so.
            d.write_config(INVALID)
            d.signal(signal.SIGHUP)
            notify.wait(lambda m: "RELOADING" in m, what="RELOADING=1")
            after = notify.wait(lambda m: m.get("READY") == "1", what="READY=1 after a failed reload")
            assert "failed" in after.get("STATUS", ""), after
            d.signal(signal.SIGTERM)
            notify.wait(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
            assert d.proc.wait(timeout=TIMEOUT) == 0
    finally:
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


class WatchdogDaemon(Daemon):
    """WATCHDOG_PID must be the daemon's own pid: a shell sets it, then execs."""

    def command(self):
        return ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + super().command()


def test_watchdog():
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    notify = Notify(tmp)
    try:
        with WatchdogDaemon(tmpdir=tmp, env={"NOTIFY_SOCKET": notify.path,
                                             "WATCHDOG_USEC": "200000"}) as d:
            notify.wait(lambda m: m.get("READY") == "1", what="READY=1")
            for _ in range(3):
                notify.wait(lambda m: m.get("WATCHDOG") == "1", what="WATCHDOG=1")
            d.stop()
    finally:
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_socket_activation():
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        raise Skip("systemd-socket-activate is not installed")
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    path = os.path.join(tmp, "activated.sock")
    conf = write_conf(tmp, {})
    own = os.path.join(tmp, "sessiond.sock")
    log = open(os.path.join(tmp, "log"), "wb")
    proc = subprocess.Popen([activate, "-l", path, "--fdname=varlink", SESSIOND, "-c", conf],
                            stdout=log, stderr=log, env=clean_env())
    try:
        c = wait_for(lambda: os.path.exists(path) and Connection(path), what="activation socket")
        with c:
            # The first connection waits in the backlog while sessiond starts.
            assert c.call("org.varlink.service.GetInfo")["product"] == "sessiond"
        assert not os.path.exists(own), "bound daemon.socket_path despite socket activation"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        with open(os.path.join(tmp, "log")) as f:
            assert "Listening on the socket passed by systemd" in f.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    # A socket under any other name is refused, not served.
    path2 = os.path.join(tmp, "wrong.sock")
    proc = subprocess.Popen([activate, "-l", path2, "--fdname=something", SESSIOND, "-c", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
    try:
        c = wait_for(lambda: os.path.exists(path2) and Connection(path2), what="activation socket")
        assert c.is_closed(TIMEOUT)
        c.close()
        out = proc.communicate(timeout=TIMEOUT)[0].decode()
        assert proc.returncode == 1, (proc.returncode, out)
        assert 'unexpected socket' in out and '"something"' in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- logging ------------------------------------------------------------------------------

def test_debug_mode_toggles_debug_lines():
    with Daemon({"debug_mode": True}) as d, d.connect() as c:
        c.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.sessiond.Session"})
        assert re.search(r"\[debug\].*GetInterfaceDescription", d.read_log()), d.read_log()
        d.write_config({"debug_mode": False})
        c.call("io.sessiond.Admin.Reload")
        mark = len(d.read_log())
        c.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.sessiond.Admin"})
        c.call("org.varlink.service.GetInfo")
        assert "[debug]" not in d.read_log()[mark:], d.read_log()[mark:]
        d.write_config({"debug_mode": True})
        c.call("io.sessiond.Admin.Reload")
        c.call("org.varlink.service.GetInfo")
        wait_log(d, "GetInfo")


def test_journal_priority_prefixes():
    tmp = tempfile.mkdtemp(prefix="sessiond-test-")
    log = os.path.join(tmp, "sessiond.log")
    open(log, "wb").close()
    st = os.stat(log)
    with Daemon(tmpdir=tmp, env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}) as d:
        d.call("org.varlink.service.GetInfo")
        d.write_config(INVALID)
        d.signal(signal.SIGHUP)
        wait_log(d, "Reload failed")
        d.stop()
        lines = d.read_log().splitlines()
        assert lines and all(re.match(r"<[0-7]>", l) for l in lines), lines
        assert any(l.startswith("<3>") and IDLE_MESSAGE in l for l in lines), lines  # LOG_ERR
        assert any(l.startswith("<6>") for l in lines), lines                      # LOG_INFO
        assert any(l.startswith("<7>") for l in lines), lines                      # LOG_DEBUG
    shutil.rmtree(tmp, ignore_errors=True)
    # Another stream than stderr: plain level words.
    with Daemon(env={"JOURNAL_STREAM": "1:1"}) as d:
        d.stop()
        assert not re.search(r"^<\d>", d.read_log(), re.M) and "sessiond[info]" in d.read_log()


run_tests([
    test_version_and_help,
    test_check_config,
    test_start_refused_with_invalid_config,
    test_socket_mode_and_removal,
    test_stale_socket_and_second_daemon,
    test_sighup_reload,
    test_process_environment_fixed_at_start,
    test_admin_reload,
    test_reload_applies_connection_limits,
    test_sigterm_exits_zero,
    test_stop_deadline_and_second_signal,
    test_sd_notify,
    test_watchdog,
    test_socket_activation,
    test_debug_mode_toggles_debug_lines,
    test_journal_priority_prefixes,
])
