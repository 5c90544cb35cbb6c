"""One named classic connection: open, close, reconnect, health.

A session owns its connection's :class:`~.records.Record` (helper, call guard,
origin), the embedded server or SSH tunnel it started, and the control connection
it opens on the first interrupt.  It knows nothing of IPython: the registry binds
its names, the magics talk to the user.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from rpyc.core.service import ClassicClient, ClassicService
from rpyc.utils.factory import connect_stream

from . import _rpyc
from .calls import CallGuard
from .errors import ConnectError
from .helper import OutputSink, RemoteExecute, RemoteHelper
from .records import Record
from .server import EmbeddedServer
from .text import first_line
from .ssh import SshError, SshTunnel
from .transport import Target, local_stream, ssh_tunnel, tcp_stream

# One round trip: what %rpyc_connect and %rpyc_connections show of a server without the helper.
_INFO_EXPR = (
    "(__import__('sys').version.split()[0], __import__('os').getpid(), "
    "__import__('socket').gethostname())"
)
SERVER_EXIT_GRACE = 2.0  # seconds an embedded server that closed our connection may take to exit


class Session:
    """One named classic connection and everything that belongs to it."""

    def __init__(self, name: str, target: Target, modules: List[Tuple[str, str]]) -> None:
        self.name = name
        self.target = target
        self.modules = modules  # [(local name, module name)]
        self.conn: Any = None
        self.record: Optional[Record] = None
        self.server: Optional[EmbeddedServer] = None
        self.injected: Dict[str, Any] = {}
        self.module_values: Dict[str, Any] = {}  # local name -> netref, or why it could not be imported
        self.remote_python = "?"
        self.remote_pid: Optional[int] = None
        self.remote_host = "?"
        self.address = target.describe()
        self.sink = OutputSink()
        self.warnings: List[str] = []
        self.cells = 0  # %%rpyc cells run, for their file names
        self._tunnel: Optional[SshTunnel] = None
        self._control: Any = None
        self._control_helper: Optional[RemoteHelper] = None
        self.on_remote_exception: Callable[[BaseException], None] = lambda exc: None

    @property
    def helper(self) -> Optional[RemoteHelper]:
        return self.record.helper if self.record is not None else None

    # -- life cycle ------------------------------------------------------------------------
    def open(self) -> "Session":
        """Connect (starting the embedded server if needed) and prepare the connection."""
        t = self.target
        self.warnings = []
        if t.embedded and (self.server is None or not self.server.alive()):
            if self.server is not None:
                self.server.stop()
            try:
                self.server = EmbeddedServer().start()
            except Exception as e:
                self.server = None
                raise ConnectError(f"cannot start the embedded server: {first_line(e)}") from None
        conn = self._connect(ClassicService if t.trust else ClassicClient)
        record = Record(conn, self.name, self.address, owner=self)
        names = [module for _, module in self.modules]
        try:
            record.helper, imported = RemoteHelper.install(conn, names, self.sink.write if t.live_output else None)
            info = (record.helper.python, record.helper.pid, record.helper.host)
        except Exception as helper_error:
            record.helper_error = type(helper_error).__name__
            try:
                info = conn.eval(_INFO_EXPR)
            except Exception as e:
                conn.close()
                raise ConnectError(
                    f"connected to {self.address}, but it is not a classic server: {first_line(e)}"
                ) from None
            self.warnings.append(f"{self.address} cannot run ipyrpyc's helper ({record.helper_error}); "
                                 "its objects display the plain rpyc way")
            imported = {name: self._import(conn, name) for name in names}
        self.module_values = {local: imported[module] for local, module in self.modules}
        self.remote_python, self.remote_pid, self.remote_host = info
        _rpyc.set_call_timeout(conn, t.timeout)
        record.guard = CallGuard(record)
        if record.helper is not None:
            record.helper.on_give_up = record.guard.gave_up
            conn.execute = RemoteExecute(conn.namespace, self.name, record.helper, conn.execute)
        conn.sync_request = record.guard
        conn._unbox_exc = _rpyc.unbox_exc_with(conn, lambda exc: self.on_remote_exception(exc))
        self.conn, self.record = conn, record
        return self

    @staticmethod
    def _import(conn: Any, module: str) -> Any:
        try:
            return conn.modules[module]
        except Exception as e:
            return f"{type(e).__name__}: {first_line(e)}"

    def _connect(self, service: Any) -> Any:
        """A new rpyc connection to the target (the handshake bounded by connect_timeout)."""
        t = self.target
        config = {"sync_request_timeout": t.connect_timeout}
        said = 0
        try:
            if t.embedded:
                assert self.server is not None and self.server.address is not None
                stream = local_stream(self.server.address, t.connect_timeout)
            elif t.ssh:
                if self._tunnel is None or not self._tunnel.alive():
                    if self._tunnel is not None:
                        self._tunnel.close()
                    self._tunnel = None
                    self._tunnel = ssh_tunnel(t)
                said = len(self._tunnel.lines())
                try:
                    stream = _rpyc.stream_from_socket(self._tunnel.connect(t.connect_timeout))
                except SshError as e:
                    raise ConnectError(f"cannot connect to {self.address}: {e}") from None
            else:
                stream = tcp_stream(t)
            _rpyc.set_read_timeout(stream, t.connect_timeout)  # a half-sent frame must not hang us
            try:
                conn = connect_stream(stream, service=service, config=config)
            except BaseException as e:
                stream.close()
                if t.ssh and self._tunnel is not None and isinstance(e, (OSError, EOFError)):
                    # the far end of the tunnel refused: ssh says why as it closes our connection
                    reason = self._tunnel.reason_for_closed(said)
                    if reason is not None:
                        raise ConnectError(f"cannot connect to {self.address}: {reason}") from None
                if t.ssl and isinstance(e, (OSError, EOFError)) and not isinstance(e, TimeoutError):
                    # TLS 1.3: the server judges our certificate after our side of the handshake is
                    # done, so its "no" comes as an alert or, racing our first request, a bare EOF/reset.
                    hint = ("did it reject the client certificate?" if t.certfile else
                            "does it require a client certificate (--certfile, --keyfile)?")
                    raise ConnectError(
                        f"cannot connect to {self.address}: the server closed the SSL connection "
                        f"({first_line(e)}): {hint}"
                    ) from None
                raise
        except ConnectError:
            raise
        except ssl.SSLCertVerificationError as e:
            raise ConnectError(f"cannot connect to {self.address}: certificate rejected: {e.verify_message}") from None
        except (OSError, EOFError, TimeoutError) as e:
            raise ConnectError(f"cannot connect to {self.address}: {first_line(e)}") from None
        except Exception as e:  # a peer that is not an rpyc classic server, a broken server …
            raise ConnectError(f"cannot connect to {self.address}: {type(e).__name__}: {first_line(e)}") from None
        _rpyc.set_read_timeout(stream, None)
        _rpyc.set_stall_timeout(stream, t.timeout)
        return conn

    def interrupt_remote(self, timeout: float = 1.0) -> bool:
        """Raise KeyboardInterrupt in the server thread running our call, through a second
        connection opened for that (the first is busy). Best effort; never raises."""
        if self.helper is None or self.conn is None:
            return False
        try:
            if self._control is None or _rpyc.is_closed(self._control):
                control = self._connect(ClassicClient)
                self._control_helper, _ = RemoteHelper.install(control)
                self._control = control
            assert self._control_helper is not None
            return self._control_helper.interrupt(self.helper.connection_id, timeout) > 0
        except Exception:
            return False

    def close(self) -> None:
        """Close the connection and stop what we started for it; never raises."""
        self._close_connections()
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def reopen(self) -> "Session":
        """A fresh connection to the same place (a new embedded server if the old one died)."""
        if self.server is not None and self.lost():
            # its socket closes while the process is still exiting: let it finish, or a dying
            # server would be taken for a live one
            self.server.exited(SERVER_EXIT_GRACE)
        self._close_connections()
        return self.open()

    def _close_connections(self) -> None:
        """Close the connection and the control connection; never raises.  The server program
        takes back what it installed there (live output) when it sees the connection close."""
        record, conn, control = self.record, self.conn, self._control
        self.conn = self._control = None
        if record is not None:
            record.retired = True
        for c in (conn, control):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass

    # -- health ----------------------------------------------------------------------------
    def lost(self) -> bool:
        """Whether the server went away, found without sending anything."""
        conn = self.conn
        if conn is None or (self.server is not None and not self.server.alive()):
            return True
        try:
            conn.poll_all(0)  # reads what already arrived (late replies, or the end of the stream)
        except Exception:
            return True
        return _rpyc.is_closed(conn) or _rpyc.peer_closed(conn)

    def state(self, timeout: float = 2.0) -> Tuple[str, Optional[float]]:
        """``("alive", seconds)``, ``("busy", None)`` or ``("lost", None)``."""
        conn, record = self.conn, self.record
        if conn is None or record is None or _rpyc.is_closed(conn):
            return "lost", None
        try:
            if record.guard is not None and record.guard.busy(conn):
                return "busy", None
        except Exception:
            return "lost", None
        start = time.perf_counter()
        try:
            conn.ping(timeout=timeout)
        except (EOFError, OSError):
            return "lost", None
        except Exception:
            return ("lost", None) if _rpyc.is_closed(conn) else ("busy", None)
        return "alive", time.perf_counter() - start

    def summary(self) -> str:
        return f"{self.address} (Python {self.remote_python}, pid {self.remote_pid})"
