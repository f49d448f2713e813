"""Interoperability with an independent Varlink implementation.

Builds tests/interop/varlink-go (a client on the reference Go implementation
of Varlink, Debian's golang-github-varlink-go-dev) offline, in GOPATH mode
against /usr/share/gocode, with its build cache under the build folder, and
runs it against a real sessiond: org.varlink.service through the library's
helpers, every io.sessiond.Session method and its errors, and a Watch through
Send with More. tools/setup-debian installs golang-go and the library; the
test fails (it does not skip) when they are missing, so CI cannot pass
without running it.
"""

import os
import shutil
import subprocess
import tempfile

from harness import Daemon, TIMEOUT, run_tests

SOURCE = os.environ.get("MESON_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MESON_BUILD_ROOT") or tempfile.gettempdir()
GOPATH = "/usr/share/gocode"
LIBRARY = os.path.join(GOPATH, "src", "github.com", "varlink", "go", "varlink")
PROGRAM = os.path.join(SOURCE, "tests", "interop", "varlink-go")
INTERFACE = os.path.join(SOURCE, "daemon", "io.sessiond.Session.varlink")


def build(out):
    """go build, offline: GOPATH mode, no proxy, no cgo."""
    go = shutil.which("go")
    assert go, "go is not installed (tools/setup-debian installs golang-go)"
    assert os.path.isdir(LIBRARY), \
        "%s is missing (tools/setup-debian installs golang-github-varlink-go-dev)" % LIBRARY
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOPROXY="off", GOFLAGS="", CGO_ENABLED="0",
               GOCACHE=os.path.join(BUILD, "go-cache"), HOME=os.path.dirname(out))
    p = subprocess.run([go, "build", "-o", out, "."], cwd=PROGRAM, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, "go build failed:\n%s%s" % (p.stdout, p.stderr)


def run(binary, d, *args):
    p = subprocess.run([binary, d.socket] + list(args), capture_output=True, text=True, timeout=TIMEOUT * 6)
    print(p.stdout, end="")
    assert p.returncode == 0, "the Go client failed (exit %d):\n%s%s\ndaemon log:\n%s" % (
        p.returncode, p.stdout, p.stderr, d.read_log())
    return p.stdout


def test_go_client():
    with tempfile.TemporaryDirectory(prefix="sessiond-go-") as tmp:
        binary = os.path.join(tmp, "varlink-go")
        build(binary)
        with Daemon({"security.max_concurrent_per_user": 2, "security.max_platform_switches_per_hour": 2,
                     "sync.max_data_size": 64}) as d:
            out = run(binary, d, "enabled", INTERFACE)
            # Each method of the interface was called through the library.
            for method in ("Create", "Validate", "Heartbeat", "Extend", "Rotate", "SwitchPlatform",
                           "GetSyncState", "SetSyncState", "Watch", "Destroy", "DestroyUser", "ListUser",
                           "GetClientConfig"):
                assert "ok   " + method in out, method
            for error in ("NotFound", "Expired", "FingerprintMismatch", "RateLimited", "TooLarge", "Conflict",
                          "InvalidArgument"):
                assert "-> " + error in out, error
            assert "closing it" not in d.read_log(), d.read_log()
            d.stop()
        with Daemon({"features.cross_tab_sync": False, "features.platform_switching": False}) as d:
            out = run(binary, d, "disabled")
            assert out.count("-> FeatureDisabled") == 4, out
            d.stop()


if __name__ == "__main__":
    run_tests([test_go_client])
