"""A standard-library client for sessiond's Varlink socket.

Design. Varlink over a Unix socket is one JSON object per message, ended by
a NUL byte, with the replies of a connection in request order. A
connection therefore serves one call at a time. :class:`Client` keeps a
small pool of idle connections behind a lock: a call takes one (or opens
one), makes its call, and gives it back, so any number of threads can
share one client and each gets its own connection while it needs one;
the pool only bounds how many stay open when idle.

A pooled connection may have died while it sat idle (the daemon restarted,
or closed it). Before reuse a connection is polled: a readable idle socket
is either at end of file or out of step, and is dropped. If a call still
meets a broken socket, it is retried once on a fresh connection when that is
known to be safe: the call was not sent, or the method only reads or
touches (Validate, Heartbeat, GetSyncState, ListUser, GetClientConfig).
A write whose fate is unknown is never repeated behind the caller's back:
it raises :class:`~sessiond.Unavailable` with ``sent=True``.

``Watch`` is a stream (``more``): it gets its own connection, outside the
pool, that lives as long as the iterator.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from typing import Any, Dict, Iterator, List, Optional, TypedDict

from .errors import Unavailable, error_from_reply

DEFAULT_SOCKET = "/run/sessiond/sessiond.sock"
IFACE = "io.sessiond.Session"

# Calls that are safe to send again when the connection broke after they
# were sent: they read, or touch (a second touch changes nothing).
_RETRYABLE = frozenset({"Validate", "Heartbeat", "GetSyncState", "ListUser", "GetClientConfig",
                        "org.varlink.service.GetInfo"})


class ClientInfo(TypedDict, total=False):
    """The protocol's Client type: what the web app knows of the browser
    (used for fingerprinting)."""
    user_agent: Optional[str]
    ip: Optional[str]
    accept_language: Optional[str]
    accept_encoding: Optional[str]


def default_socket_path() -> str:
    """``$SESSIOND_SOCKET``, else /run/sessiond/sessiond.sock."""
    return os.environ.get("SESSIOND_SOCKET") or DEFAULT_SOCKET


class _Connection:
    """One blocking Varlink connection."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = bytearray()
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise Unavailable("cannot connect to sessiond at %s: %s" % (path, e)) from e

    def close(self) -> None:
        self.sock.close()

    def is_stale(self) -> bool:
        """True when an idle connection can no longer be used: the daemon
        closed it, or something unasked-for is waiting on it."""
        if self.buf:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def send(self, message: Dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\0")

    def recv(self) -> Dict[str, Any]:
        """The next message; raises EOFError when the daemon closed the
        connection, socket.timeout on a timeout."""
        while True:
            end = self.buf.find(b"\0")
            if end >= 0:
                raw = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return json.loads(raw)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("sessiond closed the connection")
            self.buf += chunk


def _reply_parameters(reply: Dict[str, Any]) -> Dict[str, Any]:
    if "error" in reply:
        raise error_from_reply(reply["error"], reply.get("parameters"))
    return dict(reply.get("parameters") or {})


def _clean(parameters: Dict[str, Any]) -> Dict[str, Any]:
    """Drops parameters left at None (optional ones the caller did not give)."""
    out = {}
    for k, v in parameters.items():
        if v is None:
            continue
        if isinstance(v, dict):
            v = {ck: cv for ck, cv in v.items() if cv is not None}
        out[k] = v
    return out


class Watch:
    """The events of one session, as an iterator of dicts.

    The first event is ``state`` (the session, and its sync ``version`` and
    ``data`` when cross-tab sync is on); then ``sync``, ``platform``,
    ``warning``, and finally ``ended`` or ``rotated``, after which the
    iteration stops. Each event is the reply's parameters: ``event``,
    ``session`` and, for sync events, ``version`` and ``data``.

    Errors of the call (``Expired``, ``NotFound``...) are raised by the
    first ``next()``; a daemon that goes away raises :class:`Unavailable`.
    Use it as a context manager, or call :meth:`close`, to hang up early.
    """

    def __init__(self, path: str, token: str, connect_timeout: Optional[float]) -> None:
        self._conn: Optional[_Connection] = _Connection(path, connect_timeout)
        self._done = False
        try:
            self._conn.send({"method": IFACE + ".Watch", "parameters": {"token": token}, "more": True})
        except OSError as e:
            self.close()
            raise Unavailable("sessiond went away: %s" % e, sent=True) from e

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return self

    def __next__(self) -> Dict[str, Any]:
        event = self.read(None)
        if event is None:
            raise StopIteration
        return event

    def read(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next event, waiting at most ``timeout`` seconds (None: for
        ever). Returns None when the stream is over; raises TimeoutError when
        no event came in time (the stream goes on)."""
        if self._done or self._conn is None:
            return None
        conn = self._conn
        try:
            if not conn.buf or b"\0" not in conn.buf:
                readable, _, _ = select.select([conn.sock], [], [], timeout)
                if not readable:
                    raise TimeoutError("no event within %ss" % timeout)
            conn.sock.settimeout(None)
            reply = conn.recv()
        except (EOFError, OSError) as e:
            if isinstance(e, TimeoutError):
                raise
            self.close()
            raise Unavailable("sessiond went away during Watch: %s" % e, sent=True) from e
        if "error" in reply or not reply.get("continues"):
            self.close()
        return _reply_parameters(reply)

    def fileno(self) -> int:
        """The socket's descriptor, for select() or an event loop."""
        if self._conn is None:
            raise ValueError("the Watch is closed")
        return self._conn.sock.fileno()

    def close(self) -> None:
        """Ends the stream (the daemon drops the watcher when it sees the
        connection close)."""
        self._done = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A thread-safe client of sessiond's io.sessiond.Session interface.

    ``socket_path`` defaults to ``$SESSIOND_SOCKET``, then
    /run/sessiond/sessiond.sock. ``timeout`` bounds each wait on the
    daemon (seconds); ``pool_size`` is how many idle connections are kept.

    Each method returns the reply's parameters as a plain dict and raises
    the interface's errors as exceptions (see :mod:`sessiond.errors`).
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: Optional[float] = 10.0,
                 pool_size: int = 8) -> None:
        assert pool_size >= 0
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.pool_size = pool_size
        self._idle: List[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections -------------------------------------------------------

    def _take(self) -> tuple:
        """(connection, reused): an idle connection still usable, else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return _Connection(self.socket_path, self.timeout), False
            if not conn.is_stale():
                return conn, True
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Closes the idle connections; calls made afterwards open new ones."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, method: str, parameters: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Calls any method (``io.sessiond.Session.X``, or a short ``X`` of
        that interface) and returns the reply's parameters."""
        full = method if "." in method else IFACE + "." + method
        message = {"method": full, "parameters": parameters or {}}
        retryable = full.rpartition(".")[2] in _RETRYABLE or full in _RETRYABLE
        for attempt in (0, 1):
            conn, reused = self._take()
            sent = False
            try:
                conn.send(message)
                sent = True
                reply = conn.recv()
            except (EOFError, OSError, ValueError) as e:
                conn.close()
                timed_out = isinstance(e, TimeoutError)
                if attempt == 0 and reused and not timed_out and (not sent or retryable):
                    continue
                what = "timed out" if timed_out else "went away"
                raise Unavailable("sessiond %s during %s: %s" % (what, full, e), sent=sent) from e
            self._give_back(conn)
            return _reply_parameters(reply)
        raise AssertionError("unreachable")

    # -- io.sessiond.Session -------------------------------------------------

    def create(self, user_id: str, platform_id: Optional[str] = None,
               client: Optional[ClientInfo] = None, sync_data: Optional[str] = None) -> Dict[str, Any]:
        """Logs ``user_id`` in: returns ``token`` (the bearer secret, the
        cookie's value), ``session`` (SessionInfo) and ``evicted`` (ids of
        sessions ended to stay within the per-user limit)."""
        return self.call("Create", _clean({"user_id": user_id, "platform_id": platform_id,
                                           "client": client, "sync_data": sync_data}))

    def validate(self, token: str, client: Optional[ClientInfo] = None,
                 touch: Optional[bool] = None) -> Dict[str, Any]:
        """Checks a token: returns ``session``, ``state`` (active or grace),
        ``expires_in`` and ``warning``. Touches unless ``touch`` is False."""
        return self.call("Validate", _clean({"token": token, "client": client, "touch": touch}))

    def heartbeat(self, token: str) -> Dict[str, Any]:
        """Touches the session (a tab open but idle): ``expires_in``, ``warning``."""
        return self.call("Heartbeat", {"token": token})

    def extend(self, token: str) -> Dict[str, Any]:
        """Renews the lifetime after re-authentication: ``session``, ``expires_in``."""
        return self.call("Extend", {"token": token})

    def rotate(self, token: str) -> Dict[str, Any]:
        """A new token (and session id) for the same session: ``token``,
        ``session``. The old token then answers Expired(rotated)."""
        return self.call("Rotate", {"token": token})

    def switch_platform(self, token: str, platform_id: str) -> Dict[str, Any]:
        """Moves the session to ``platform_id``: ``session``."""
        return self.call("SwitchPlatform", {"token": token, "platform_id": platform_id})

    def get_sync_state(self, token: str) -> Dict[str, Any]:
        """The session's sync state: ``version`` and ``data`` (absent when unset)."""
        return self.call("GetSyncState", {"token": token})

    def set_sync_state(self, token: str, data: str,
                       expected_version: Optional[int] = None) -> Dict[str, Any]:
        """Replaces the sync state (compare-and-set when ``expected_version``
        is given: Conflict otherwise): the new ``version``."""
        return self.call("SetSyncState", _clean({"token": token, "data": data,
                                                 "expected_version": expected_version}))

    def watch(self, token: str) -> Watch:
        """The session's events as an iterator (see :class:`Watch`)."""
        return Watch(self.socket_path, token, self.timeout)

    def destroy(self, token: str) -> Dict[str, Any]:
        """Logs the session out."""
        return self.call("Destroy", {"token": token})

    def destroy_user(self, user_id: str, except_token: Optional[str] = None) -> Dict[str, Any]:
        """Logs ``user_id`` out everywhere (but the session of
        ``except_token``): ``count`` of sessions ended."""
        return self.call("DestroyUser", _clean({"user_id": user_id, "except_token": except_token}))

    def list_user(self, user_id: str) -> Dict[str, Any]:
        """The user's live sessions: ``sessions``."""
        return self.call("ListUser", {"user_id": user_id})

    def get_client_config(self) -> Dict[str, Any]:
        """What a browser script needs: ``config`` with ``sync``,
        ``warning_threshold`` and ``features``."""
        return self.call("GetClientConfig")
