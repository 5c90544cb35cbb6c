"""Every synchronous rpyc call of one of our connections, under control.

rpyc's own ``sync_request`` leaves a connection silently blocked after Ctrl-C (the
server keeps working and the next call waits for it), says ``EOFError`` when the
server is gone and ``result expired`` on a timeout.  :class:`CallGuard` replaces it
on our connections: an interrupted or timed-out call is stopped on the server where
Python can stop it, a connection still busy with one fails at once with a clear
line, and lost servers and stale netrefs get errors that say what to do.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _rpyc
from .errors import BusyError, CallInterrupted, ConnectionLostError, RemoteTimeoutError, StaleNetrefError
from .records import Record
from .text import inert

SETTLE_SECONDS = 0.5  # how long an interrupt waits for the server to confirm the call stopped


class CallGuard:
    """Installed as ``conn.sync_request``; netrefs of the connection call it for every request."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.pending: Optional[int] = None  # sequence number of an abandoned call still running
        self.pending_why = ""

    def __call__(self, handler: int, *args: Any) -> Any:
        record = self.record
        conn = record.conn
        if handler == _rpyc.HANDLE_CLOSE:
            # rpyc's close() (ours, the user's, or its own after the server vanished) says goodbye:
            # never wait for a busy or dead server, never raise out of close(); it ignores EOFError
            on_close, record.on_close = record.on_close, None
            if on_close is not None:
                on_close()
            raise EOFError("connection closed")
        if conn is None or record.retired:
            raise StaleNetrefError(
                f"this object belongs to an earlier connection {record.name!r} to {record.address}, "
                "now closed: use the names %rpyc_connect/%rpyc_reconnect bound since"
            )
        if _rpyc.is_closed(conn):
            raise self.lost(None)
        self.check_busy(conn)
        result = None
        try:
            result = conn.async_request(handler, *args, timeout=_rpyc.call_timeout(conn))
            return result.value
        except KeyboardInterrupt as e:
            if _rpyc.is_reply(result, e):
                raise  # the remote code's own KeyboardInterrupt, its reply: not a Ctrl-C of ours
            self.abandon(conn, result, "the interrupted call")
            where = "still running on the server" if self.pending is not None else "stopped on the server"
            raise CallInterrupted(f"interrupted a call on {record.name} ({where})") from None
        except TimeoutError:
            if result is None or _rpyc.result_arrived(result):
                raise  # a TimeoutError raised by the remote code itself
            self.abandon(conn, result, "the call that timed out")
            stopped = self.pending is None
            raise RemoteTimeoutError(
                f"{record.name}: no answer from {record.address} within {_rpyc.call_timeout(conn):g} s"
                f" ({'stopped on the server' if stopped else 'still running on the server'}); raise the "
                f"limit with %rpyc_connect --timeout, %config RpycMagics.timeout or %%rpyc --timeout"
            ) from None
        except EOFError as e:
            if _rpyc.is_closed(conn):
                raise self.lost(e) from None
            raise
        except Exception as e:
            if result is None or _rpyc.is_reply(result, e):
                raise  # not sent, or the server's answer: an exception of the remote code
            # rpyc could not make sense of what the server sent (and may still hold its receive
            # lock): the stream cannot be trusted any more
            try:
                conn.close()
            except Exception:
                pass
            detail = inert((str(e).strip().splitlines() or [""])[0][:200])
            raise self.lost(f"the server sent a malformed message, {type(e).__name__}: {detail}") from None

    def lost(self, cause: Any) -> ConnectionLostError:
        r = self.record
        why = f" ({cause})" if cause is not None and str(cause) else ""
        if r.owner is not None and r.auto_reconnect():
            then = "auto_reconnect opens a new one when this cell ends (the cell is not run again)"
        else:
            then = f"%rpyc_reconnect {r.name} opens a new one"
        return ConnectionLostError(f"the connection {r.name!r} to {r.address} is lost{why}; {then}")

    def busy(self, conn: Any) -> bool:
        """Whether an abandoned call still occupies the server (serves what has arrived)."""
        if self.pending is None:
            return False
        try:
            finished = _rpyc.request_finished(conn, self.pending)
        except EOFError as e:
            raise self.lost(e) from None
        if finished:
            self.pending = None
        return not finished

    def check_busy(self, conn: Any) -> None:
        if self.busy(conn):
            r = self.record
            raise BusyError(
                f"{r.name} is still busy with {self.pending_why} on {r.address}; it answers again when "
                f"that call ends there. %rpyc_reconnect {r.name} gives a fresh connection now"
            )

    def gave_up(self, result: Any, why: str) -> None:
        """A bounded call made beside this guard (the helper's display, completion, inspection)
        ran out of time: remember it, so that the next call says the connection is busy instead
        of waiting silently behind it, and try to stop it (without waiting to see it stop)."""
        conn = self.record.conn
        if conn is None or self.record.retired or _rpyc.is_closed(conn):
            return  # closing, lost, or an earlier connection
        if self.remember(result, why):
            self.record.interrupt_remote()

    def remember(self, result: Any, why: str) -> bool:
        """An abandoned request whose reply is still to come: until it does, the next call says
        the connection is busy.  False when the request is not outstanding."""
        conn = self.record.conn
        seq = _rpyc.pending_seq(conn, result) if conn is not None else None
        if seq is None:
            return False
        self.pending, self.pending_why = seq, why
        return True

    def abandon(self, conn: Any, result: Any, why: str) -> None:
        """The caller gave up on ``result``: stop the remote work if possible, else remember it."""
        seq = _rpyc.pending_seq(conn, result) if result is not None else None
        if seq is None:
            return
        self.pending, self.pending_why = seq, why
        try:
            self.record.interrupt_remote()
            _rpyc.serve_until(conn, lambda: not self.busy(conn), SETTLE_SECONDS)
        except (KeyboardInterrupt, Exception):
            pass  # best effort: the next call reports the state
