"""A real browser: Debian's headless Chromium (chromium, chromium-driver,
driven by python3-selenium; nothing is downloaded) on the example app
(tools/example-app) served by a real Flask server in a thread, against the
real daemon.

- two tabs of one browser share the state, and a logout in one reaches the
  other through the sync (it notices without being reloaded);
- one tab leads; a leader that stops answering is replaced after
  sync.tab_response_timeout, and a server slower than sync.timeout is given
  up on ("offline", then "online");
- the expiry banner appears once the session's remaining time reaches
  timeout.warning_threshold, "Stay signed in" takes it away, and an idle
  session ends in every tab with reason idle;
- under optimistic UI a write shows at once and rolls back when the server
  refuses it (a conflicting write armed in the test's server);
- with cross_tab_sync off the script stays inert: no localStorage key, no
  request after the configuration, set() refused.
"""

import importlib.util
import os
import shutil
import tempfile
import threading
import time

import web
from harness import Daemon, run_tests, wait_for

import flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APP = os.path.join(web.SOURCE, "tools", "example-app", "app.py")

# Short sync intervals, valid under DESIGN 2.5 (tab response < sync timeout
# < heartbeat interval).
SYNC = {
    "sync.check_interval": 1,
    "sync.heartbeat_interval": 30,
    "sync.timeout": 3,
    "sync.tab_response_timeout": 2,
    "sync.localstorage_prefix": "testpfx_",
    "sync.max_data_size": 300,
}


def load_example_app():
    spec = importlib.util.spec_from_file_location("example_app", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Site:
    """The example app on a real werkzeug server (a thread), with a test
    hook: arm_conflict() makes the next PUT /session/state meet a write
    that landed just before it."""

    def __init__(self, daemon):
        self.app = load_example_app().create_app(socket_path=daemon.socket)
        self.conflict = None
        self.slow = 0  # seconds every /session/state request waits
        self.app.before_request_funcs.setdefault(None, []).insert(0, self._maybe_conflict)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = "http://127.0.0.1:%d" % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _maybe_conflict(self):
        req = flask.request
        if self.slow and req.path == "/session/state":
            time.sleep(self.slow)
        if self.conflict is not None and req.method == "PUT" and req.path == "/session/state":
            theirs, self.conflict = self.conflict, None
            s = flask.session
            iface = self.app.session_interface
            text = iface.encode_state(s, theirs, s.client_version + 1)
            iface.client.set_sync_state(s.token, text, expected_version=s.version)

    def arm_conflict(self, theirs):
        self.conflict = theirs

    def close(self):
        self.server.shutdown()
        self.thread.join(10)


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="sessiond-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--disable-background-timer-throttling",
                     "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
                     "--user-data-dir=" + self.profile):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_script_timeout(20)
        self.driver.set_page_load_timeout(20)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def js_async(self, script, *args):
        return self.driver.execute_async_script(script, *args)

    def text(self, element_id):
        return self.js("const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
                       element_id)

    def console(self):
        try:
            return "\n".join(str(e) for e in self.driver.get_log("browser"))
        except Exception as e:  # the log is only for a failure's report
            return "(no browser log: %r)" % e

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


class Scene:
    """A daemon, the site and a browser, torn down in reverse."""

    def __init__(self, settings):
        self.daemon = Daemon(settings)
        self.site = self.browser = None
        try:
            self.site = Site(self.daemon)
            self.browser = Browser()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.browser is not None:
            print("browser console:\n" + self.browser.console())
        for part in (self.browser, self.site):
            if part is not None:
                part.close()
        self.daemon.cleanup()

    def login(self, user="alice", password="wonderland"):
        d = self.browser.driver
        d.get(self.site.url + "/login")
        d.find_element(By.ID, "username").send_keys(user)
        d.find_element(By.ID, "password").send_keys(password)
        d.find_element(By.ID, "sign-in").click()
        wait_for(lambda: self.browser.text("user") == user, what="the home page")
        self.ready()

    def ready(self):
        self.browser.js_async("const done = arguments[arguments.length - 1];"
                              "window.sessionSyncReady.then(() => done(true), (e) => done(String(e)));")

    def path(self):
        return self.browser.driver.current_url[len(self.site.url):]


