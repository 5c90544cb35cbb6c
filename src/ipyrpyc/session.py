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

from . import _compat, _remote
from .server import EmbeddedServer

DEFAULT_PORT = 18812
DEFAULT_SSL_PORT = 18821

# One round trip: everything %rpyc_connect and %rpyc_connections show about the server.
_INFO_EXPR = (
    "(__import__('sys').version.split()[0], __import__('os').getpid(), "
    "__import__('socket').gethostname())"
)


class RemoteHelper:
    """Netrefs to the helper functions of :mod:`._remote` on one connection.

    Each call is one round trip, bounded by ``timeout`` (the reply of a call that
    ran out of time is dropped when it arrives; the connection stays usable).
    """

    def __init__(self, conn: Any, info: Tuple[Any, ...], display: Any, complete: Any,
                 describe: Any, execute: Any) -> None:
        self.conn_ref = weakref.ref(conn)
        self.info = info
        self._display, self._complete, self._describe, self._execute = display, complete, describe, execute

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
        return conn is not None and not conn.closed

    def call(self, function: Any, *args: Any, timeout: Optional[float]) -> Any:
        result = rpyc.async_(function)(*args)
        if timeout is not None:
            result.set_expiry(timeout)
        return result.value

    def display(self, obj: Any, text_limit: int, data_limit: int, rich: bool, timeout: float) -> Any:
        return self.call(self._display, obj, text_limit, data_limit, rich, timeout=timeout)

    def complete(self, obj: Any, chain: Tuple[str, ...], limit: int, timeout: float) -> Any:
        return self.call(self._complete, obj, chain, limit, timeout=timeout)

    def describe(self, obj: Any, detail: int, text_limit: int, timeout: float) -> Any:
        return self.call(self._describe, obj, detail, text_limit, timeout=timeout)

    def execute(self, source: str, filename: str, namespace: Any) -> None:
        self._execute(source, filename, namespace)


# The helper of every connection that has one (ours, and plain rpyc connections that
# were displayed); None where it could not be installed.
HELPERS: "weakref.WeakKeyDictionary[Any, Optional[RemoteHelper]]" = weakref.WeakKeyDictionary()


def helper_for(conn: Any) -> Optional[RemoteHelper]:
    """The connection's helper, installed on first use for connections that are not ours."""
    if conn is None or conn.closed:
        return None
    if conn in HELPERS:
        return HELPERS[conn]
    try:
        return RemoteHelper.install(conn)
    except Exception as e:
        HELPERS[conn] = None
        _warn_once(f"the server {_compat.peer_address(conn) or ''} cannot run ipyrpyc's helper "
                   f"({type(e).__name__}); its objects display the plain rpyc way")
        return None


_warned: set = set()


def _warn_once(message: str) -> None:
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

    # -- life cycle ------------------------------------------------------------------------
    def open(self) -> "Session":
        t = self.target
        service = ClassicService if t.trust else ClassicClient
        config = {"sync_request_timeout": t.connect_timeout}
        try:
            if t.embedded:
                if self.server is None or not self.server.alive():
                    if self.server is not None:
                        self.server.stop()
                    self.server = EmbeddedServer().start()
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
        try:
            self.helper = RemoteHelper.install(conn)
            info = self.helper.info
        except Exception as helper_error:
            self.helper = HELPERS[conn] = None
            try:
                info = conn.eval(_INFO_EXPR)
            except Exception as e:
                conn.close()
                raise ConnectError(
                    f"connected to {self.address}, but it is not a classic server: {_reason(e)}"
                ) from None
            _warn_once(f"{self.address} cannot run ipyrpyc's helper ({type(helper_error).__name__}); "
                       "its objects display the plain rpyc way")
        self.remote_python, self.remote_pid, self.remote_host = info
        _compat.set_call_timeout(conn, t.timeout)
        _compat.set_read_timeout(stream, None)
        if self.helper is not None:
            conn.execute = RemoteExecute(conn, self.name, self.helper)
        self.conn = conn
        return self

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
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
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
        old = self.conn
        self.conn = None
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        return self.open()

    # -- health ----------------------------------------------------------------------------
    def state(self, timeout: float = 2.0) -> Tuple[str, Optional[float]]:
        """``("alive", seconds)``, ``("busy", None)`` or ``("lost", None)``."""
        conn = self.conn
        if conn is None or conn.closed:
            return "lost", None
        start = time.perf_counter()
        try:
            conn.ping(timeout=timeout)
        except (EOFError, OSError):
            return "lost", None
        except Exception:
            return ("lost", None) if conn.closed else ("busy", None)
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
