"""sessiond.flask with Flask's test client against the real daemon: cookie
flags, rotation at login, fingerprint changes, logout everywhere, expiry in
the middle of a visit, the sync state shared by Flask and the browser, and
the blueprint's status codes."""

import json
import time

import web
from harness import Daemon, run_tests, wait_for

import flask
import sessiond
import sessiond.flask as sf

HEADERS = {"User-Agent": web.UA, "Accept-Language": "en", "Accept-Encoding": "gzip"}


def make_app(d, trusted_proxies=0, **config):
    app = flask.Flask("test_flask")
    app.config.update(TESTING=True, **config)
    iface = sf.SessionInterface(socket_path=d.socket, trusted_proxies=trusted_proxies)
    iface.init_app(app)

    @iface.ended_handler
    def ended(reason):
        if flask.request.path.startswith("/session/"):
            return None
        return flask.redirect("/login?reason=" + reason)

    @app.post("/login")
    def login():
        s = sf.login(flask.request.form["user"], platform_id=flask.request.form.get("platform"))
        return {"user_id": s.user_id, "session_id": s.session_id}

    @app.get("/whoami")
    def whoami():
        s = flask.session
        return {"user_id": s.user_id, "data": dict(s), "ended": s.ended, "unavailable": s.unavailable,
                "platform_id": s.platform_id, "warning": s.warning}

    @app.post("/set")
    def set_():
        for k, v in flask.request.form.items():
            flask.session[k] = v
        return "ok"

    @app.post("/logout")
    def logout():
        sf.logout()
        return "bye"

    @app.post("/logout-everywhere")
    def logout_everywhere():
        keep = flask.request.form.get("keep") == "1"
        return {"count": sf.logout_everywhere(keep_current=keep)}

    @app.post("/platform/<pid>")
    def platform(pid):
        return {"platform_id": sf.switch_platform(pid).platform_id}

    @app.post("/perm")
    def perm():
        flask.session.permanent = True
        return "ok"

    @app.get("/login")
    def login_page():
        return "login page: " + flask.request.args.get("reason", "")

    return app, iface


def cookie_header(resp):
    headers = resp.headers.getlist("Set-Cookie")
    assert len(headers) == 1, headers
    return headers[0]


def token_of(resp, name="session"):
    h = cookie_header(resp)
    assert h.startswith(name + "="), h
    return h.split(";")[0].split("=", 1)[1]


def test_cookie_flags():
    with Daemon() as d:
        app, iface = make_app(d)
        c = app.test_client()
        r = c.post("/login", data={"user": "alice"}, headers=HEADERS)
        assert r.status_code == 200, r.data
        h = cookie_header(r)
        flags = [x.strip() for x in h.split(";")]
        assert "HttpOnly" in flags and "SameSite=Lax" in flags and "Path=/" in flags, h
        assert "Secure" not in flags and not any(f.startswith("Expires") for f in flags), h
        token = token_of(r)
        assert len(token) == 43
        assert iface.client.validate(token, touch=False)["session"]["user_id"] == "alice"
        # Data lives in the daemon, never in the cookie.
        r = c.post("/set", data={"colour": "blue"}, headers=HEADERS)
        assert r.headers.getlist("Set-Cookie") == [], r.headers
        assert "blue" not in json.dumps(dict(r.headers))
        assert c.get("/whoami", headers=HEADERS).json["data"] == {"colour": "blue"}
        # Flask's settings are followed, HttpOnly stays on even when the
        # app turns it off, permanent sessions get Flask's expiry.
        app2, _ = make_app(d, SESSION_COOKIE_NAME="sid", SESSION_COOKIE_DOMAIN="example.test",
                           SESSION_COOKIE_PATH="/app", SESSION_COOKIE_SECURE=True,
                           SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=False)
        c2 = app2.test_client()
        r = c2.post("/login", data={"user": "alice"}, headers=HEADERS)
        flags = [x.strip() for x in cookie_header(r).split(";")]
        for f in ("Domain=example.test", "Path=/app", "Secure", "HttpOnly", "SameSite=Strict"):
            assert f in flags, (f, flags)
        assert token_of(r, "sid") != token
        r = c.post("/perm", headers=HEADERS)
        assert any(f.strip().startswith("Expires=") for f in cookie_header(r).split(";")), r.headers