def test_two_tabs():
    with Scene(SYNC) as sc:
        b, d = sc.browser, sc.browser.driver
        # A wrong password stays on the form.
        d.get(sc.site.url + "/")
        assert sc.path() == "/login", sc.path()
        d.find_element(By.ID, "username").send_keys("alice")
        d.find_element(By.ID, "password").send_keys("nope")
        d.find_element(By.ID, "sign-in").click()
        # The form comes back with its error once the POST is answered.
        wait_for(lambda: "Wrong" in (b.text("error") or ""), what="the wrong password refused")
        sc.login()
        tab_a = d.current_window_handle
        d.switch_to.new_window("tab")
        tab_b = d.current_window_handle
        d.get(sc.site.url + "/settings")
        sc.ready()
        assert b.text("user") == "alice"
        # A state written in tab A is read in tab B.
        d.switch_to.window(tab_a)
        d.find_element(By.ID, "note").send_keys("milk and eggs")
        d.find_element(By.ID, "save-note").click()
        wait_for(lambda: b.text("note-status") == "saved", what="the save")
        d.switch_to.window(tab_b)
        wait_for(lambda: b.text("shared-note") == "milk and eggs", what="tab B to see the note")
        # Everything is kept under the configured prefix; one tab leads.
        keys = b.js("return Object.keys(localStorage);")
        assert keys and all(k.startswith("testpfx_") for k in keys), keys
        assert "testpfx_leader" in keys and "testpfx_state" in keys, keys
        leaders = []
        for tab in (tab_a, tab_b):
            d.switch_to.window(tab)
            leaders.append(b.js("return SessionSync.isLeader;"))
        assert leaders.count(True) == 1, leaders
        # More than sync.max_data_size is refused in the browser.
        d.switch_to.window(tab_b)
        err = b.js_async("const done = arguments[arguments.length - 1];"
                         "SessionSync.set({note: 'x'.repeat(400)}).then(() => done('stored'), (e) => done(e.name));")
        assert err == "TooLarge", err
        # Log out in tab A: tab B notices by itself.
        d.switch_to.window(tab_a)
        b.js("window.name = 'A';")
        start = time.monotonic()
        d.find_element(By.ID, "logout").click()
        wait_for(lambda: sc.path().startswith("/login"), what="tab A on the login page")
        d.switch_to.window(tab_b)
        wait_for(lambda: sc.path().startswith("/login?reason="), timeout=15, interval=0.05,
                 what="tab B to notice the logout")
        print("tab B noticed the logout after %.2f s (sync.check_interval is %d s)"
              % (time.monotonic() - start, SYNC["sync.check_interval"]))
        assert b.text("reason") is not None
        assert not any(k in b.js("return Object.keys(localStorage);") for k in ("testpfx_state", "testpfx_session"))


def test_leader_and_timeouts():
    with Scene(SYNC) as sc:
        b, d = sc.browser, sc.browser.driver
        sc.login()
        tab_a = d.current_window_handle
        assert b.js("return SessionSync.isLeader;") is True
        d.switch_to.new_window("tab")
        tab_b = d.current_window_handle
        d.get(sc.site.url + "/")
        sc.ready()
        assert b.js("return SessionSync.isLeader;") is False
        # Tab A stops answering (its timer stops, its lease ages): after
        # sync.tab_response_timeout past its due time tab B takes over.
        d.switch_to.window(tab_a)
        b.js("clearInterval(SessionSync._timer);")
        d.switch_to.window(tab_b)
        wait_for(lambda: b.js("return SessionSync.isLeader;"), timeout=15, what="tab B to lead")
        # A server slower than sync.timeout: the request is given up
        # ("offline"), and "online" follows when it answers again.
        b.js("window.seen = []; ['offline', 'online'].forEach("
             "(n) => SessionSync.on(n, () => window.seen.push(n)));")
        sc.site.slow = SYNC["sync.timeout"] + 1
        wait_for(lambda: b.js("return window.seen;") == ["offline"], timeout=15, what="offline")
        sc.site.slow = 0
        wait_for(lambda: b.js("return window.seen;") == ["offline", "online"], timeout=15, what="online")


