"""The handle of the server-side helper (see :mod:`._remote`), one per connection."""

from __future__ import annotations

import sys
import weakref
from typing import Any, Optional, Tuple

import rpyc

from . import _compat, _remote


class RemoteHelper:
    """Netrefs to the helper functions of :mod:`._remote` on one connection.

    Each call is one round trip, bounded by ``timeout`` (the reply of a call that
    ran out of time is dropped when it arrives; the connection stays usable).
    """

    def __init__(self, conn: Any, info: Tuple[Any, ...], display: Any, complete: Any, describe: Any,
                 execute: Any, run_cell: Any, interrupt: Any, route: Any, pull: Any, push: Any,
                 debug: Any) -> None:
        self.conn_ref = weakref.ref(conn)
        self.python, self.pid, self.host, self.connection_id = info
        self._display, self._complete, self._describe = display, complete, describe
        self._execute, self._run_cell, self._interrupt, self._route = execute, run_cell, interrupt, route
        self._pull, self._push, self._debug = pull, push, debug

    @classmethod
    def install(cls, conn: Any) -> "RemoteHelper":
        """Send the helper code to a classic server: one round trip."""
        info, *functions = conn.eval(_remote.BOOTSTRAP)
        helper = cls(conn, tuple(info), *functions)
        HELPERS[conn] = helper
        return helper

    @property
    def alive(self) -> bool:
        conn = self.conn_ref()
        return conn is not None and not _compat.is_closed(conn)

    def call(self, function: Any, *args: Any, timeout: Optional[float], what: str = "a helper call") -> Any:
        result = rpyc.async_(function)(*args)
        if timeout is not None:
            result.set_expiry(timeout)
        try:
            return result.value
        except BaseException:
            # The server still works on it (and serves this connection's requests one after the
            # other): the connection's guard makes later calls say so instead of waiting silently.
            conn = self.conn_ref()
            guard = conn.__dict__.get("sync_request") if conn is not None else None
            if not _compat.result_arrived(result) and hasattr(guard, "gave_up"):
                guard.gave_up(conn, result, f"{what} that ran out of time")
            raise

    def display(self, obj: Any, text_limit: int, data_limit: int, rich: bool, timeout: float) -> Any:
        return self.call(self._display, obj, text_limit, data_limit, rich, timeout=timeout, what="a display")

    def complete(self, obj: Any, chain: Tuple[str, ...], limit: int, timeout: float) -> Any:
        return self.call(self._complete, obj, chain, limit, timeout=timeout, what="a completion")

    def describe(self, obj: Any, detail: int, text_limit: int, timeout: float) -> Any:
        return self.call(self._describe, obj, detail, text_limit, timeout=timeout, what="an inspection")

    def execute(self, source: str, filename: str, namespace: Any) -> None:
        self._execute(source, filename, namespace)

    def run_cell(self, source: str, filename: str, namespace: Any) -> Tuple[bool, Any]:
        return self._run_cell(source, filename, namespace)

    def pull(self, namespace: Any, name: str) -> Any:
        """A copy of the server's ``namespace[name]``, as plain data (see :mod:`.transfer`)."""
        return self._pull(namespace, name)

    def push(self, namespace: Any, name: str, tree: Any) -> None:
        self._push(namespace, name, tree)

    def debug(self, readline: Any, write: Any) -> Optional[str]:
        """Post-mortem pdb on the server for this connection's last failed call (None: no failure)."""
        return self._debug(readline, write)

    def interrupt(self, connection_id: int, timeout: float) -> int:
        """Raise KeyboardInterrupt in the server threads serving ``connection_id`` (another connection)."""
        return self.call(self._interrupt, connection_id, timeout=timeout)

    def route(self, write: Any, timeout: Optional[float] = None) -> int:
        """Send this connection's remote stdout/stderr to ``write(name, text)``; None stops."""
        return self.call(self._route, write, timeout=timeout)


# The helper of every connection that has one (ours, and plain rpyc connections that
# were displayed); None where it could not be installed.
HELPERS: "weakref.WeakKeyDictionary[Any, Optional[RemoteHelper]]" = weakref.WeakKeyDictionary()


def helper_for(conn: Any) -> Optional[RemoteHelper]:
    """The connection's helper, installed on first use for connections that are not ours."""
    if conn is None or _compat.is_closed(conn):
        return None
    if conn in HELPERS:
        return HELPERS[conn]
    try:
        return RemoteHelper.install(conn)
    except Exception as e:
        HELPERS[conn] = None
        warn_once(f"the server {_compat.peer_address(conn) or ''} cannot run ipyrpyc's helper "
                   f"({type(e).__name__}); its objects display the plain rpyc way")
        return None


_warned: set = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"ipyrpyc: {message}", file=sys.stderr, flush=True)


class RemoteExecute:
    """``conn.execute`` that names each piece of code and gives its lines to the server's
    ``linecache``, so remote tracebacks show the source (a stock server compiles it as
    ``<string>``, with no source anywhere). One round trip, like the original."""

    def __init__(self, conn: Any, name: str, helper: RemoteHelper) -> None:
        self.namespace = conn.namespace
        self.name = name
        self.helper = helper
        self.count = 0

    def __call__(self, text: str) -> None:
        """Execute ``text`` in the connection's remote namespace."""
        self.count += 1
        self.helper.execute(text, f"<{self.name}.execute-{self.count}>", self.namespace)


class OutputSink:
    """Where the server sends this connection's stdout and stderr: the calling cell."""

    def write(self, name: str, text: str) -> None:
        stream = sys.stderr if name == "stderr" else sys.stdout
        stream.write(text)
        stream.flush()
