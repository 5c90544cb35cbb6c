"""The one place that knows rpyc's internals (rpyc 6; rpyc-ng keeps the same names)."""

from __future__ import annotations

import socket
from typing import Any, Optional

import rpyc
from rpyc.core.stream import SocketStream, TunneledSocketStream

BaseNetref = rpyc.BaseNetref


def is_netref(obj: Any) -> bool:
    """True for an rpyc proxy; costs no round trip."""
    try:
        return isinstance(obj, BaseNetref)
    except Exception:
        return False


def stream_from_socket(sock: socket.socket) -> SocketStream:
    return SocketStream(sock)


def tunneled_stream(sock: socket.socket, tunnel: Any) -> SocketStream:
    """A stream whose close also closes the SSH ``tunnel``."""
    stream = TunneledSocketStream(sock)
    stream.tun = tunnel
    return stream


def set_call_timeout(conn: Any, seconds: Optional[float]) -> None:
    """rpyc reads ``sync_request_timeout`` on every call, so this applies at once."""
    conn._config["sync_request_timeout"] = seconds


def call_timeout(conn: Any) -> Optional[float]:
    return conn._config.get("sync_request_timeout")


def server_listen(server: Any) -> None:
    """Bind and listen now, so the port is known before ``server.start()`` blocks."""
    server._listen()


def connection_of(netref: Any) -> Any:
    """The ``rpyc.Connection`` behind a netref, without a round trip (None when gone)."""
    try:
        ref = object.__getattribute__(netref, "____conn__")
    except AttributeError:
        return None
    return ref() if callable(ref) else ref