def test_rotation_at_login():
    with Daemon() as d:
        app, iface = make_app(d)
        c = app.test_client()
        t1 = token_of(c.post("/login", data={"user": "alice"}, headers=HEADERS))
        c.post("/set", data={"cart": "3 apples"}, headers=HEADERS)
        # The same user again (a privilege change): a new token, the data kept.
        r = c.post("/login", data={"user": "alice", "platform": "admin"}, headers=HEADERS)
        t2 = token_of(r)
        assert t2 != t1
        try:
            iface.client.validate(t1)
            raise AssertionError("the old token still validates")
        except sessiond.Expired as e:
            assert e.reason == "rotated"
        w = c.get("/whoami", headers=HEADERS).json
        assert w["user_id"] == "alice" and w["data"] == {"cart": "3 apples"} and w["platform_id"] == "admin", w
        # Another user: the old session ends, nothing is carried over.
        t3 = token_of(c.post("/login", data={"user": "bob"}, headers=HEADERS))
        assert iface.client.list_user("alice") == {"sessions": []}
        w = c.get("/whoami", headers=HEADERS).json
        assert w["user_id"] == "bob" and w["data"] == {}, w
        assert t3 not in (t1, t2)
        # A cookie of the rotated session is a fresh anonymous visit, and
        # the hook redirects to the login page.
        c.set_cookie("localhost", "session", t1)
        r = c.get("/whoami", headers=HEADERS)
        assert r.status_code == 302 and r.headers["Location"].endswith("/login?reason=rotated"), r.headers
        assert "session=;" in cookie_header(r), "the cookie is deleted"


def test_fingerprint():
    with Daemon() as d:
        app, iface = make_app(d, trusted_proxies=1)
        c = app.test_client()
        xff = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
        c.post("/login", data={"user": "carol"}, headers=dict(HEADERS, **xff))
        listed = iface.client.list_user("carol")["sessions"]
        assert listed[0]["ip"] == "198.51.100.7", listed  # one trusted proxy: the last entry
        assert listed[0]["user_agent"] == web.UA
        # A changed language passes (recorded as suspicious by the daemon).
        r = c.get("/whoami", headers=dict(HEADERS, **{"Accept-Language": "fr"}))
        assert r.json["user_id"] == "carol", r.json
        # A changed user agent does not: anonymous, with the reason.
        r = c.get("/whoami", headers=dict(HEADERS, **{"User-Agent": "curl/8.0"}))
        assert r.status_code == 302 and r.headers["Location"].endswith("reason=fingerprint")
        # Without trusted proxies X-Forwarded-For is ignored.
        app0, iface0 = make_app(d, trusted_proxies=0)
        c0 = app0.test_client()
        c0.post("/login", data={"user": "dan"}, headers=dict(HEADERS, **xff))
        assert iface0.client.list_user("dan")["sessions"][0]["ip"] == "127.0.0.1"
        # Two proxies: the second entry from the right; too few entries: the peer.
        app2, iface2 = make_app(d, trusted_proxies=2)
        with app2.test_request_context("/", headers=xff):
            assert iface2.client_ip(flask.request) == "203.0.113.9"
        with app2.test_request_context("/", headers={"X-Forwarded-For": "198.51.100.7"},
                                       environ_base={"REMOTE_ADDR": "192.0.2.50"}):
            assert iface2.client_ip(flask.request) == "192.0.2.50"
        try:
            sf.SessionInterface(socket_path=d.socket, trusted_proxies=-1)
            raise AssertionError("a negative proxy count")
        except ValueError:
            pass


def test_logout_and_logout_everywhere():
    with Daemon() as d:
        app, iface = make_app(d)
        browsers = [app.test_client() for _ in range(3)]
        for b in browsers:
            b.post("/login", data={"user": "erin"}, headers=HEADERS)
        assert len(iface.client.list_user("erin")["sessions"]) == 3
        r = browsers[0].post("/logout-everywhere", data={"keep": "1"}, headers=HEADERS)
        assert r.json == {"count": 2}
        assert browsers[0].get("/whoami", headers=HEADERS).json["user_id"] == "erin"
        for b in browsers[1:]:
            r = b.get("/whoami", headers=HEADERS)
            assert r.status_code == 302 and r.headers["Location"].endswith("reason=destroyed"), r.headers
        r = browsers[0].post("/logout-everywhere", headers=HEADERS)
        assert r.json == {"count": 1} and "session=;" in cookie_header(r)
        assert iface.client.list_user("erin") == {"sessions": []}
        # Plain logout.
        b = browsers[1]
        b.post("/login", data={"user": "erin"}, headers=HEADERS)
        r = b.post("/logout", headers=HEADERS)
        assert "session=;" in cookie_header(r)
        w = b.get("/whoami", headers=HEADERS).json
        assert w["user_id"] is None and w["ended"] is None, w
        # Anonymous visitors have no session to write to or leave.
        with app.test_request_context("/"):
            app.preprocess_request()
            for f in (lambda: flask.session.__setitem__("x", 1), sf.logout_everywhere,
                      lambda: sf.switch_platform("p")):
                try:
                    f()
                    raise AssertionError("anonymous write accepted")
                except sf.NotLoggedIn:
                    pass
            flask.session.permanent = True  # per request only: no error


