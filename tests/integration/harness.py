"""Integration test harness: start the real sessiond, talk Varlink to it.

Every test gets a fresh temporary folder holding the configuration file, the
socket and the database. The daemon's binaries come from the environment
variables meson sets (SESSIOND, SESSIONCTL); when VALGRIND is set the daemon
runs under valgrind (lifetime tests).

Only the Python standard library is used, so the suite runs on a bare
Debian machine.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SESSIOND = os.environ.get("SESSIOND", "sessiond")
SESSIONCTL = os.environ.get("SESSIONCTL", "sessionctl")
TIMEOUT = float(os.environ.get("SESSIOND_TEST_TIMEOUT", "10"))


class VarlinkError(Exception):
    def __init__(self, error, parameters):
        super().__init__("%s %s" % (error, json.dumps(parameters)))
        self.error = error
        self.parameters = parameters


class Connection:
    """A blocking Varlink connection with a timeout on every wait."""

    def __init__(self, path, timeout=TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, parameters=None, more=False, oneway=False):
        msg = {"method": method}
        if parameters is not None:
            msg["parameters"] = parameters
        if more:
            msg["more"] = True
        if oneway:
            msg["oneway"] = True
        self.send_raw(json.dumps(msg).encode() + b"\0")

    def recv_raw(self):
        """Returns the next message (bytes, without NUL), or None on EOF."""
        while b"\0" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return msg

    def recv(self):
        raw = self.recv_raw()
        if raw is None:
            raise ConnectionError("connection closed by the daemon")
        return json.loads(raw)

    def call(self, method, parameters=None, **kw):
        """Returns the reply's parameters or raises VarlinkError."""
        self.send(method, parameters or {}, **kw)
        reply = self.recv()
        if "error" in reply:
            raise VarlinkError(reply["error"], reply.get("parameters", {}))
        return reply.get("parameters", {})

    def call_error(self, method, parameters=None):
        """Calls and expects an error; returns (error, parameters)."""
        try:
            r = self.call(method, parameters)
        except VarlinkError as e:
            return e.error, e.parameters
        raise AssertionError("%s succeeded unexpectedly: %r" % (method, r))

    def is_closed(self, timeout=TIMEOUT):
        """True when the daemon closed this connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


DEFAULT_SETTINGS = {
    # Long intervals: background jobs stay out of the way unless a test
    # asks for them.
    "environment": '"testing"',
    "debug_mode": "true",
}


def format_conf(settings):
    """{'timeout.idle_timeout': 2, ...} -> libconfig text."""
    groups = {}
    top = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not (isinstance(value, str) and (value.startswith('"') or value in ("true", "false"))):
            value = json.dumps(value)
        parts = key.split(".")
        if len(parts) == 1:
            top.append("%s = %s;" % (key, value))
        else:
            groups.setdefault(parts[0], []).append((parts[1:], value))
    out = top[:]

    def emit(name, items, indent):
        lines = ["%s%s: {" % (" " * indent, name)]
        sub = {}
        for path, value in items:
            if len(path) == 1:
                lines.append("%s  %s = %s;" % (" " * indent, path[0], value))
            else:
                sub.setdefault(path[0], []).append((path[1:], value))
        for n, it in sub.items():
            lines.extend(emit(n, it, indent + 2))
        lines.append("%s};" % (" " * indent))
        return lines

    for name, items in groups.items():
        out.extend(emit(name, items, 0))
    return "\n".join(out) + "\n"


class Daemon:
    """A sessiond in a temporary folder.

    settings: libconfig paths -> values, merged over DEFAULT_SETTINGS.
    env: extra environment variables for the daemon.
    """

    def __init__(self, settings=None, env=None, tmpdir=None, wait=True, args=None):
        self.owns_tmp = tmpdir is None
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="sessiond-test-")
        self.socket = os.path.join(self.tmp, "sessiond.sock")
        self.database = os.path.join(self.tmp, "sessions.db")
        self.config = os.path.join(self.tmp, "sessiond.conf")
        self.env_file = os.path.join(self.tmp, "session.env")
        self.log_path = os.path.join(self.tmp, "sessiond.log")
        self.settings = dict(DEFAULT_SETTINGS)
        self.settings.update({
            "daemon.socket_path": self.socket,
            "daemon.database_path": self.database,
            "daemon.env_file": self.env_file,
        })
        if settings:
            self.settings.update(settings)
        self.extra_env = env or {}
        self.args = args or []
        self.proc = None
        self.write_config()
        self.start(wait=wait)

    def write_config(self, settings=None):
        if settings is not None:
            self.settings.update(settings)
        with open(self.config, "w") as f:
            f.write(format_conf(self.settings))

    def environ(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SESSION_") and not k.startswith("SESSIOND_")
               and k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        env.update(self.extra_env)
        return env

    def command(self):
        cmd = [SESSIOND, "-c", self.config] + self.args
        if os.environ.get("VALGRIND"):
            cmd = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                   "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                   "--log-file=" + os.path.join(self.tmp, "valgrind.log")] + cmd
        return cmd

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=self.log,
                                     env=self.environ())
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=None):
        timeout = timeout or (60 if os.environ.get("VALGRIND") else TIMEOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("sessiond exited with %s:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                c = Connection(self.socket)
                c.close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("sessiond not ready after %ss:\n%s" % (timeout, self.read_log()))

    def connect(self, timeout=TIMEOUT):
        return Connection(self.socket, timeout)

    def call(self, method, parameters=None):
        with self.connect() as c:
            return c.call(method, parameters)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def sessionctl(self, *args, check=None, user=None):
        """Runs sessionctl against this daemon; returns CompletedProcess."""
        cmd = [SESSIONCTL, "-s", self.socket, "-c", self.config] + list(args)
        if user:
            cmd = ["setpriv", "--reuid=" + user, "--regid=" + user, "--clear-groups"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT * 3,
                           env=self.environ())
        if check is not None and p.returncode != check:
            raise AssertionError("sessionctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(args), p.returncode, check, p.stdout, p.stderr))
        return p

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=None, expect=0):
        """Stops the daemon (SIGTERM unless sig); asserts its exit status
        (None: don't check)."""
        # (In the class body `signal` is the method above, not the module:
        # the default is resolved here.)
        if sig is None:
            sig = signal.SIGTERM
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60 if os.environ.get("VALGRIND") else TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("sessiond did not stop on %s:\n%s" % (sig, self.read_log()))
        self.log.close()
        if expect is not None and rc != expect:
            raise AssertionError("sessiond exited %d, expected %d:\n%s" % (rc, expect, self.read_log()))
        return rc

    def wait_stopped(self, expect=0):
        """Waits for the daemon to exit after a signal the test sent
        itself (a second SIGTERM from stop() could find it past its
        handlers, exiting); asserts its exit status."""
        try:
            rc = self.proc.wait(timeout=60 if os.environ.get("VALGRIND") else TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("sessiond did not stop:\n%s" % self.read_log())
        self.log.close()
        if expect is not None and rc != expect:
            raise AssertionError("sessiond exited %d, expected %d:\n%s" % (rc, expect, self.read_log()))
        return rc

    def kill(self):
        """SIGKILL: a crash."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.owns_tmp and not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.cleanup()


# Sessions that cannot end by themselves while a test runs, no per-user limit
# or suspicious-activity alert in the way, background cleanup out of the
# way: for tests that fill a daemon with many sessions.
LONG_LIVED_SETTINGS = {
    "debug_mode": False,
    "timeout.session_lifetime": 86400,
    "timeout.idle_timeout": 86400,
    "timeout.absolute_timeout": 604800,
    "security.max_concurrent_per_user": 100000,
    "security.suspicious_activity_threshold": 1000000,
    "cleanup.interval": 3600,
    "cleanup.batch_interval": 7200,
    "cleanup.deep_interval": 86400,
}


def create_pipelined(d, users, n, chunk=500):
    """n sessions spread over users (round robin), pipelined `chunk` at a
    time on one connection; returns the Create replies' parameters."""
    out = []
    with d.connect(timeout=60) as c:
        while len(out) < n:
            k = min(chunk, n - len(out))
            for i in range(k):
                c.send("io.sessiond.Session.Create", {"user_id": users[(len(out) + i) % len(users)]})
            for _ in range(k):
                m = c.recv()
                assert "error" not in m, m
                out.append(m["parameters"])
    return out


def wait_for(predicate, timeout=TIMEOUT, interval=0.05, what="condition"):
    """Polls predicate() until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class Skip(Exception):
    """Raised by a test that cannot run here (e.g. it needs root)."""


def fill(path):
    """Writes to path until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


class SmallDisk:
    """A small tmpfs (root only: mount; Skip otherwise) in a temporary folder:
    self.mnt is the mount, self.tmp its parent (a daemon's tmpdir)."""

    def __init__(self, size="1m"):
        self.size = size

    def __enter__(self):
        if os.geteuid() != 0:
            raise Skip("needs root to mount a small tmpfs")
        self.tmp = tempfile.mkdtemp(prefix="sessiond-test-")
        self.mnt = os.path.join(self.tmp, "small")
        os.mkdir(self.mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + self.size, "tmpfs", self.mnt],
                          capture_output=True).returncode != 0:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise Skip("cannot mount a tmpfs here")
        return self

    def __exit__(self, *a):
        subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)



def run_tests(tests):
    """Runs test functions; prints a line per test; exits 1 on any failure.

    A test file ends with: run_tests([test_a, test_b, ...]).
    Set ONLY=name to run one test. A test that raises Skip is reported and
    does not fail; when every test that ran was skipped the exit code is 77
    (meson's SKIP).
    """
    only = os.environ.get("ONLY")
    failed = ran = skipped = 0
    for t in tests:
        if only and t.__name__ != only:
            continue
        ran += 1
        start = time.monotonic()
        try:
            t()
            print("ok   %s (%.2fs)" % (t.__name__, time.monotonic() - start), flush=True)
        except Skip as e:
            skipped += 1
            print("skip %s: %s" % (t.__name__, e), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 77 if ran and skipped == ran else 0)