def test_expiry_banner():
    settings = dict(SYNC, **{
        "timeout.idle_timeout": 8, "timeout.warning_threshold": 5, "timeout.expiration_grace": 1,
        "timeout.cleanup_grace": 1, "timeout.session_lifetime": 120, "timeout.absolute_timeout": 240,
    })
    with Scene(settings) as sc:
        b, d = sc.browser, sc.browser.driver
        sc.login()
        banner_hidden = lambda: b.js("return document.getElementById('expiry-banner').hidden;")
        assert banner_hidden()
        # The page load was the last activity: the banner shows once at
        # most warning_threshold seconds are left, while the session holds.
        wait_for(lambda: not banner_hidden(), timeout=15, what="the expiry banner")
        left = int(b.text("expiry-seconds"))
        assert 0 < left <= 5, left
        assert sc.path() == "/"
        # "Stay signed in" is a heartbeat: the end moves, the banner goes.
        d.find_element(By.ID, "stay").click()
        wait_for(banner_hidden, what="the banner to go")
        # Left alone, it warns again and then ends with reason idle.
        wait_for(lambda: not banner_hidden(), timeout=15, what="the second warning")
        wait_for(lambda: sc.path().startswith("/login"), timeout=20, what="the end of the session")
        assert sc.path() == "/login?reason=idle", sc.path()


def test_optimistic_rollback():
    with Scene(SYNC) as sc:
        b, d = sc.browser, sc.browser.driver
        sc.login()
        assert b.js("return SessionSync.optimistic;") is True
        d.find_element(By.ID, "note").send_keys("mine")
        sc.site.arm_conflict({"note": "theirs"})
        # The click shows the new note at once, before the server answers.
        shown = b.js("document.getElementById('save-note').click();"
                     "return document.getElementById('shared-note').textContent;")
        assert shown == "mine", shown
        # The server refuses it (Conflict): the page rolls back to its state.
        # The state may arrive (a check, the event stream) before the PUT's
        # answer: wait for both, the note rolled back and the refusal shown.
        wait_for(lambda: b.text("shared-note") == "theirs" and
                 ("not saved" in b.text("note-status") or "Conflict" in b.text("note-status")),
                 what="the rollback and the refusal")
        # A write with the current version goes through.
        d.find_element(By.ID, "note").clear()
        d.find_element(By.ID, "note").send_keys("agreed")
        d.find_element(By.ID, "save-note").click()
        wait_for(lambda: b.text("note-status") == "saved", what="the second save")
        assert b.text("shared-note") == "agreed"
    # Without optimistic UI nothing shows before the server has it.
    with Scene(dict(SYNC, **{"features.optimistic_ui": False})) as sc:
        b, d = sc.browser, sc.browser.driver
        sc.login()
        d.find_element(By.ID, "note").send_keys("mine")
        sc.site.arm_conflict({"note": "theirs"})
        shown = b.js("document.getElementById('save-note').click();"
                     "return document.getElementById('shared-note').textContent;")
        assert shown == "", shown
        wait_for(lambda: b.text("shared-note") == "theirs" and "Conflict" in b.text("note-status"),
                 what="the server's state and the refusal")


def test_sync_off_is_inert():
    with Scene(dict(SYNC, **{"features.cross_tab_sync": False})) as sc:
        b, d = sc.browser, sc.browser.driver
        sc.login()
        assert b.js("return SessionSync.enabled;") is False
        assert b.js("return document.getElementById('sync-off').hidden;") is False
        err = b.js_async("const done = arguments[arguments.length - 1];"
                         "SessionSync.set({note: 'x'}).then(() => done('stored'), (e) => done(e.name));")
        assert err == "FeatureDisabled", err
        # Two check intervals later: still no key, no request past the config.
        time.sleep(2 * SYNC["sync.check_interval"] + 0.5)
        assert b.js("return Object.keys(localStorage);") == []
        urls = b.js("return performance.getEntriesByType('resource').map(e => e.name);")
        session_urls = sorted(u[len(sc.site.url):] for u in urls if "/session/" in u)
        assert session_urls == ["/session/config", "/session/sync.js"], session_urls
        # Logging out still works (a plain form).
        d.find_element(By.ID, "logout").click()
        wait_for(lambda: sc.path().startswith("/login"), what="the login page")


run_tests([
    test_two_tabs,
    test_leader_and_timeouts,
    test_expiry_banner,
    test_optimistic_rollback,
    test_sync_off_is_inert,
])
