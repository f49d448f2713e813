"""Flask sessions kept by sessiond.

    import flask, sessiond.flask

    app = flask.Flask(__name__)
    app.session_interface = sessiond.flask.SessionInterface()

is all it takes: ``flask.session`` is then a session of the daemon. To also
serve the browser script's endpoints (``/session/...``) and get a hook for
sessions that ended, use ``SessionInterface().init_app(app)`` instead.

Design.

*The cookie holds the token only.* Its name, domain, path, Secure flag,
SameSite and expiry follow Flask's ``SESSION_COOKIE_*`` and
``PERMANENT_SESSION_LIFETIME`` exactly as Flask's own interface does, except
that HttpOnly is always on (the token is a bearer secret; page scripts use
the /session endpoints) and SameSite is Lax when the app leaves it unset.

*Every request validates* the token with the browser's fingerprint
(User-Agent, Accept-Language, Accept-Encoding and the client's IP: the
socket's peer, or the ``trusted_proxies``-th address from the right of
X-Forwarded-For, as werkzeug's ProxyFix counts them). A session that ended
(``Expired``), whose fingerprint changed (``FingerprintMismatch``), or that
the daemon does not know (``NotFound``, or a cookie that is not a token)
gives a fresh anonymous session whose ``ended`` attribute says why
(idle, lifetime, absolute, destroyed, terminated, evicted, rotated,
fingerprint, not_found, invalid); the response deletes the cookie, and the
``ended_handler`` hook may redirect to the login page. GET requests to the
blueprint (the browser script's checks) validate without touching, so an
open tab does not keep an idle session alive; the script's heartbeat does
that when the user is active.

*The data lives in the daemon*, in the session's sync state, never in the
cookie. The sync state is one JSON object shared with the browser:
``{"server": <the Flask session, in Flask's tagged JSON>, "client": <the
browser's state>, "cv": <the browser state's version>}``. The browser reads
and writes only ``client`` (``/session/state``), and the version it sees is
``cv``, which only its own writes move, so a page load that changes the
Flask session never makes a tab's write conflict; ``server`` never leaves
the server. Every write is a compare-and-set on the daemon's version of
the whole object: a Flask session that changed is written over the fresh
browser part when another request or a tab wrote meanwhile (the browser's
state is kept; of two requests changing the Flask session at once the last
one wins, as with Flask's own cookie sessions), and a browser write is
checked again against the fresh ``cv``.

*Past ``sync.max_data_size``* (the whole JSON object, in bytes) the daemon
refuses the write (``TooLarge``): a browser write answers 413 and changes
nothing; a Flask session that grew too large raises ``sessiond.TooLarge``
from ``save_session``, so the request fails (500) instead of silently losing
data. Keep ids in the session, not objects, or raise the limit.

*With ``features.cross_tab_sync`` off* the daemon keeps no sync state. Flask
sessions still work as sessions: login, logout, rotation, fingerprints,
expiry, ``session.user_id``; but the session holds no data: it reads as
empty and a write raises ``sessiond.FeatureDisabled`` at once, where the
app wrote it (never a silent loss). ``/session/state`` answers 404 and the
browser script stays inert.

*Anonymous visitors have no daemon session* (sessions belong to a user, and
a crawler should cost nothing): their session is empty and writing to it
raises :class:`NotLoggedIn`. :func:`login` creates the session.

*A daemon that cannot be reached* leaves the visitor anonymous for that
request (``session.unavailable`` is True) without deleting the cookie, so
sessions come back with the daemon; calls that must write raise
``sessiond.Unavailable``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterator, Optional

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_from_directory
from flask import session as _flask_session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface as _FlaskSessionInterface
from flask.sessions import SessionMixin
from werkzeug.datastructures import CallbackDict

from .client import Client, ClientInfo
from .errors import (Conflict, Error, Expired, FeatureDisabled, FingerprintMismatch,
                     InvalidArgument, NotFound, TooLarge, Unavailable)

__all__ = ["SessionInterface", "SessiondSession", "NotLoggedIn", "blueprint", "login", "logout",
           "logout_everywhere", "switch_platform", "current_session"]

#: how often an idle server-sent event stream sends a comment (seconds)
SSE_KEEPALIVE = 15.0
#: compare-and-set rounds before a write gives up
_CAS_ROUNDS = 8


class NotLoggedIn(Error):
    """The request has no daemon session (an anonymous visitor): it has no
    data to write and nothing to log out or switch. Call :func:`login`."""


class SessiondSession(CallbackDict, SessionMixin):
    """``flask.session`` under :class:`SessionInterface`: a dict of the
    session's data, plus what the daemon said of the session.

    ``token`` (None for an anonymous visitor), ``info`` (SessionInfo dict),
    ``user_id``, ``platform_id``, ``session_id``, ``expires_in``, ``warning``,
    ``state`` (active or grace), ``ended`` (why the session the request came
    with no longer holds, else None), ``unavailable`` (the daemon could not
    be reached), ``data_available`` (False when cross-tab sync is off).
    """

    def __init__(self, data: Optional[Dict[str, Any]] = None) -> None:
        def on_update(self: "SessiondSession") -> None:
            if self.token is None:
                raise NotLoggedIn("no session to store data in: log the user in first "
                                  "(sessiond.flask.login)")
            if not self.data_available:
                raise FeatureDisabled(
                    "features.cross_tab_sync is off: sessiond keeps no data for this session",
                    parameters={"feature": "cross_tab_sync"})
            self.modified = True
            self.accessed = True

        super().__init__(data, on_update)
        self.token: Optional[str] = None
        self.info: Optional[Dict[str, Any]] = None
        self.state: Optional[str] = None
        self.expires_in: Optional[int] = None
        self.warning = False
        self.ended: Optional[str] = None
        self.unavailable = False
        self.data_available = False
        self.modified = False
        self.accessed = False
        self.version = 0                  # the daemon's version of the sync state
        self.client_state: Any = None     # the browser's part of the sync state
        self.client_version = 0           # the browser part's own version (cv)
        self.new_token = False            # the cookie must be (re)set
        self.drop_cookie = False          # the cookie must be deleted
        self._permanent_here = False

    @property  # type: ignore[override]
    def permanent(self) -> bool:
        """Flask's permanent flag: kept in the data when the session has
        some, else for this request only (anonymous visitors, sync off)."""
        return bool(self.get("_permanent", self._permanent_here))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if self.token is not None and self.data_available:
            self["_permanent"] = bool(value)
        else:
            self._permanent_here = bool(value)

    @property
    def user_id(self) -> Optional[str]:
        return self.info["user_id"] if self.info else None

    @property
    def platform_id(self) -> Optional[str]:
        return self.info.get("platform_id") if self.info else None

    @property
    def session_id(self) -> Optional[str]:
        return self.info["id"] if self.info else None

    def _replace(self, data: Dict[str, Any]) -> None:
        """Sets the data without marking the session modified."""
        dict.clear(self)
        dict.update(self, data)


def current_session() -> SessiondSession:
    """``flask.session``, checked to be a sessiond session."""
    s = _flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(s, SessiondSession):
        raise RuntimeError("the app's session_interface is not sessiond.flask.SessionInterface")
    return s


def _ended_reason(e: Error) -> str:
    if isinstance(e, Expired):
        return e.reason or "expired"
    if isinstance(e, FingerprintMismatch):
        return "fingerprint"
    if isinstance(e, NotFound):
        return "not_found"
    return "invalid"


class SessionInterface(_FlaskSessionInterface):
    """A Flask session interface whose sessions live in sessiond.

    ``socket_path``: the daemon's socket (default ``$SESSIOND_SOCKET``, then
    /run/sessiond/sessiond.sock); ``trusted_proxies``: how many reverse
    proxies in front of the app append to X-Forwarded-For (0: use the
    socket's peer address); ``client``: a :class:`sessiond.Client` to share
    instead; ``on_ended(reason)``: see :meth:`ended_handler`.
    """

    serializer = TaggedJSONSerializer()

    def __init__(self, socket_path: Optional[str] = None, trusted_proxies: int = 0,
                 client: Optional[Client] = None,
                 on_ended: Optional[Callable[[str], Any]] = None) -> None:
        if not isinstance(trusted_proxies, int) or trusted_proxies < 0:
            raise ValueError("trusted_proxies must be a count (0 or more)")
        self.client = client or Client(socket_path)
        self.trusted_proxies = trusted_proxies
        self.on_ended = on_ended

    # -- wiring ------------------------------------------------------------

    def init_app(self, app: Flask, url_prefix: str = "/session") -> None:
        """Makes this the app's session interface, registers the browser
        endpoints under ``url_prefix`` and the ``on_ended`` hook."""
        app.session_interface = self
        app.register_blueprint(blueprint, url_prefix=url_prefix)

        @app.before_request
        def _sessiond_ended() -> Any:
            s = _flask_session
            if self.on_ended is not None and isinstance(s, SessiondSession) and s.ended:
                return self.on_ended(s.ended)
            return None

    def ended_handler(self, f: Callable[[str], Any]) -> Callable[[str], Any]:
        """Decorator: ``f(reason)`` runs before a request whose session
        ended (see :attr:`SessiondSession.ended`); a response it returns
        (e.g. a redirect to the login page) is sent instead. Needs
        :meth:`init_app`."""
        self.on_ended = f
        return f

    # -- fingerprint ----------------------------------------------------------

    def client_ip(self, req: Any) -> Optional[str]:
        """The client's address: the peer's, or the ``trusted_proxies``-th
        entry from the right of X-Forwarded-For when there are enough."""
        if self.trusted_proxies:
            values = [v.strip() for v in ",".join(req.headers.getlist("X-Forwarded-For")).split(",")
                      if v.strip()]
            if len(values) >= self.trusted_proxies:
                return values[-self.trusted_proxies]
        return req.remote_addr

    def fingerprint(self, req: Any) -> ClientInfo:
        """What the daemon checks on every request."""
        return {
            "user_agent": req.headers.get("User-Agent"),
            "ip": self.client_ip(req),
            "accept_language": req.headers.get("Accept-Language"),
            "accept_encoding": req.headers.get("Accept-Encoding"),
        }

    # -- the sync state ---------------------------------------------------------

    def load_data(self, s: SessiondSession, keep_server: bool = False) -> None:
        """Reads the session's sync state into ``s``: its Flask data (unless
        ``keep_server``: this request's data wins), the browser's part and
        the version. Sets ``data_available`` to False when sync is off."""
        assert s.token is not None
        try:
            r = self.client.get_sync_state(s.token)
        except FeatureDisabled:
            s.data_available = False
            s._replace({})
            return
        s.data_available = True
        s.version = r.get("version", 0)
        server, s.client_state, s.client_version = self.decode_state(r.get("data"), s.version)
        if not keep_server:
            s._replace(server)

    def decode_state(self, data: Optional[str], version: int) -> tuple:
        """(Flask data, browser state, browser version) from the sync
        state's text and version. A state that is not sessiond.flask's
        object (written by another client) is all browser state, at the
        daemon's version."""
        if not data:
            return {}, None, 0
        try:
            blob = json.loads(data)
        except ValueError:
            return {}, data, version
        if not isinstance(blob, dict) or not set(blob) <= {"server", "client", "cv"} \
                or not isinstance(blob.get("cv", 0), int):
            return {}, blob, version
        server = blob.get("server")
        server = self.serializer.loads(json.dumps(server)) if isinstance(server, dict) else {}
        return server, blob.get("client"), blob.get("cv", 0)

    def encode_state(self, server: Dict[str, Any], client_state: Any, client_version: int) -> str:
        blob: Dict[str, Any] = {}
        if server:
            blob["server"] = self.serializer.tag(dict(server))
        if client_state is not None:
            blob["client"] = client_state
        if client_version:
            blob["cv"] = client_version
        return json.dumps(blob, separators=(",", ":"), ensure_ascii=False)

    def store_data(self, s: SessiondSession) -> None:
        """Writes the Flask data of ``s`` (compare-and-set; on a conflict the
        fresh browser state is kept and the Flask data written over it)."""
        assert s.token is not None and s.data_available
        for _ in range(_CAS_ROUNDS):
            text = self.encode_state(s, s.client_state, s.client_version)
            try:
                s.version = self.client.set_sync_state(s.token, text, expected_version=s.version)["version"]
                s.modified = False
                return
            except Conflict:
                self.load_data(s, keep_server=True)
            except TooLarge as e:
                current_app.logger.error(
                    "sessiond: the Flask session of user %s is %d bytes with the browser's state, "
                    "over sync.max_data_size (%s): not saved", s.user_id, len(text.encode()), e.max)
                raise
        raise Conflict("the sync state kept changing under this request",
                       parameters={"version": s.version})

    # -- Flask's interface --------------------------------------------------------

    def _passive(self, app: Flask, req: Any) -> bool:
        """A browser script's check (a GET under the blueprint): validates
        without touching."""
        prefix = app.extensions.get("sessiond", {}).get("url_prefix")
        return bool(prefix) and req.method in ("GET", "HEAD") and req.path.startswith(prefix + "/")

    def open_session(self, app: Flask, request: Any) -> SessiondSession:
        s = SessiondSession()
        token = request.cookies.get(self.get_cookie_name(app))
        if not token:
            return s
        try:
            v = self.client.validate(token, client=self.fingerprint(request),
                                     touch=not self._passive(app, request))
        except (Expired, FingerprintMismatch, NotFound, InvalidArgument) as e:
            s.ended = _ended_reason(e)
            s.drop_cookie = True
            return s
        except Unavailable as e:
            app.logger.error("sessiond: %s; the request goes on without its session", e)
            s.unavailable = True
            return s
        s.token = token
        self._apply_validation(s, v)
        try:
            self.load_data(s)
        except Unavailable as e:
            app.logger.error("sessiond: %s; the request goes on without its session", e)
            s = SessiondSession()
            s.unavailable = True
        return s

    @staticmethod
    def _apply_validation(s: SessiondSession, v: Dict[str, Any]) -> None:
        s.info = v["session"]
        s.state = v.get("state", "active")
        s.expires_in = v.get("expires_in")
        s.warning = bool(v.get("warning"))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        s = session
        assert isinstance(s, SessiondSession)
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        secure = self.get_cookie_secure(app)
        samesite = self.get_cookie_samesite(app) or "Lax"
        if s.token is None:
            if s.drop_cookie:
                response.delete_cookie(name, domain=domain, path=path, secure=secure,
                                       httponly=True, samesite=samesite)
                response.vary.add("Cookie")
            return
        response.vary.add("Cookie")
        if s.modified and s.data_available:
            self.store_data(s)
        if s.new_token or self.should_set_cookie(app, s):
            response.set_cookie(name, s.token, expires=self.get_expiration_time(app, s),
                                httponly=True, domain=domain, path=path, secure=secure,
                                samesite=samesite)


def _interface() -> SessionInterface:
    iface = current_app.session_interface
    if not isinstance(iface, SessionInterface):
        raise RuntimeError("the app's session_interface is not sessiond.flask.SessionInterface")
    return iface


# -- helpers for views ------------------------------------------------------------

def login(user_id: str, platform_id: Optional[str] = None) -> SessiondSession:
    """Logs ``user_id`` in for this browser, always with a new token: the
    same user's session is rotated (its data kept; ``platform_id`` switched
    to if given and different), any other session is ended and a new one
    created (no data carried over from another user)."""
    iface, s = _interface(), current_session()
    client = iface.client
    if s.token is not None and s.user_id == user_id:
        r = client.rotate(s.token)
        s.token, s.info = r["token"], r["session"]
        if platform_id is not None and platform_id != s.platform_id:
            s.info = client.switch_platform(s.token, platform_id)["session"]
    else:
        if s.token is not None:
            try:
                client.destroy(s.token)
            except (Expired, NotFound):
                pass
            s._replace({})
            s.modified = False
        r = client.create(user_id, platform_id=platform_id, client=iface.fingerprint(request))
        s.token, s.info = r["token"], r["session"]
    s.new_token, s.drop_cookie, s.ended = True, False, None
    v = client.validate(s.token, touch=False)
    iface._apply_validation(s, v)
    iface.load_data(s, keep_server=s.modified)
    return s


def _forget(s: SessiondSession) -> None:
    s.token, s.info, s.state, s.expires_in, s.warning = None, None, None, None, False
    s.version, s.client_state, s.client_version, s.data_available = 0, None, 0, False
    s.new_token = False
    s._replace({})
    s.modified = False
    s.drop_cookie = True


def logout() -> None:
    """Ends this browser's session and deletes its cookie."""
    s = current_session()
    if s.token is not None:
        try:
            _interface().client.destroy(s.token)
        except (Expired, NotFound):
            pass
    _forget(s)


def logout_everywhere(keep_current: bool = False) -> int:
    """Ends every session of the logged-in user (all browsers and devices),
    or every one but this one with ``keep_current``. Returns how many ended."""
    s = current_session()
    if s.token is None or s.user_id is None:
        raise NotLoggedIn("logout_everywhere needs a logged-in session")
    count = _interface().client.destroy_user(s.user_id,
                                             except_token=s.token if keep_current else None)["count"]
    if not keep_current:
        _forget(s)
    return count


def switch_platform(platform_id: str) -> SessiondSession:
    """Moves this session to ``platform_id`` (sessiond.RateLimited past
    security.max_platform_switches_per_hour, FeatureDisabled when platform
    switching is off)."""
    s = current_session()
    if s.token is None:
        raise NotLoggedIn("switch_platform needs a logged-in session")
    s.info = _interface().client.switch_platform(s.token, platform_id)["session"]
    return s


# -- the browser's endpoints ------------------------------------------------------------

blueprint = Blueprint("sessiond", __name__)


@blueprint.record
def _remember_prefix(state: Any) -> None:
    state.app.extensions.setdefault("sessiond", {})["url_prefix"] = (state.url_prefix or "").rstrip("/")


def _no_session() -> Response:
    s = current_session()
    body: Dict[str, Any] = {"error": "ended" if s.ended else "no_session"}
    if s.ended:
        body["reason"] = s.ended
    if s.unavailable:
        body["error"] = "unavailable"
        r = jsonify(body)
        r.status_code = 503
        return r
    r = jsonify(body)
    r.status_code = 401
    return r


def _error(status: int, error: str, **extra: Any) -> Response:
    r = jsonify(dict(error=error, **extra))
    r.status_code = status
    return r


def _session_summary(s: SessiondSession) -> Dict[str, Any]:
    return {"user_id": s.user_id, "session_id": s.session_id, "platform_id": s.platform_id,
            "expires_in": s.expires_in, "warning": s.warning, "state": s.state}


@blueprint.get("/config")
def _config() -> Response:
    """GetClientConfig: the sync settings, warning_threshold and features."""
    return jsonify(_interface().client.get_client_config()["config"])


def _js_dirs() -> Iterator[str]:
    if os.environ.get("SESSIOND_JS_DIR"):
        yield os.environ["SESSIOND_JS_DIR"]
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "..", "..", "js")  # the source tree: lib/python/sessiond -> lib/js
    try:
        from . import _paths  # written by meson at install
        yield _paths.JS_DIR
    except ImportError:
        pass


