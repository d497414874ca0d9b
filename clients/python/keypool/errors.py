"""The exceptions keypool raises, one class per kind of failure a caller may want to treat differently.

Everything derives from :class:`Error`, so ``except keypool.Error`` catches whatever the daemon or the
network did. Arguments that cannot be put on the wire at all (a secret with a space, a negative duration)
raise the built-in :class:`ValueError` before anything is sent, as any Python function would.
"""

from __future__ import annotations

import builtins

__all__ = [
    "Error",
    "ClientError",
    "ServerError",
    "AuthError",
    "ProtocolError",
    "ConnectionError",
    "NoKeyAvailable",
]


class Error(Exception):
    """Base class of every error keypool raises."""


class ClientError(Error):
    """The daemon refused a request as malformed or out of its limits (``CLIENT_ERROR`` or ``ERROR``).

    The message is the daemon's own, for example ``wait is longer than the maximum, 5m``. The connection
    stays usable.
    """


class ServerError(Error):
    """The daemon refused a well-formed request (``SERVER_ERROR``): ``pool full``, ``too many pools``,
    ``too many connections``."""


class AuthError(Error):
    """Authentication failed or is missing: ``ERROR NOAUTH``, a token the daemon does not accept, a token
    sent to a daemon without authentication, or a pool the token does not grant (``forbidden``)."""


class ProtocolError(Error):
    """The daemon sent a reply this client does not understand; the connection is dropped."""


class ConnectionError(Error, builtins.ConnectionError):
    """The connection could not be made, broke, or timed out while a request was in flight.

    It is also a built-in :class:`ConnectionError`, so code that already catches that keeps working. The
    request in flight may or may not have been carried out; the next call connects again.
    """


class NoKeyAvailable(Error):
    """:meth:`keypool.Client.leased` got no key within its wait."""
