"""A stock-compatible RPyC classic server, and the embedded one a kernel starts.

``python -m ipyrpyc server`` serves rpyc's ``ClassicService`` exactly like
``rpyc_classic`` does, bound to 127.0.0.1 unless told otherwise.  The embedded
server is the same program started by the kernel in its own session (so the
kernel's interrupt signal never reaches it) on a Unix socket in a private
directory; it exits as soon as its parent dies.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence, Union

Address = Union[str, "tuple[str, int]"]

READY_TIMEOUT = 15.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _watch_parent(fd: int, private_dir: Optional[str]) -> None:
    """Exit the whole process (removing its private directory) when our parent's pipe closes."""

    def watch() -> None:
        try:
            while os.read(fd, 64):
                pass
        except OSError:
            pass
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch, name="ipyrpyc-parent-watch", daemon=True).start()


def build_parser(prog: str = "ipyrpyc-server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run an RPyC classic server (compatible with rpyc_classic). "
        "Anyone who can reach it can run any code as this user.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help="TCP port (default 18812, 18821 with SSL; 0 picks a free one)")
    p.add_argument("--unix-socket", metavar="PATH", help="listen on a Unix domain socket instead of TCP")
    p.add_argument("--allow-remote", action="store_true",
                   help="required to bind to a non-loopback address")
    p.add_argument("--certfile", help="server certificate (PEM): enables SSL")
    p.add_argument("--keyfile", help="private key of --certfile (PEM)")
    p.add_argument("--ca-certs", help="CA bundle: clients must present a certificate it signed")
    p.add_argument("--quiet", action="store_true", help="log errors only")
    p.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--private-dir", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = "ipyrpyc-server") -> int:
    """Entry point of ``ipyrpyc-server`` and ``python -m ipyrpyc server``."""
    import logging

    from rpyc.core.service import SlaveService
    from rpyc.utils.authenticators import SSLAuthenticator
    from rpyc.utils.server import ThreadedServer

    from . import _rpyc

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.parent_fd is not None:
        _watch_parent(args.parent_fd, args.private_dir)
    if (args.keyfile or args.ca_certs) and not args.certfile:
        parser.error("--keyfile and --ca-certs need --certfile")
    if args.unix_socket and (args.certfile or args.port is not None):
        parser.error("--unix-socket cannot be combined with --port or SSL")

    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logger = logging.getLogger("ipyrpyc.server")

    authenticator = None
    if args.certfile:
        # rpyc loads these files per connection: check them now, not at the first client
        try:
            check = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            check.load_cert_chain(args.certfile, args.keyfile)
            if args.ca_certs:
                check.load_verify_locations(args.ca_certs)
        except (OSError, ssl.SSLError) as e:
            files = ", ".join(f for f in (args.certfile, args.keyfile, args.ca_certs) if f)
            parser.error(f"cannot use the SSL files {files}: {e}")
        authenticator = SSLAuthenticator(
            args.keyfile or args.certfile,
            args.certfile,
            ca_certs=args.ca_certs,
            cert_reqs=ssl.CERT_REQUIRED if args.ca_certs else ssl.CERT_NONE,
        )

    kwargs: dict = {"logger": logger, "authenticator": authenticator}
    if args.unix_socket:
        kwargs["socket_path"] = args.unix_socket
    else:
        if not _is_loopback(args.host):
            if not args.allow_remote:
                parser.error(
                    f"refusing to bind to non-loopback address {args.host!r}: anyone who reaches "
                    "it can run any code as this user. Pass --allow-remote (and use SSL) to do it anyway."
                )
            print(
                f"WARNING: serving on {args.host}: anyone who can reach this port can run any code "
                "as this user." + ("" if args.certfile else " Use --certfile/--keyfile/--ca-certs."),
                file=sys.stderr,
                flush=True,
            )
        port = args.port
        if port is None:
            port = 18821 if args.certfile else 18812
        kwargs.update(hostname=args.host, port=port, reuse_addr=True, ipv6=":" in args.host)

    server = ThreadedServer(SlaveService, **kwargs)  # what rpyc_classic serves
    _rpyc.server_listen(server)
    where = args.unix_socket or f"{_format_host(args.host)}:{server.port}"
    if args.ready_fd is not None:
        os.write(args.ready_fd, f"{where}\n".encode())
        os.close(args.ready_fd)
    else:
        print(f"ipyrpyc classic server listening on {where}", flush=True)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmbeddedServer:
    """A private classic server in a subprocess, owned by this process.

    It listens on a Unix socket in a 0700 directory (127.0.0.1 where Unix
    sockets are missing), runs in its own session and dies with its parent.
    """

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Address] = None
        self._dir: Optional[str] = None
        self._parent_w: Optional[int] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self, timeout: float) -> bool:
        """Whether the server has exited, waiting up to ``timeout`` seconds for an exit under way
        (a killed server closes its connections a moment before it can be reaped)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def start(self, timeout: float = READY_TIMEOUT) -> "EmbeddedServer":
        self._dir = tempfile.mkdtemp(prefix="ipyrpyc-")  # mode 0700
        log_path = os.path.join(self._dir, "server.log")
        parent_r, self._parent_w = os.pipe()
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, "-m", "ipyrpyc", "server", "--quiet", "--private-dir", self._dir,
               "--parent-fd", str(parent_r), "--ready-fd", str(ready_w)]
        unix = hasattr(socket, "AF_UNIX")
        if unix:
            cmd += ["--unix-socket", os.path.join(self._dir, "rpyc.sock")]
        else:
            cmd += ["--host", "127.0.0.1", "--port", "0"]
        try:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(parent_r, ready_w),
                    start_new_session=True,
                    cwd=os.getcwd(),
                )
        except BaseException:
            os.close(ready_r)
            self._cleanup()
            raise
        finally:
            os.close(parent_r)
            os.close(ready_w)
        try:
            line = self._read_ready(ready_r, timeout)
        finally:
            os.close(ready_r)
        if not line:
            self.stop()
            tail = _last_line(log_path)
            raise RuntimeError("the embedded server did not start" + (f": {tail}" if tail else ""))
        if unix:
            self.address = line
        else:
            host, _, port = line.rpartition(":")
            self.address = (host, int(port))
        return self

    def _read_ready(self, fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return ""
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            data += chunk
        return data.decode().strip()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and remove its private directory; safe to call twice."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        elif proc is not None:
            proc.poll()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._parent_w is not None:
            try:
                os.close(self._parent_w)
            except OSError:
                pass
            self._parent_w = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _last_line(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
