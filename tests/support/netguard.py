"""A loopback-only network guard for tests that feed hostile input to the magics.

While installed, in this process:

- a name lookup (``getaddrinfo``, ``create_connection``) of anything but a loopback name or
  address is refused before any traffic with ``socket.gaierror`` (an ``OSError``) and
  recorded in ``blocked``;
- connecting an IPv4/IPv6 socket to an address that is not loopback is refused and recorded
  in ``violations`` (Unix sockets, the embedded server's, pass);
- starting a program is refused and recorded in ``violations`` unless it is the embedded
  server, or an ``ssh`` (or the keeper of an SSH tunnel running one) to a
  loopback host with only the options ipyrpyc passes.

A test fails on any violation; whether a refused name is acceptable depends on the test
(magics must report it as a UsageError; a remote cell should never look one up).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shlex
import socket
import subprocess
import sys
from typing import Any, Dict, List

SSH_OPTIONS_WITH_VALUE = {"-p", "-i", "-o"}
SSH_ALLOWED_O = ("BatchMode=", "ConnectTimeout=", "ExitOnForwardFailure=yes", "StreamLocalBindMask=0177",
                 "StreamLocalBindUnlink=no", "ControlMaster=no", "ControlPath=none", "ServerAliveInterval=",
                 "ServerAliveCountMax=", "IdentitiesOnly=yes")
SSH_FORWARD = "-L"  # its value: our private socket and where it leads, as seen from the (loopback) SSH host


def is_loopback(host: Any) -> bool:
    """``host`` (str or bytes, a name or an address, IPv6 with or without a scope) is loopback."""
    if host is None:  # getaddrinfo(None, port): the loopback address
        return True
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    if host.lower() == "localhost":  # /etc/hosts
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Refuses non-loopback names and addresses, and programs other than ours."""

    def __init__(self) -> None:
        self.violations: List[str] = []  # traffic that got past the name check, or a program: the test fails
        self.blocked: List[Any] = []  # names refused before any lookup (no traffic happened)
        self._saved: Dict[str, Any] = {}

    def install(self) -> None:
        guard = self
        saved = self._saved = dict(
            getaddrinfo=socket.getaddrinfo, create_connection=socket.create_connection,
            connect=socket.socket.connect, connect_ex=socket.socket.connect_ex, popen=subprocess.Popen.__init__)

        def getaddrinfo(host, *args, **kwargs):
            guard._check_name(host)
            return saved["getaddrinfo"](host, *args, **kwargs)

        def create_connection(address, *args, **kwargs):
            guard._check_name(address[0])
            return saved["create_connection"](address, *args, **kwargs)

        def connect(sock, address):
            guard._check_address(sock, address)
            return saved["connect"](sock, address)

        def connect_ex(sock, address):
            guard._check_address(sock, address)
            return saved["connect_ex"](sock, address)

        def popen_init(popen, args, *rest, **kwargs):
            guard._check_program(args)
            return saved["popen"](popen, args, *rest, **kwargs)

        socket.getaddrinfo = getaddrinfo
        socket.create_connection = create_connection
        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        subprocess.Popen.__init__ = popen_init

    def uninstall(self) -> None:
        socket.getaddrinfo = self._saved["getaddrinfo"]
        socket.create_connection = self._saved["create_connection"]
        socket.socket.connect = self._saved["connect"]
        socket.socket.connect_ex = self._saved["connect_ex"]
        subprocess.Popen.__init__ = self._saved["popen"]

    def __enter__(self) -> "NetworkGuard":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _check_name(self, host: Any) -> None:
        if not is_loopback(host):
            self.blocked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: {host!r} is not a loopback name")

    def _check_address(self, sock: socket.socket, address: Any) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # the embedded server's Unix socket
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback(host):
            self.violations.append(f"connect to {address!r}")
            raise OSError(errno.ENETUNREACH, f"network guard: {address!r} is not loopback")

    def _check_program(self, args: Any) -> None:
        argv = shlex.split(args) if isinstance(args, str) else [os.fsdecode(a) for a in args]
        if argv[:4] == [sys.executable, "-m", "ipyrpyc", "server"]:
            return
        if argv[:3] == [sys.executable, "-m", "ipyrpyc.ssh"] and "--" in argv:
            argv = argv[argv.index("--") + 1:]  # the keeper of an SSH tunnel: judge the ssh it runs
        if argv and os.path.basename(argv[0]) == "ssh":
            rest = iter(argv[1:])
            for token in rest:
                if token == SSH_FORWARD:
                    next(rest, "")
                elif token in SSH_OPTIONS_WITH_VALUE:
                    value = next(rest, "")
                    if token == "-o" and not value.startswith(SSH_ALLOWED_O):
                        break
                elif token in ("-T", "-N", "--"):
                    continue
                elif not token.startswith("-") and is_loopback(token.rpartition("@")[2]):
                    return  # the destination: loopback
                else:
                    break
        self.violations.append(f"program {argv!r}")
        raise OSError(errno.EPERM, f"network guard: refusing to run {argv!r}")
