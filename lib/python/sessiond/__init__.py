"""sessiond: user sessions for web applications, from Python.

A client of the sessiond daemon's Varlink socket (standard library only)::

    import sessiond

    client = sessiond.Client()            # $SESSIOND_SOCKET or /run/sessiond/sessiond.sock
    login = client.create("alice", client={"user_agent": ua, "ip": ip})
    token = login["token"]                # the cookie's value
    try:
        client.validate(token, client={"user_agent": ua, "ip": ip})
    except sessiond.Expired as e:
        print("ended:", e.reason)

Every method of io.sessiond.Session has a snake-case method on
:class:`Client` that returns the reply's parameters as a dict; Varlink
errors are raised as exceptions named after them, all subclasses of
:class:`Error`. :mod:`sessiond.flask` plugs sessions into Flask.
"""

from .client import DEFAULT_SOCKET, Client, ClientInfo, Watch, default_socket_path
from .errors import (Conflict, Error, Expired, FeatureDisabled, FingerprintMismatch,
                     InvalidArgument, NotFound, RateLimited, SessionError, StorageError,
                     StorageFull, TooLarge, Unavailable, VarlinkError)

__all__ = [
    "Client", "ClientInfo", "Watch", "DEFAULT_SOCKET", "default_socket_path",
    "Error", "SessionError", "VarlinkError", "Unavailable",
    "NotFound", "Expired", "FingerprintMismatch", "RateLimited", "TooLarge", "Conflict",
    "FeatureDisabled", "InvalidArgument", "StorageFull", "StorageError",
]
