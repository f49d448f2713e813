"""The exceptions of the sessiond client.

Every Varlink error the daemon answers becomes an exception named after it,
a subclass of :class:`Error`. Each carries the error's full Varlink name in
``.error`` and its parameters in ``.parameters``; the interface's documented
parameters are also attributes (``Expired.reason``, ``RateLimited.retry_after``,
``TooLarge.max``, ``Conflict.version``, ``FeatureDisabled.feature``,
``InvalidArgument.field`` and ``.reason``, ``StorageFull.reason``,
``StorageError.reason``).

Errors of the Varlink service itself (``org.varlink.service.*``, e.g.
``InvalidParameter`` for a parameter of the wrong JSON type, or
``PermissionDenied``) are :class:`VarlinkError`. A daemon that cannot be
reached, or that went away in the middle of a call, is :class:`Unavailable`
(also an :class:`OSError`, so code that already catches socket errors keeps
working).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

SESSION_INTERFACE = "io.sessiond.Session"


class Error(Exception):
    """Base class of every error raised by the sessiond client."""

    #: the full Varlink error name, e.g. "io.sessiond.Session.Expired"
    error: str = ""
    #: the error's parameters as the daemon sent them
    parameters: Dict[str, Any]

    def __init__(self, message: str = "", error: str = "",
                 parameters: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message or error or self.__class__.__name__)
        self.error = error or self.error
        self.parameters = dict(parameters or {})


class VarlinkError(Error):
    """A Varlink error that is not one of io.sessiond.Session's (for
    example org.varlink.service.InvalidParameter or MethodNotFound)."""


class Unavailable(Error, OSError):
    """The daemon could not be reached, or the connection broke during a
    call. ``sent`` tells whether the call may have reached the daemon (then
    a write may or may not have happened)."""

    def __init__(self, message: str, sent: bool = False) -> None:
        Error.__init__(self, message)
        self.sent = sent


class SessionError(Error):
    """An error of the io.sessiond.Session interface."""

    #: the parameters that become attributes of the exception
    fields: tuple = ()

    def __init__(self, message: str = "", error: str = "",
                 parameters: Optional[Dict[str, Any]] = None) -> None:
        parameters = dict(parameters or {})
        name = self.__class__.__name__
        if not message:
            detail = ", ".join("%s=%r" % (f, parameters.get(f)) for f in self.fields)
            message = "%s(%s)" % (name, detail) if detail else name
        super().__init__(message, error or "%s.%s" % (SESSION_INTERFACE, name), parameters)
        for f in self.fields:
            setattr(self, f, parameters.get(f))


class NotFound(SessionError):
    """The token belongs to no session the daemon knows (never issued, or
    purged after its retention)."""


class Expired(SessionError):
    """The session has ended; ``reason`` is idle, lifetime, absolute,
    terminated, evicted, rotated or destroyed."""
    fields = ("reason",)
    reason: str


class FingerprintMismatch(SessionError):
    """The client's user agent differs from the one the session was
    created with."""


class RateLimited(SessionError):
    """Too many platform switches; ``retry_after`` is in seconds."""
    fields = ("retry_after",)
    retry_after: int


class TooLarge(SessionError):
    """The sync data is larger than ``max`` bytes (sync.max_data_size)."""
    fields = ("max",)
    max: int


class Conflict(SessionError):
    """A compare-and-set lost: ``version`` is the current version."""
    fields = ("version",)
    version: int


class FeatureDisabled(SessionError):
    """The call needs a feature that is turned off (``feature``, e.g.
    cross_tab_sync or platform_switching)."""
    fields = ("feature",)
    feature: str


class InvalidArgument(SessionError):
    """A parameter's value is wrong: ``field`` and ``reason`` say how."""
    fields = ("field", "reason")
    field: str
    reason: str


class StorageFull(SessionError):
    """The store could not commit the write (disk full); the write did not
    happen."""
    fields = ("reason",)
    reason: str


class StorageError(SessionError):
    """The store could not commit the write; the write did not happen."""
    fields = ("reason",)
    reason: str


_SESSION_ERRORS: Dict[str, Type[SessionError]] = {
    cls.__name__: cls for cls in (NotFound, Expired, FingerprintMismatch, RateLimited,
                                  TooLarge, Conflict, FeatureDisabled, InvalidArgument,
                                  StorageFull, StorageError)
}


def error_from_reply(error: str, parameters: Optional[Dict[str, Any]]) -> Error:
    """The exception for a Varlink error reply."""
    iface, _, name = error.rpartition(".")
    if iface == SESSION_INTERFACE and name in _SESSION_ERRORS:
        return _SESSION_ERRORS[name](error=error, parameters=parameters)
    return VarlinkError("%s %r" % (error, parameters or {}), error, parameters)
