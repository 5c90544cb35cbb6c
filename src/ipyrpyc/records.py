"""One record per rpyc connection: everything ipyrpyc knows about it.

The registry of a shell owns the records (see :mod:`.registry`); display,
completion, inspection, tracebacks and calls find a connection's helper, guard,
origin and owner through its record, never through the connection object itself.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .calls import CallGuard
    from .helper import RemoteHelper


class Record:
    """A connection, who opened it, the server program's handle on it, and its call guard.

    ``owner`` is the session that opened it (None for a connection opened by hand
    with rpyc); ``retired`` becomes true when that session closes or replaces it.
    """

    def __init__(self, conn: Any, name: str, address: str, owner: Any = None) -> None:
        self.conn_ref = weakref.ref(conn)
        self.name = name
        self.address = address
        self.owner = owner
        self.helper: Optional["RemoteHelper"] = None
        self.helper_error: Optional[str] = None  # why the helper could not be installed
        self.guard: Optional["CallGuard"] = None
        self.retired = False
        self.last_cell_error: Optional[BaseException] = None  # raised by the last failed %%rpyc cell
        self.on_close: Optional[Callable[[], None]] = None  # called once when the connection is closed
        self.auto_reconnect: Callable[[], bool] = lambda: False  # a lost connection reopens after the cell

    @property
    def conn(self) -> Any:
        return self.conn_ref()

    @property
    def pid(self) -> Optional[int]:
        return self.helper.pid if self.helper is not None else None

    def label(self) -> str:
        """Where remote errors came from: ``address, pid N``."""
        return ", ".join(p for p in (self.address, f"pid {self.pid}" if self.pid else None) if p) or "server"

    def interrupt_remote(self) -> bool:
        """Stop the remote work of this connection, where its owner knows how."""
        interrupt = getattr(self.owner, "interrupt_remote", None)
        return bool(interrupt()) if interrupt is not None and not self.retired else False

    def __repr__(self) -> str:
        return f"<Record {self.name!r} {self.address}{' retired' if self.retired else ''}>"
