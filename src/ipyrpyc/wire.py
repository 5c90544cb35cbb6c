"""What a connection sends: counting the requests a piece of code makes.

Every request is a round trip to the server.  ``RequestCounter`` is a teaching and
measuring tool (the notebooks and the tests use it), on any rpyc connection, ours
or one opened by hand with ``rpyc.classic.connect``::

    with RequestCounter(conn) as rc:
        rsys.path[0]
    rc.count, rc.handlers      # (2, ['getattr', 'getitem'])
"""

from __future__ import annotations

from typing import Any, List

from ._rpyc import HANDLER_NAMES, MSG_REQUEST, HANDLE_DEL


class RequestCounter:
    """Counts the requests this side sends on ``conn`` while active.

    ``count`` leaves out rpyc's fire-and-forget ``del`` messages (garbage collection of
    netrefs); ``handlers`` names every request, those included.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.count = 0
        self.handlers: List[str] = []

    def __enter__(self) -> "RequestCounter":
        original = self.conn._send

        def _send(msg: int, seq: int, args: Any) -> Any:
            if msg == MSG_REQUEST:
                handler = args[0] if isinstance(args, tuple) and args else None
                self.handlers.append(HANDLER_NAMES.get(handler, "?"))
                if handler != HANDLE_DEL:
                    self.count += 1
            return original(msg, seq, args)

        self._original = original
        self._own = "_send" in vars(self.conn)  # a wrapper of someone else's, to put back
        self.conn._send = _send
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._own:
            self.conn._send = self._original
        else:
            vars(self.conn).pop("_send", None)
