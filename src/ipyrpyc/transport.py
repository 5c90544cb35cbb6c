"""Where a connection goes and how the bytes get there: TCP, SSL, a private SSH tunnel
(:mod:`.ssh`), or the embedded server's private Unix socket.  Every failure is a one-line ``ConnectError``."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import _rpyc
from .arguments import DEFAULT_PORT, DEFAULT_SSL_PORT, format_hostport, parse_address, parse_port
from .errors import ConnectError
from .ssh import SshError, SshTunnel
from .text import first_line


@dataclasses.dataclass
class Target:
    """Where and how to connect; ``host is None`` (and no ``ssh``) means the embedded server."""

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


Address = Union[str, Tuple[str, int]]


def make_target(address: Optional[str] = None, *, port: Any = None, ssl: bool = False,
                keyfile: Optional[str] = None, certfile: Optional[str] = None, ca_certs: Optional[str] = None,
                ssh: Optional[str] = None, ssh_key: Optional[str] = None, ssh_options: Sequence[str] = (),
                trust: bool = False, timeout: Optional[float] = 30.0, connect_timeout: float = 5.0,
                live_output: bool = True, explicit_timeout: bool = False, default_host: Optional[str] = None,
                default_port: Optional[int] = None) -> Target:
    """A checked :class:`Target`; every inconsistency is a one-line ``ValueError``."""
    host, addr_port = parse_address(address) if address is not None else (default_host, None)
    if port is not None:
        try:
            p = parse_port(port)
        except ValueError as e:
            raise ValueError(f"--port: {e}") from None
        if addr_port is not None and addr_port != p:
            raise ValueError(f"the address says port {addr_port} but --port says {p}")
        addr_port = p
    if host is not None and addr_port is None and default_port:
        addr_port = default_port
    tls = ssl or bool(certfile or ca_certs or keyfile)
    if keyfile and not certfile:
        raise ValueError("--keyfile needs --certfile")
    if ssh is not None:
        user, _, hostport = ssh.rpartition("@")
        try:
            parse_address(hostport)
        except ValueError as e:
            raise ValueError(f"--ssh expects [USER@]HOST[:PORT]: {e}") from None
        if user.startswith("-") or hostport.startswith("-"):
            # ssh would read "-oProxyCommand=…@host" as an option and run that command here
            raise ValueError(f"--ssh: USER and HOST cannot start with '-': {ssh!r}")
        if tls:
            raise ValueError("--ssh and --ssl cannot be combined: the SSH tunnel already encrypts")
    if ssh_key and ssh is None:
        raise ValueError("--ssh-key needs --ssh")
    if host is None and ssh is None:
        if tls:
            raise ValueError("--ssl needs a HOST: the embedded server is reached over a private local socket")
        if addr_port is not None:
            raise ValueError("--port needs a HOST (without one, the embedded server is started)")
    return Target(host=host, port=addr_port, ssl=tls, keyfile=keyfile, certfile=certfile, ca_certs=ca_certs,
                  ssh=ssh, ssh_key=ssh_key, ssh_options=list(ssh_options), trust=trust, timeout=timeout,
                  connect_timeout=connect_timeout, live_output=live_output, explicit_timeout=explicit_timeout)


def local_stream(address: Address, timeout: float) -> Any:
    """A stream to a Unix socket path, or to ``(host, port)`` over TCP."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return _rpyc.stream_from_socket(sock)
    return _rpyc.stream_from_socket(socket.create_connection(address, timeout))


def tcp_stream(target: Target) -> Any:
    host = target.host or "localhost"
    context = ssl_context(target) if target.ssl else None  # the files are checked before connecting
    sock = socket.create_connection((host, target.effective_port), target.connect_timeout)
    if context is not None:
        try:
            sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    return _rpyc.stream_from_socket(sock)


def _check_file(option: str, path: Optional[str]) -> None:
    if path is None:
        return
    if not os.path.exists(path):
        raise ConnectError(f"{option} {path}: no such file")
    if os.path.isdir(path):
        raise ConnectError(f"{option} {path}: is a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConnectError(f"{option} {path}: {first_line(e)}") from None


def ssl_context(target: Target) -> ssl.SSLContext:
    """A context that verifies the server's chain and host name; files named as typed on error."""
    files = (("--ca-certs", target.ca_certs), ("--certfile", target.certfile), ("--keyfile", target.keyfile))
    for option, path in files:
        _check_file(option, path)
    ctx = ssl.create_default_context()
    if target.ca_certs:
        try:
            ctx.load_verify_locations(cafile=target.ca_certs)
        except (OSError, ssl.SSLError) as e:
            raise ConnectError(f"--ca-certs {target.ca_certs}: not a usable CA bundle ({first_line(e)})") from None
    if target.certfile:
        try:
            ctx.load_cert_chain(target.certfile, target.keyfile)
        except (OSError, ssl.SSLError) as e:
            files = f"--certfile {target.certfile}" + (f" with --keyfile {target.keyfile}" if target.keyfile else "")
            raise ConnectError(f"{files}: not a usable certificate and key ({first_line(e)})") from None
    return ctx


def ssh_tunnel(target: Target) -> SshTunnel:
    """A private SSH tunnel to the target (see :mod:`.ssh`); failures are one-line ``ConnectError``."""
    user, _, hostport = (target.ssh or "").rpartition("@")
    ssh_host, ssh_port = parse_address(hostport)
    _check_file("--ssh-key", target.ssh_key)
    try:
        return SshTunnel(user or None, ssh_host, ssh_port, target.host or "localhost", target.effective_port,
                         key=target.ssh_key, options=target.ssh_options, connect_timeout=target.connect_timeout)
    except SshError as e:
        raise ConnectError(f"cannot connect to {target.describe()}: {e}") from None