def test_expiry_mid_visit():
    with Daemon(web.SHORT_IDLE) as d:
        app, iface = make_app(d)
        c = app.test_client()
        token = token_of(c.post("/login", data={"user": "fay"}, headers=HEADERS))
        assert c.get("/whoami", headers=HEADERS).json["user_id"] == "fay"
        # The browser script's checks do not touch; the warning shows.
        w = wait_for(lambda: c.get("/session/state", headers=HEADERS).json.get("warning"),
                     what="the warning")
        assert w is True

        def gone():
            try:
                iface.client.validate(token, touch=False)
                return False
            except sessiond.Expired:
                return True
        wait_for(gone, what="the session to end")
        r = c.get("/whoami", headers=HEADERS)
        assert r.status_code == 302 and r.headers["Location"].endswith("/login?reason=idle"), r.headers
        assert "session=;" in cookie_header(r)
        w = c.get("/whoami", headers=HEADERS).json
        assert w["user_id"] is None and w["ended"] is None


def read_events(resp, until):
    """Parses server-sent events from a streamed test response until one
    named `until` arrives; returns them as (name, data) pairs."""
    events, buf = [], ""
    for chunk in resp.response:
        buf += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line
                          and not line.startswith(":"))
            if "event" in fields:
                events.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == until:
                    return events
    return events


def test_blueprint():
    with Daemon({"sync.max_data_size": 200}) as d:
        app, iface = make_app(d)
        c = app.test_client()
        cfg = c.get("/session/config").json
        assert cfg == iface.client.get_client_config()["config"], cfg
        js = c.get("/session/sync.js")
        assert js.status_code == 200 and b"SessionSync" in js.data and "javascript" in js.mimetype
        # Without a session.
        for method, path in (("get", "/session/state"), ("put", "/session/state"),
                             ("post", "/session/heartbeat"), ("get", "/session/events")):
            r = getattr(c, method)(path, headers=HEADERS, json={"data": 1})
            assert r.status_code == 401 and r.json == {"error": "no_session"}, (path, r.status_code, r.data)
        c.post("/login", data={"user": "gus"}, headers=HEADERS)
        c.post("/set", data={"secret": "server-only"}, headers=HEADERS)
        r = c.get("/session/state", headers=HEADERS)
        assert r.status_code == 200 and r.json["data"] is None and r.json["user_id"] == "gus", r.json
        v = r.json["version"]
        assert "server-only" not in r.get_data(as_text=True)
        # Writes: compare-and-set, bad bodies, too large.
        r = c.put("/session/state", headers=HEADERS, json={"data": {"tab": "a"}, "expected_version": v})
        assert r.status_code == 200 and r.json == {"version": v + 1, "data": {"tab": "a"}}, r.json
        r = c.put("/session/state", headers=HEADERS, json={"data": {"tab": "b"}, "expected_version": v})
        assert r.status_code == 409 and r.json == {"error": "Conflict", "version": v + 1,
                                                   "data": {"tab": "a"}}, r.json
        for body in (None, [], {"nodata": 1}, {"data": 1, "expected_version": "3"},
                     {"data": 1, "expected_version": -1}, {"data": 1, "expected_version": True}):
            r = c.put("/session/state", headers=HEADERS, json=body) if body is not None else \
                c.put("/session/state", headers=HEADERS, data="not json", content_type="application/json")
            assert r.status_code == 400 and r.json["error"] == "InvalidArgument", (body, r.data)
        r = c.put("/session/state", headers=HEADERS, json={"data": "x" * 300})
        assert r.status_code == 413 and r.json == {"error": "TooLarge", "max": 200}, r.json
        # The Flask data and the browser's state do not overwrite each other,
        # and a change of the Flask session is no conflict for the browser.
        c.post("/set", data={"more": "yes"}, headers=HEADERS)
        r = c.get("/session/state", headers=HEADERS)
        assert r.json["data"] == {"tab": "a"} and r.json["version"] == v + 1, r.json
        r = c.put("/session/state", headers=HEADERS, json={"data": {"tab": "c"}, "expected_version": v + 1})
        assert r.status_code == 200 and r.json["version"] == v + 2, r.json
        assert c.get("/whoami", headers=HEADERS).json["data"] == {"secret": "server-only", "more": "yes"}
        # Heartbeat.
        r = c.post("/session/heartbeat", headers=HEADERS)
        assert r.status_code == 200 and r.json["expires_in"] > 0 and r.json["warning"] is False, r.json
        # Events: the state, a sync, then the end of the session.
        r = c.get("/session/events", headers=HEADERS, buffered=False)
        assert r.status_code == 200 and r.mimetype == "text/event-stream"
        it = iter(r.response)
        first = read_events(type("R", (), {"response": it}), "state")
        assert first[-1][1]["data"] == {"tab": "c"} and first[-1][1]["user_id"] == "gus", first
        token = c.get_cookie("session").value if hasattr(c, "get_cookie") else \
            next(ck.value for ck in c.cookie_jar if ck.name == "session")
        c.post("/set", data={"flask-only": "1"}, headers=HEADERS)  # no event for the browser
        c.put("/session/state", headers=HEADERS, json={"data": {"tab": "d"}})
        iface.client.destroy(token)
        rest = read_events(type("R", (), {"response": it}), "ended")
        assert [e[0] for e in rest] == ["sync", "ended"], rest
        assert rest[0][1]["data"] == {"tab": "d"} and "server-only" not in json.dumps(rest)
        assert rest[1][1]["reason"] == "destroyed"
        r.close()
        # The session is gone: 401 with the reason, the cookie deleted.
        r = c.get("/session/state", headers=HEADERS)
        assert r.status_code == 401 and r.json == {"error": "ended", "reason": "destroyed"}, r.json
        assert "session=;" in cookie_header(r)


