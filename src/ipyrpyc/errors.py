"""ipyrpyc's own errors: each one clear line, drawn without our frames.

Scripts can catch every one of them as :class:`IpyrpycError`, and connection
failures as the built-in ``ConnectionError`` too.  In IPython, the magics turn
the errors a user causes into a one-line ``UsageError``.
"""

from __future__ import annotations

from typing import Any


class IpyrpycError(Exception):
    """Base class of ipyrpyc's errors."""


class ConnectError(IpyrpycError, ConnectionError):
    """A connection could not be opened (refused, unreachable, unknown host, not an rpyc
    classic server, a rejected certificate, a failed SSH login …)."""


class DiscoveryError(IpyrpycError):
    """No rpyc registry answered, it knows no server, or it could not be reached."""


class SessionError(IpyrpycError):
    """An open connection cannot serve a call; the message names it and says what to do."""


class ConnectionLostError(SessionError, ConnectionError):
    """The server is gone (killed, stopped, network down)."""


class BusyError(SessionError, RuntimeError):
    """An interrupted or timed-out call is still running on the server."""


class StaleNetrefError(SessionError, ReferenceError):
    """A netref of a connection that was closed or replaced."""


class RemoteTimeoutError(SessionError, TimeoutError):
    """A remote call took longer than the connection's timeout."""


class GroupError(IpyrpycError):
    """Some members of a group failed a parallel call.  ``errors``: member name -> its exception
    (``raise err.errors[name]`` shows that one in full); ``results``: what every member gave."""

    def __init__(self, message: str, results: Any, kind: str = "execute") -> None:
        super().__init__(message)
        self.results = results
        self.errors = results.errors
        self.kind = kind  # what the members were asked: "execute" (a cell) or "apply" (a function)


class TransferError(IpyrpycError):
    """A copy of a value or a file could not be made; the message names the path or the type.
    Nothing half-written is left behind."""


class CallInterrupted(KeyboardInterrupt):
    """Ctrl-C (a kernel interrupt) stopped a remote call; still a ``KeyboardInterrupt``."""


CallInterrupted.__name__ = CallInterrupted.__qualname__ = "KeyboardInterrupt"
