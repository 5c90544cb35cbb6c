"""ipyrpyc's own errors about a connection: one clear line, drawn without our frames."""

from __future__ import annotations


class SessionError(Exception):
    """A connection cannot serve a call; the message names it and says what to do."""


class ConnectionLostError(SessionError, ConnectionError):
    """The server is gone (killed, stopped, network down)."""


class BusyError(SessionError, RuntimeError):
    """An interrupted or timed-out call is still running on the server."""


class StaleNetrefError(SessionError, ReferenceError):
    """A netref of a connection that was closed or replaced."""


class RemoteTimeoutError(SessionError, TimeoutError):
    """A remote call took longer than the connection's timeout."""