def test_limits_and_sync_off():
    # Past sync.max_data_size the Flask session is not saved: the request fails.
    with Daemon({"sync.max_data_size": 64}) as d:
        app, iface = make_app(d)
        c = app.test_client()
        c.post("/login", data={"user": "hal"}, headers=HEADERS)
        try:
            c.post("/set", data={"big": "x" * 100}, headers=HEADERS)
            raise AssertionError("a session over max_data_size was saved")
        except sessiond.TooLarge as e:
            assert e.max == 64
        assert c.get("/whoami", headers=HEADERS).json["data"] == {}
    # With cross_tab_sync off sessions work, without data.
    with Daemon({"features.cross_tab_sync": False}) as d:
        app, iface = make_app(d)
        c = app.test_client()
        c.post("/login", data={"user": "ida"}, headers=HEADERS)
        w = c.get("/whoami", headers=HEADERS).json
        assert w["user_id"] == "ida" and w["data"] == {}, w
        try:
            c.post("/set", data={"k": "v"}, headers=HEADERS)
            raise AssertionError("data written with cross_tab_sync off")
        except sessiond.FeatureDisabled as e:
            assert e.feature == "cross_tab_sync"
        r = c.get("/session/state", headers=HEADERS)
        assert r.status_code == 404 and r.json["feature"] == "cross_tab_sync"
        assert c.get("/session/config", headers=HEADERS).json["features"]["cross_tab_sync"] is False
        r = c.post("/session/heartbeat", headers=HEADERS)
        assert r.status_code == 200, (r.status_code, r.data)
        r = c.post("/login", data={"user": "ida"}, headers=HEADERS)  # rotation still works
        assert r.status_code == 200 and c.post("/logout", headers=HEADERS).status_code == 200


def test_daemon_away():
    # A daemon that cannot be reached: the visitor is anonymous for that
    # request, the cookie stays, and the session is back with the daemon.
    with Daemon() as d:
        app, iface = make_app(d)
        c = app.test_client()
        c.post("/login", data={"user": "jo"}, headers=HEADERS)
        d.stop()
        r = c.get("/whoami", headers=HEADERS)
        assert r.json["user_id"] is None and r.json["unavailable"] is True, r.json
        assert r.headers.getlist("Set-Cookie") == []
        assert c.get("/session/state", headers=HEADERS).status_code == 503
        d.start()
        assert c.get("/whoami", headers=HEADERS).json["user_id"] == "jo"


run_tests([
    test_cookie_flags,
    test_rotation_at_login,
    test_fingerprint,
    test_logout_and_logout_everywhere,
    test_expiry_mid_visit,
    test_blueprint,
    test_limits_and_sync_off,
    test_daemon_away,
])