@blueprint.get("/sync.js")
def _script() -> Response:
    """The browser script, session-sync.js."""
    for d in _js_dirs():
        if os.path.isfile(os.path.join(d, "session-sync.js")):
            return send_from_directory(os.path.abspath(d), "session-sync.js")
    return _error(404, "session-sync.js not found (set SESSIOND_JS_DIR)")


@blueprint.post("/heartbeat")
def _heartbeat() -> Response:
    """Touches the session (the browser saw the user active)."""
    s = current_session()
    if s.token is None:
        return _no_session()
    try:
        r = _interface().client.heartbeat(s.token)
    except (Expired, NotFound, FingerprintMismatch) as e:
        _forget(s)
        s.ended = _ended_reason(e)
        return _no_session()
    s.expires_in, s.warning = r["expires_in"], r["warning"]
    return jsonify(_session_summary(s))


@blueprint.get("/state")
def _get_state() -> Response:
    """The browser's part of the sync state, its version, and the session."""
    s = current_session()
    if s.token is None:
        return _no_session()
    if not s.data_available:
        return _error(404, "FeatureDisabled", feature="cross_tab_sync")
    return jsonify(dict(_session_summary(s), version=s.client_version, data=s.client_state))


@blueprint.put("/state")
def _put_state() -> Response:
    """Writes the browser's state: ``{"data": ..., "expected_version": n}``
    (compare-and-set when expected_version is given: 409 with the current
    version and data when it is not current; 413 past sync.max_data_size)."""
    s = current_session()
    if s.token is None:
        return _no_session()
    if not s.data_available:
        return _error(404, "FeatureDisabled", feature="cross_tab_sync")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "data" not in body:
        return _error(400, "InvalidArgument", field="data",
                      reason='the body must be a JSON object {"data": ..., "expected_version": n}')
    expected = body.get("expected_version")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)
                                 or expected < 0):
        return _error(400, "InvalidArgument", field="expected_version",
                      reason="must be a version number")
    iface = _interface()
    for _ in range(_CAS_ROUNDS):
        if expected is not None and expected != s.client_version:
            return _error(409, "Conflict", version=s.client_version, data=s.client_state)
        try:
            text = iface.encode_state(s, body["data"], s.client_version + 1)
            s.version = iface.client.set_sync_state(s.token, text, expected_version=s.version)["version"]
        except Conflict:
            iface.load_data(s)
            continue
        except TooLarge as e:
            return _error(413, "TooLarge", max=e.max)
        s.client_state, s.client_version = body["data"], s.client_version + 1
        return jsonify(version=s.client_version, data=s.client_state)
    return _error(409, "Conflict", version=s.client_version, data=s.client_state)


