"""Named classic connections: open, close, reconnect, health, and the names they inject."""

from __future__ import annotations

import dataclasses
import keyword
import math
import socket
import ssl
import sys
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

import rpyc
from rpyc.core.service import ClassicClient, ClassicService
from rpyc.utils.factory import connect_stream

from . import _compat
from .calls import CallGuard
from .helper import HELPERS, OutputSink, RemoteExecute, RemoteHelper, warn_once
from .server import EmbeddedServer

DEFAULT_PORT = 18812
DEFAULT_SSL_PORT = 18821

# One round trip: everything %rpyc_connect and %rpyc_connections show about the server.
_INFO_EXPR = (
    "(__import__('sys').version.split()[0], __import__('os').getpid(), "
    "__import__('socket').gethostname())"
)


class ConnectError(Exception):
    """Opening a connection failed; the message is one line for the user."""


class ConnectionLost(ConnectError):
    pass


def parse_address(text: str) -> Tuple[str, Optional[int]]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    port_text: Optional[str] = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"malformed address {text!r}: expected [IPv6]:PORT")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"malformed address {text!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a hostname, or an IPv6 address without a port
    if not host or any(c.isspace() or c in "/@[]" for c in host):
        raise ValueError(f"malformed host in {text!r}")
    port = None if port_text is None else parse_port(port_text)
    return host, port


def parse_port(text: Any) -> int:
    try:
        port = int(str(text), 10)
    except ValueError:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}")
    return port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_modules(spec: str) -> List[Tuple[str, str]]:
    """``"sys os np=numpy os.path"`` -> [(name suffix, module)]; the prefix is added later."""
    out: List[Tuple[str, str]] = []
    for item in spec.replace(",", " ").split():
        alias, sep, module = item.partition("=")
        if not sep:
            module, alias = alias, alias.replace(".", "_")
        parts = module.split(".")
        if not module or not all(p.isidentifier() for p in parts):
            raise ValueError(f"not a module name: {module!r}")
        if not alias.isidentifier():
            raise ValueError(f"not a valid name: {alias!r}")
        out.append((alias, module))
    return out


