"""SSH tunnels that only this process can use: OpenSSH forwards a Unix socket in a private
(0700) directory to HOST:PORT as seen from the SSH host.

``ssh`` runs under a small keeper process (``python -m ipyrpyc.ssh``, standard library only)
that holds the read end of a pipe whose write end only the kernel holds: when the kernel
closes the tunnel or dies, even by SIGKILL, the keeper stops ``ssh`` and removes the
directory (``ssh`` never removes its socket).  What ``ssh`` says on failure is turned into
one line that names the host.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence

# ssh keeps the first value it reads for an option: these come before the user's options.
FIXED_OPTIONS = ("BatchMode=yes", "ExitOnForwardFailure=yes", "StreamLocalBindMask=0177",
                 "StreamLocalBindUnlink=no", "ControlMaster=no", "ControlPath=none")
# and these after them, so that the user's options (or ~/.ssh/config) can change them
DEFAULT_OPTIONS = ("ServerAliveInterval=15", "ServerAliveCountMax=3")
SOCKET_NAME = "s"  # short: a Unix socket path holds at most 107 bytes
STOP_GRACE = 2.0  # seconds ssh (and the keeper) get to exit before SIGKILL


class SshError(Exception):
    """An SSH tunnel failed; the message is one line naming the host."""


# (pattern on ssh's stderr, message); the first that matches wins.  {dest} is USER@HOST[:PORT]
# as given, {host}/{port} where ssh connects, {target} the forward's end as seen from the host.
_RULES = [
    (r"Could not resolve hostname \S+?:? (?P<why>[^\n]*)", "unknown SSH host {host} ({why})"),
    (r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed",
     "the SSH host key of {host} has CHANGED since it was trusted (a man in the middle, or a reinstalled "
     "host): check it, then update known_hosts"),
    (r"No \S+ host key is known for|Host key verification failed",
     "the SSH host key of {host} is not trusted yet: check and accept it once with `{sshcmd}`, "
     "or name a known_hosts file in RpycMagics.ssh_options"),
    (r"Permission denied \((?P<methods>[^)]*)\)|Too many authentication failures",
     "SSH authentication failed for {dest}{key}: no usable key (non-interactive: no passwords or "
     "passphrases; use --ssh-key or ssh-agent)"),
    (r"connect to host \S+ port \d+: Connection refused", "no SSH server at {host} port {port} (connection refused)"),
    (r"connect to host \S+ port \d+: Connection timed out|Connection timed out during banner exchange"
     r"|Connection to \S+ port \d+ timed out",
     "no answer from the SSH server {host} port {port} within {timeout:g} s"),
    (r"connect to host \S+ port \d+: (?P<why>No route to host|Network is unreachable)",
     "cannot reach the SSH server {host} ({why})"),
    (r"kex_exchange_identification|banner line contains invalid characters|Connection closed by \S+ port \d+"
     r"|Connection reset by \S+ port \d+",
     "{host} port {port} does not speak SSH (it closed the connection)"),
    (r"open failed: administratively prohibited", "the SSH server {host} refuses port forwarding"),
    (r"open failed: connect failed: Connection refused",
     "nothing listens on {target} as seen from the SSH host {host} (connection refused)"),
    (r"open failed: connect failed: (?P<why>Name or service not known|Temporary failure in name resolution"
     r"|No address associated[^\n]*|nodename nor servname[^\n]*)",
     "the SSH host {host} cannot resolve {target} ({why})"),
    (r"open failed: connect failed: (?P<why>[^\n]*)", "the SSH host {host} cannot connect to {target} ({why})"),
    (r"unix_listener: (?P<why>[^\n]*)|Bad local forwarding specification[^\n]*|Could not request local forwarding",
     "ssh could not make the tunnel's local socket for {host}{why_sep}{why}"),
]


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SshTunnel:
    """``ssh -N -L DIR/s:DHOST:DPORT [USER@]HOST`` under a keeper; :meth:`connect` opens a
    connection through it (each rpyc connection of a session uses the same tunnel)."""

    def __init__(self, user: Optional[str], host: str, port: Optional[int], dhost: str, dport: int, *,
                 key: Optional[str] = None, options: Sequence[str] = (), connect_timeout: float = 5.0,
                 ssh: str = "ssh") -> None:
        self.host, self.port, self.dhost, self.dport = host, port, dhost, dport
        self.dest = (f"{user}@" if user else "") + (f"{_format_host(host)}:{port}" if port else host)
        self.connect_timeout = connect_timeout
        self._key = key
        self._lines: List[str] = []
        self._lock = threading.Lock()
        executable = shutil.which(ssh)
        if executable is None:
            raise SshError(f"no ssh client found for {self.dest}: install OpenSSH's client (Debian: openssh-client)")
        self.directory = tempfile.mkdtemp(prefix="ipyrpyc-ssh-")  # mode 0700
        self.path = os.path.join(self.directory, SOCKET_NAME)
        self._seconds = max(1, math.ceil(connect_timeout))
        cmd = [executable]
        for option in (*FIXED_OPTIONS, *options, f"ConnectTimeout={self._seconds}", *DEFAULT_OPTIONS):
            cmd += ["-o", option]
        if key:
            cmd += ["-i", os.path.expanduser(key), "-o", "IdentitiesOnly=yes"]
        if port:
            cmd += ["-p", str(port)]
        destination = self._destination = f"{user}@{host}" if user else host
        cmd += ["-N", "-T", "-L", f"{self.path}:{_format_host(dhost)}:{dport}", "--", destination]
        self.command = cmd
        parent_r, self._parent_w = os.pipe()
        try:
            self.keeper = subprocess.Popen(
                [sys.executable, "-m", "ipyrpyc.ssh", "--parent-fd", str(parent_r), "--dir", self.directory,
                 "--", *cmd],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(parent_r,), start_new_session=True,  # the kernel's interrupts never reach ssh
            )
        except BaseException:
            os.close(self._parent_w)
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        finally:
            os.close(parent_r)
        self._reader = threading.Thread(target=self._read, name="ipyrpyc-ssh-stderr", daemon=True)
        self._reader.start()
        try:
            self._wait_ready(time.monotonic() + self._seconds + max(2.0, connect_timeout))
        except BaseException:
            self.close()
            raise

    # -- what ssh says -----------------------------------------------------------------------
    def _read(self) -> None:
        assert self.keeper.stderr is not None
        for raw in self.keeper.stderr:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._lock:
                self._lines.append(line)

    def lines(self, start: int = 0) -> List[str]:
        with self._lock:
            return self._lines[start:]

    def explain(self, lines: Sequence[str]) -> Optional[str]:
        """The one-line reason ssh gave in ``lines``, or None."""
        text = "\n".join(lines)
        fields = dict(dest=self.dest, host=self.host, port=self.port or 22, timeout=float(self._seconds),
                      target=f"{_format_host(self.dhost)}:{self.dport}", key=f" with {self._key}" if self._key else "",
                      sshcmd=f"ssh -p {self.port} {self._destination}" if self.port else f"ssh {self._destination}")
        for pattern, template in _RULES:
            m = re.search(pattern, text)
            if m:
                found = {k: v for k, v in m.groupdict().items() if v}
                why = found.get("why", "")
                return template.format(**{**fields, "why": why, "why_sep": ": " if why else ""})
        return None

    def failure(self, since: int = 0, default: str = "") -> SshError:
        said = self.lines(since)
        reason = self.explain(said)
        if reason is None:
            last = next((line for line in reversed(said) if line.strip()), "")
            code = self.keeper.poll()
            reason = default or f"ssh to {self.dest} failed" + (f" (exit {code})" if code is not None else "")
            if last:
                reason += f": {last.strip()[:300]}"
        return SshError(reason)

    # -- life cycle ----------------------------------------------------------------------------
    def _wait_ready(self, deadline: float) -> None:
        """ssh makes the socket only once it has logged in and set up the forward."""
        while not os.path.exists(self.path):
            if self.keeper.poll() is not None:
                self._reader.join(STOP_GRACE)
                raise self.failure()
            if time.monotonic() > deadline:
                raise self.failure(default=f"no answer from the SSH server {self.dest} within "
                                           f"{self._seconds + max(2.0, self.connect_timeout):g} s")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.keeper.poll() is None and os.path.exists(self.path)

    def connect(self, timeout: float) -> socket.socket:
        """A new connection to the far end, through the tunnel."""
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            while True:
                try:
                    sock.connect(self.path)
                    return sock
                except (ConnectionRefusedError, FileNotFoundError):
                    # ssh binds the socket, then listens: a connection in between is refused
                    if self.keeper.poll() is not None or time.monotonic() > deadline:
                        raise self.failure() from None
                    time.sleep(0.02)
        except BaseException:
            sock.close()
            raise

    def reason_for_closed(self, since: int, wait: float = 0.5) -> Optional[str]:
        """Why ssh closed a connection through the tunnel (the far end refused it, forwarding is
        prohibited …): ssh says so on stderr as it closes, so wait a moment for the line."""
        deadline = time.monotonic() + wait
        while True:
            reason = self.explain(self.lines(since))
            if reason is not None or time.monotonic() > deadline:
                return reason
            time.sleep(0.02)

    def close(self) -> None:
        """Stop ssh and remove the private directory; never raises, safe to call twice."""
        if self._parent_w is not None:
            try:
                os.close(self._parent_w)  # the keeper stops ssh and removes the directory
            except OSError:
                pass
            self._parent_w = None
        try:
            self.keeper.wait(STOP_GRACE * 2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.keeper.pid, signal.SIGKILL)  # the keeper's session: ssh too
            except OSError:
                pass
            try:
                self.keeper.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)
        self._reader.join(STOP_GRACE)
        if self.keeper.stderr is not None:
            self.keeper.stderr.close()


# -- the keeper: python -m ipyrpyc.ssh --parent-fd N --dir DIR -- ssh ARGS ----------------------
def keep(parent_fd: int, directory: str, command: Sequence[str]) -> int:
    """Run ``command`` (ssh) until it exits or our parent goes (its pipe reaches EOF); then stop
    it and remove ``directory``.  ssh's stderr is ours."""
    try:
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    except OSError as e:
        print(f"ipyrpyc: cannot run {command[0]}: {e}", file=sys.stderr, flush=True)
        shutil.rmtree(directory, ignore_errors=True)
        return 127

    asked = threading.Event()

    def stop(*_: object) -> None:
        asked.set()
        if proc.poll() is None:
            proc.terminate()

    def watch() -> None:
        try:
            while os.read(parent_fd, 64):
                pass
        except OSError:
            pass
        stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=watch, name="ipyrpyc-ssh-parent", daemon=True).start()
    while True:
        try:
            code = proc.wait(STOP_GRACE)
            break
        except subprocess.TimeoutExpired:
            if asked.is_set():
                proc.kill()
    shutil.rmtree(directory, ignore_errors=True)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        split = args.index("--")
        options, command = args[:split], args[split + 1:]
        parent_fd = int(options[options.index("--parent-fd") + 1])
        directory = options[options.index("--dir") + 1]
    except (ValueError, IndexError):
        print("usage: python -m ipyrpyc.ssh --parent-fd N --dir DIR -- ssh ARGS (started by ipyrpyc)", file=sys.stderr)
        return 2
    if not command:
        return 2
    return keep(parent_fd, directory, command)


if __name__ == "__main__":
    sys.exit(main())