def _sse(event: Dict[str, Any], iface: SessionInterface) -> str:
    """One server-sent event; the sync state's browser part only."""
    info = event.get("session") or {}
    payload: Dict[str, Any] = {"event": event.get("event"), "user_id": info.get("user_id"),
                               "session_id": info.get("id"), "platform_id": info.get("platform_id"),
                               "expires_at": info.get("expires_at"), "state": info.get("state")}
    if info.get("end_reason"):
        payload["reason"] = info["end_reason"]
    if "version" in event:
        _, payload["data"], payload["version"] = iface.decode_state(event.get("data"), event["version"])
    return "event: %s\ndata: %s\n\n" % (event.get("event"), json.dumps(payload, separators=(",", ":")))


@blueprint.get("/events")
def _events() -> Response:
    """The session's Watch stream as server-sent events: state, sync,
    platform, warning, then ended or rotated (the stream ends)."""
    s = current_session()
    if s.token is None:
        return _no_session()
    iface = _interface()
    watch = iface.client.watch(s.token)
    try:
        first = watch.read(iface.client.timeout)
    except (TimeoutError, Unavailable):
        watch.close()
        return _error(503, "unavailable")
    except Error as e:
        watch.close()
        return _error(401, "ended", reason=_ended_reason(e))

    def stream() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            event, seen = first, None  # seen: the browser version last sent
            while event is not None:
                name = event.get("event")
                cv = iface.decode_state(event.get("data"), event["version"])[2] \
                    if "version" in event else None
                # A sync event where only the Flask part changed says nothing
                # to the browser.
                if not (name == "sync" and cv == seen):
                    seen = cv if cv is not None else seen
                    yield _sse(event, iface)
                if name in ("ended", "rotated"):
                    return
                while True:
                    try:
                        event = watch.read(SSE_KEEPALIVE)
                        break
                    except TimeoutError:
                        yield ": keepalive\n\n"
        except Unavailable:
            yield "event: unavailable\ndata: {}\n\n"
        finally:
            watch.close()

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