def check_identifier(name: str, what: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{what} must be a Python identifier, not {name!r}")
    return name


@dataclasses.dataclass
class Target:
    """Where and how to connect; ``host is None`` means the embedded server."""

    host: Optional[str] = None
    port: Optional[int] = None
    ssl: bool = False
    keyfile: Optional[str] = None
    certfile: Optional[str] = None
    ca_certs: Optional[str] = None
    ssh: Optional[str] = None  # user@host[:port]
    ssh_key: Optional[str] = None
    ssh_options: List[str] = dataclasses.field(default_factory=list)
    trust: bool = False
    timeout: Optional[float] = 30.0
    connect_timeout: float = 5.0
    live_output: bool = True
    explicit_timeout: bool = False  # --timeout given: RpycMagics.timeout changes do not apply

    @property
    def embedded(self) -> bool:
        return self.host is None and self.ssh is None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return DEFAULT_SSL_PORT if self.ssl else DEFAULT_PORT

    def describe(self) -> str:
        if self.embedded:
            return "embedded server"
        where = format_hostport(self.host or "localhost", self.effective_port)
        return f"{where} via ssh {self.ssh}" if self.ssh else where


class Session:
    """One named classic connection and everything that belongs to it."""

    def __init__(self, name: str, target: Target, modules: List[Tuple[str, str]]) -> None:
        self.name = name
        self.target = target
        self.modules = modules  # [(local name, module name)]
        self.conn: Any = None
        self.helper: Optional[RemoteHelper] = None
        self.server: Optional[EmbeddedServer] = None
        self.injected: Dict[str, Any] = {}
        self.remote_python = "?"
        self.remote_pid: Optional[int] = None
        self.remote_host = "?"
        self.address = target.describe()
        self.sink = OutputSink()
        self.cells = 0  # %%rpyc cells run, for their file names
        self._control: Any = None
        self._control_helper: Optional[RemoteHelper] = None

    # -- life cycle ------------------------------------------------------------------------
    def open(self) -> "Session":
        """Connect (starting the embedded server if needed) and prepare the connection."""
        t = self.target
        if t.embedded and (self.server is None or not self.server.alive()):
            if self.server is not None:
                self.server.stop()
            try:
                self.server = EmbeddedServer().start()
            except Exception as e:
                self.server = None
                raise ConnectError(f"cannot start the embedded server: {_reason(e)}") from None
        conn = self._connect(ClassicService if t.trust else ClassicClient)
        try:
            self.helper = RemoteHelper.install(conn)
            info = (self.helper.python, self.helper.pid, self.helper.host)
        except Exception as helper_error:
            self.helper = HELPERS[conn] = None
            try:
                info = conn.eval(_INFO_EXPR)
            except Exception as e:
                conn.close()
                raise ConnectError(
                    f"connected to {self.address}, but it is not a classic server: {_reason(e)}"
                ) from None
            warn_once(f"{self.address} cannot run ipyrpyc's helper ({type(helper_error).__name__}); "
                      "its objects display the plain rpyc way")
        self.remote_python, self.remote_pid, self.remote_host = info
        _compat.set_call_timeout(conn, t.timeout)
        if self.helper is not None:
            conn.execute = RemoteExecute(conn, self.name, self.helper)
            if t.live_output:
                try:
                    self.helper.route(self.sink.write, timeout=t.connect_timeout)
                except Exception as e:
                    warn_once(f"{self.address}: no live remote output ({type(e).__name__})")
        conn.sync_request = CallGuard(self, conn)
        self.conn = conn
        return self

    def _connect(self, service: Any) -> Any:
        """A new rpyc connection to the target (the handshake bounded by connect_timeout)."""
        t = self.target
        config = {"sync_request_timeout": t.connect_timeout}
        try:
            if t.embedded:
                assert self.server is not None and self.server.address is not None
                stream = self._unix_or_tcp_stream(self.server.address)
            elif t.ssh:
                stream = self._ssh_stream()
            else:
                stream = self._tcp_stream()
            _compat.set_read_timeout(stream, t.connect_timeout)  # a half-sent frame must not hang us
            try:
                conn = connect_stream(stream, service=service, config=config)
            except BaseException as e:
                stream.close()
                if t.ssl and isinstance(e, (OSError, EOFError)) and not isinstance(e, TimeoutError):
                    # TLS 1.3: the server judges our certificate after our side of the handshake is
                    # done, so its "no" comes as an alert or, racing our first request, a bare EOF/reset.
                    hint = ("did it reject the client certificate?" if t.certfile else
                            "does it require a client certificate (--certfile, --keyfile)?")
                    raise ConnectError(
                        f"cannot connect to {self.address}: the server closed the SSL connection "
                        f"({_reason(e)}): {hint}"
                    ) from None
                raise
        except ConnectError:
            raise
        except ssl.SSLCertVerificationError as e:
            raise ConnectError(
                f"cannot connect to {self.address}: certificate rejected: {e.verify_message}"
            ) from None
        except (OSError, EOFError, TimeoutError, rpyc.AsyncResultTimeout) as e:
            raise ConnectError(f"cannot connect to {self.address}: {_reason(e)}") from None
        except Exception as e:  # a peer that is not an rpyc classic server, a broken server …
            raise ConnectError(f"cannot connect to {self.address}: {type(e).__name__}: {_reason(e)}") from None
        _compat.set_read_timeout(stream, None)
        _compat.set_stall_timeout(stream, t.timeout)
        return conn

    def interrupt_remote(self, timeout: float = 1.0) -> bool:
        """Raise KeyboardInterrupt in the server thread running our call, through a second
        connection opened for that (the first is busy). Best effort; never raises."""
        if self.helper is None or self.conn is None:
            return False
        try:
            if self._control is None or _compat.is_closed(self._control):
                control = self._connect(ClassicClient)
                self._control_helper = RemoteHelper.install(control)
                self._control = control
            return self._control_helper.interrupt(self.helper.connection_id, timeout) > 0
        except Exception:
            return False

    def _unix_or_tcp_stream(self, address: Any) -> Any:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.target.connect_timeout)
            try:
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            return _compat.stream_from_socket(sock)
        host, port = address
        return _compat.stream_from_socket(socket.create_connection((host, port), self.target.connect_timeout))

    def _tcp_stream(self) -> Any:
        t = self.target
        host = t.host or "localhost"
        sock = socket.create_connection((host, t.effective_port), t.connect_timeout)
        if t.ssl:
            try:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        return _compat.stream_from_socket(sock)

    def _ssl_context(self) -> ssl.SSLContext:
        t = self.target
        try:
            ctx = ssl.create_default_context(cafile=t.ca_certs)
            if t.certfile:
                ctx.load_cert_chain(t.certfile, t.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ConnectError(f"cannot use the SSL files for {self.address}: {_reason(e)}") from None
        return ctx

    def _ssh_stream(self) -> Any:
        from plumbum.machines.ssh_machine import SshMachine

        t = self.target
        user, _, hostport = (t.ssh or "").rpartition("@")
        ssh_host, ssh_port = parse_address(hostport)
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, math.ceil(t.connect_timeout))}"]
        for option in t.ssh_options:
            opts += ["-o", option]
        try:
            machine = SshMachine(
                ssh_host,
                user=user or None,
                port=ssh_port,
                keyfile=t.ssh_key,
                ssh_opts=opts,
                connect_timeout=t.connect_timeout,
            )
        except Exception as e:
            raise ConnectError(f"cannot reach {ssh_host} over ssh: {_reason(e)}") from None
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                local_port = probe.getsockname()[1]
            tunnel = machine.tunnel(local_port, t.effective_port, dhost=t.host or "localhost")
            sock = socket.create_connection(("127.0.0.1", local_port), t.connect_timeout)
        except BaseException:
            machine.close()
            raise
        stream = _compat.tunneled_stream(sock, tunnel)
        self._ssh_machine = machine
        return stream

    def close(self) -> None:
        """Close the connection and stop what we started for it; never raises."""
        conn, self.conn = self.conn, None
        self._close_connection(conn)
        machine = getattr(self, "_ssh_machine", None)
        if machine is not None:
            try:
                machine.close()
            except Exception:
                pass
            self._ssh_machine = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def reopen(self) -> "Session":
        """A fresh connection to the same place (a new embedded server if the old one died)."""
        old, self.conn = self.conn, None
        self._close_connection(old)
        return self.open()

    def _close_connection(self, conn: Any) -> None:
        """Take back what we installed on the server (live output), then close; never raises."""
        control, self._control = self._control, None
        for c in (conn, control):
            if c is None:
                continue
            if c is conn and self.helper is not None and not _compat.is_closed(c) and self.target.live_output:
                guard = c.__dict__.get("sync_request")
                if not (isinstance(guard, CallGuard) and guard.pending is not None):
                    try:
                        self.helper.route(None, timeout=1.0)
                    except Exception:
                        pass
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
        return _compat.is_closed(conn) or _compat.peer_closed(conn)

    def state(self, timeout: float = 2.0) -> Tuple[str, Optional[float]]:
        """``("alive", seconds)``, ``("busy", None)`` or ``("lost", None)``."""
        conn = self.conn
        if conn is None or _compat.is_closed(conn):
            return "lost", None
        guard = conn.__dict__.get("sync_request")
        try:
            if isinstance(guard, CallGuard) and guard.busy(conn):
                return "busy", None
        except Exception:
            return "lost", None
        start = time.perf_counter()
        try:
            conn.ping(timeout=timeout)
        except (EOFError, OSError):
            return "lost", None
        except Exception:
            return ("lost", None) if _compat.is_closed(conn) else ("busy", None)
        return "alive", time.perf_counter() - start

    def summary(self) -> str:
        server = f"Python {self.remote_python}, pid {self.remote_pid}"
        return f"{self.address} ({server})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, (socket.timeout, TimeoutError, rpyc.AsyncResultTimeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__
