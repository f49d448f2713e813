"""The Python client (lib/python/sessiond) against the real daemon: every
method, every error class, Watch, reconnection after the daemon restarts,
and eight threads sharing one client."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import web  # noqa: F401  (puts lib/python on sys.path)
from harness import Daemon, Skip, SmallDisk, fill, run_tests, wait_for

import sessiond
from sessiond.client import _Connection

CLIENT = {"user_agent": web.UA, "ip": "192.0.2.1", "accept_language": "en", "accept_encoding": "gzip"}
UNKNOWN_TOKEN = "A" * 43  # well formed, never issued


def expect(exc, fn, *args, **kw):
    try:
        r = fn(*args, **kw)
    except exc as e:
        assert type(e) is exc, (type(e), e)
        assert isinstance(e, sessiond.Error)
        return e
    raise AssertionError("%s succeeded: %r" % (fn.__name__, r))


def test_every_method():
    with Daemon({"security.max_concurrent_per_user": 2}) as d:
        c = sessiond.Client(d.socket)
        r = c.create("alice", platform_id="web", client=CLIENT, sync_data="hello")
        t = r["token"]
        assert len(t) == 43 and r["evicted"] == []
        assert r["session"]["user_id"] == "alice" and r["session"]["platform_id"] == "web"
        assert r["session"]["user_agent"] == web.UA and r["session"]["ip"] == "192.0.2.1"

        v = c.validate(t, client=CLIENT)
        assert v["state"] == "active" and v["expires_in"] > 0 and v["warning"] is False
        assert c.validate(t, touch=False)["session"]["id"] == r["session"]["id"]
        h = c.heartbeat(t)
        assert set(h) == {"expires_in", "warning"}, h
        e = c.extend(t)
        assert e["session"]["id"] == r["session"]["id"] and e["expires_in"] > 0

        assert c.get_sync_state(t) == {"version": 1, "data": "hello"}
        assert c.set_sync_state(t, "two") == {"version": 2}
        assert c.set_sync_state(t, "three", expected_version=2) == {"version": 3}
        assert c.get_sync_state(t) == {"version": 3, "data": "three"}

        s = c.switch_platform(t, "mobile")
        assert s["session"]["platform_id"] == "mobile"

        rot = c.rotate(t)
        t2 = rot["token"]
        assert t2 != t and rot["session"]["id"] != r["session"]["id"]
        assert c.get_sync_state(t2)["data"] == "three"
        assert expect(sessiond.Expired, c.validate, t).reason == "rotated"

        other = c.create("alice")["token"]
        listed = c.list_user("alice")["sessions"]
        assert sorted(x["id"] for x in listed) == sorted(
            [rot["session"]["id"], c.validate(other)["session"]["id"]])
        # A third session evicts the least recently active one.
        third = c.create("alice")
        assert len(third["evicted"]) == 1, third

        assert c.destroy_user("alice", except_token=third["token"]) == {"count": 1}
        assert c.list_user("alice")["sessions"][0]["id"] == third["session"]["id"]
        assert c.destroy(third["token"]) == {}
        assert expect(sessiond.Expired, c.validate, third["token"]).reason == "destroyed"
        assert c.list_user("alice") == {"sessions": []}

        cfg = c.get_client_config()["config"]
        assert set(cfg) == {"sync", "warning_threshold", "features"}, cfg
        assert set(cfg["sync"]) == {"check_interval", "heartbeat_interval", "timeout",
                                    "tab_response_timeout", "localstorage_prefix", "max_data_size"}
        # Any call by name, including the service interface.
        info = c.call("org.varlink.service.GetInfo")
        assert "io.sessiond.Session" in info["interfaces"], info
        c.close()


def test_every_error_class():
    settings = {"security.max_platform_switches_per_hour": 1, "sync.max_data_size": 16}
    with Daemon(settings) as d, sessiond.Client(d.socket) as c:
        t = c.create("bob", client=CLIENT)["token"]
        expect(sessiond.NotFound, c.validate, UNKNOWN_TOKEN)
        e = expect(sessiond.InvalidArgument, c.validate, "not a token")
        assert e.field == "token" and e.reason, e.parameters
        assert e.error == "io.sessiond.Session.InvalidArgument"
        expect(sessiond.InvalidArgument, c.create, "")
        e = expect(sessiond.FingerprintMismatch, c.validate, t, client=dict(CLIENT, user_agent="curl/8"))
        assert e.error == "io.sessiond.Session.FingerprintMismatch"
        c.switch_platform(t, "a")
        e = expect(sessiond.RateLimited, c.switch_platform, t, "b")
        assert isinstance(e.retry_after, int) and e.retry_after > 0, e.parameters
        e = expect(sessiond.TooLarge, c.set_sync_state, t, "x" * 17)
        assert e.max == 16
        c.set_sync_state(t, "v1")
        e = expect(sessiond.Conflict, c.set_sync_state, t, "v2", expected_version=0)
        assert e.version == 1
        c.destroy(t)
        e = expect(sessiond.Expired, c.heartbeat, t)
        assert e.reason == "destroyed" and e.parameters == {"reason": "destroyed"}
        # The Varlink service's own errors.
        e = expect(sessiond.VarlinkError, c.create, 5)
        assert e.error == "org.varlink.service.InvalidParameter", e.error
        e = expect(sessiond.VarlinkError, c.call, "io.sessiond.Session.NoSuchMethod")
        assert e.error == "org.varlink.service.MethodNotFound", e.error
    # FeatureDisabled for each gated call.
    off = {"features.cross_tab_sync": False, "features.platform_switching": False}
    with Daemon(off) as d, sessiond.Client(d.socket) as c:
        t = c.create("carol")["token"]
        assert expect(sessiond.FeatureDisabled, c.get_sync_state, t).feature == "cross_tab_sync"
        assert expect(sessiond.FeatureDisabled, c.set_sync_state, t, "x").feature == "cross_tab_sync"
        assert expect(sessiond.FeatureDisabled, c.switch_platform, t, "p").feature == "platform_switching"
    # No daemon at all.
    e = expect(sessiond.Unavailable, sessiond.Client("/nonexistent/sessiond.sock").get_client_config)
    assert isinstance(e, OSError) and e.sent is False


def test_storage_errors():
    # StorageFull: the database on a 1 MiB tmpfs that fills up (needs root,
    # as CI is); StorageError: a write that fails otherwise (a file size
    # limit: EFBIG is an I/O error for SQLite, where ENOSPC is "full").
    with SmallDisk() as disk:
        settings = {"daemon.database_path": os.path.join(disk.mnt, "sessions.db"),
                    "security.max_concurrent_per_user": 1000}
        with Daemon(settings, tmpdir=disk.tmp) as d, sessiond.Client(d.socket) as c:
            t = c.create("dave")["token"]
            fill(os.path.join(disk.mnt, "filler"))
            e = None
            for i in range(300):
                try:
                    c.create("dave", sync_data="x" * 500)
                except sessiond.StorageFull as err:
                    e = err
                    break
            assert e is not None, "300 creates on a full disk"
            assert e.reason and e.error == "io.sessiond.Session.StorageFull"
            assert c.validate(t)["state"] == "active"  # reads go on
    with LimitedDaemon({"security.max_concurrent_per_user": 100000}) as d, sessiond.Client(d.socket) as c:
        e = None
        for i in range(2000):
            try:
                c.create("erin%d" % i, sync_data="y" * 1000)
            except sessiond.StorageError as err:
                e = err
                break
        assert e is not None, "no write failed under a 1 MiB file size limit"
        assert e.reason and e.error == "io.sessiond.Session.StorageError", e.parameters


class LimitedDaemon(Daemon):
    """A daemon whose files may not grow past 1 MiB (SIGXFSZ ignored, so
    a write past it fails with EFBIG)."""

    def command(self):
        return ["sh", "-c", "ulimit -f 2048; trap '' XFSZ; exec \"$@\"", "sh"] + super().command()


def test_watch():
    with Daemon(web.SHORT_IDLE) as d, sessiond.Client(d.socket) as c:
        t = c.create("frank", sync_data="a")["token"]
        with c.watch(t) as w:
            first = next(w)
            assert first["event"] == "state" and first["version"] == 1 and first["data"] == "a", first
            c.set_sync_state(t, "b")
            ev = w.read(5)
            assert ev["event"] == "sync" and ev["version"] == 2 and ev["data"] == "b", ev
            c.switch_platform(t, "tablet")
            ev = w.read(5)
            assert ev["event"] == "platform" and ev["session"]["platform_id"] == "tablet", ev
            # The warning comes once expires_in reaches warning_threshold.
            ev = w.read(5)
            assert ev["event"] == "warning", ev
            try:
                w.read(0.05)
                raise AssertionError("an event out of nowhere")
            except TimeoutError:
                pass
            c.destroy(t)
            events = list(w)
            assert [e["event"] for e in events] == ["ended"], events
            assert events[0]["session"]["end_reason"] == "destroyed"
            assert w.read(1) is None
        # A rotation ends the stream with "rotated".
        t = c.create("frank")["token"]
        w = c.watch(t)
        assert next(w)["event"] == "state"
        c.rotate(t)
        assert [e["event"] for e in w] == ["rotated"]
        # Watch on a token that no longer holds raises at the first read.
        w = c.watch(t)
        try:
            next(w)
            raise AssertionError("Watch on a rotated token")
        except sessiond.Expired as e:
            assert e.reason == "rotated"
        w.close()
        # A stream of a session whose daemon stops raises Unavailable.
        t = c.create("frank")["token"]
        w = c.watch(t)
        next(w)
        d.stop()
        try:
            w.read(10)
            raise AssertionError("no error when the daemon stopped")
        except sessiond.Unavailable as e:
            assert e.sent


def test_reconnect_after_restart():
    with Daemon() as d:
        c = sessiond.Client(d.socket, pool_size=4)
        t = c.create("gina")["token"]
        assert c.validate(t)["state"] == "active"
        d.stop()
        e = expect(sessiond.Unavailable, c.validate, t)  # the daemon is away
        d.start()
        # Pooled connections died with the old daemon: each call finds a
        # working one, reads and writes alike.
        assert c.validate(t)["state"] == "active"
        t2 = c.create("gina")["token"]
        d.kill()
        d.start()
        assert c.set_sync_state(t2, "after the crash") == {"version": 1}
        assert c.get_sync_state(t2)["data"] == "after the crash"
        # A write on a connection the daemon closed after it was taken is
        # retried only when it was not sent.
        conn, reused = c._take()
        assert reused
        c._give_back(conn)
        d.restart()
        assert c.destroy(t2) == {}
        c.close()


def test_eight_threads_one_client():
    with Daemon({"security.max_concurrent_per_user": 1000}) as d:
        c = sessiond.Client(d.socket, pool_size=4)
        errors = []
        done = []

        def worker(n):
            try:
                for i in range(25):
                    user = "t%d" % n
                    r = c.create(user, sync_data="%d-%d" % (n, i))
                    t = r["token"]
                    assert c.validate(t)["session"]["user_id"] == user
                    assert c.get_sync_state(t)["data"] == "%d-%d" % (n, i)
                    v = c.set_sync_state(t, "x%d" % i, expected_version=1)["version"]
                    assert v == 2
                    c.destroy(t)
                assert c.list_user("t%d" % n) == {"sessions": []}
                done.append(n)
            except Exception as e:  # reported by the main thread
                errors.append((n, repr(e)))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
        assert sorted(done) == list(range(8))
        assert len(c._idle) <= 4
        c.close()
        assert c._idle == []


def test_defaults_and_docs():
    # socket_path defaults to $SESSIOND_SOCKET, then /run/sessiond/sessiond.sock.
    old = os.environ.pop("SESSIOND_SOCKET", None)
    try:
        assert sessiond.Client().socket_path == "/run/sessiond/sessiond.sock"
        os.environ["SESSIOND_SOCKET"] = "/tmp/elsewhere.sock"
        assert sessiond.Client().socket_path == "/tmp/elsewhere.sock"
    finally:
        os.environ.pop("SESSIOND_SOCKET", None)
        if old is not None:
            os.environ["SESSIOND_SOCKET"] = old
    # pydoc renders the package and the Flask module.
    for mod in ("sessiond", "sessiond.flask"):
        p = subprocess.run([sys.executable, "-m", "pydoc", mod], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert p.returncode == 0, p.stderr
        assert "Client" in p.stdout or "SessionInterface" in p.stdout, p.stdout[:500]
    # A reply out of step on an idle connection makes it stale.
    with Daemon() as d:
        conn = _Connection(d.socket, 5)
        assert not conn.is_stale()
        os.kill(d.proc.pid, signal.SIGTERM)
        d.proc.wait(10)
        wait_for(conn.is_stale, what="the closed connection to show")
        conn.close()


def test_installed():
    # `meson install` puts the package into Debian's Python path (the
    # dist-packages of /usr/bin/python3 under the prefix) and the browser
    # script under share/sessiond/js; the installed package imports and
    # knows where the script is.
    build = os.environ["MESON_BUILD_ROOT"]
    installed = json.loads(subprocess.run(["meson", "introspect", build, "--installed"], check=True,
                                          capture_output=True, text=True, timeout=120).stdout)
    paths = sorted(installed.values())
    py = [p for p in paths if "/sessiond/" in p and p.endswith(".py")]
    js = [p for p in paths if p.endswith("/share/sessiond/js/session-sync.js")]
    assert len(js) == 1, paths
    assert sorted(os.path.basename(p) for p in py) == ["__init__.py", "_paths.py", "client.py",
                                                       "errors.py", "flask.py"], py
    assert all(p.split("/sessiond/")[0].endswith("/python3/dist-packages") for p in py), py
    dest = tempfile.mkdtemp(prefix="sessiond-install-")
    try:
        subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild", "--quiet"],
                       check=True, capture_output=True, timeout=300)
        site = dest + os.path.dirname(os.path.dirname(py[0]))
        assert os.path.isfile(dest + js[0])
        p = subprocess.run(["/usr/bin/python3", "-c",
                            "import sessiond, sessiond.flask, sessiond._paths as p; "
                            "print(sessiond.__file__); print(p.JS_DIR)"],
                           capture_output=True, text=True, timeout=60, cwd=dest,
                           env=dict(os.environ, PYTHONPATH=site))
        assert p.returncode == 0, p.stderr
        where, js_dir = p.stdout.split()
        assert where.startswith(site), where
        assert js_dir == os.path.dirname(js[0]), (js_dir, js)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


run_tests([
    test_installed,
    test_every_method,
    test_every_error_class,
    test_storage_errors,
    test_watch,
    test_reconnect_after_restart,
    test_eight_threads_one_client,
    test_defaults_and_docs,
])
