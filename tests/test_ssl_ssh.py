"""``%rpyc_connect`` over SSL (``--ssl``, ``--ca-certs``, client certificates) and over SSH (``--ssh``).

Real components only: certificates made by ``openssl`` into a temporary directory, our own
``python -m ipyrpyc server`` and stock ``rpyc_classic`` as SSL servers, and Debian's ``sshd``
started on a free 127.0.0.1 port with a throwaway host key and user keys; another local user
is uid 65534 (``setpriv``).
"""

from __future__ import annotations

import errno
import getpass
import os
import queue
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from IPython.core.error import UsageError

from tests.support.certs import make_pki
from tests.support.kernels import Kernel, ok, value
from tests.support.processes import (
    STARTUP_TIMEOUT, Listener, ServerProcess, StockServer, children_of, cmdline, descendants, free_port, pid_alive,
    stop_process, wait_gone, wait_until,
)

FAIL_FAST = 5.0  # a refused connection must be reported within this many seconds


# -- helpers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Dict[str, str]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextmanager
def ssl_server(pki: Dict[str, str], cert: str = "srv", *extra: str) -> Iterator[ServerProcess]:
    """``python -m ipyrpyc server --port 0 --certfile CERT.pem --keyfile CERT.key EXTRA``."""
    server = ServerProcess("--port", "0", "--certfile", pki[f"{cert}.pem"], "--keyfile", pki[f"{cert}.key"], *extra)
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def q(path: str) -> str:
    return shlex.quote(str(path))


def connect_fails(shell, capsys, line: str) -> str:
    """``%rpyc_connect LINE`` must fail fast with a one-line UsageError and leave nothing behind."""
    capsys.readouterr()
    t0 = time.monotonic()
    result = shell.run_cell(f"%rpyc_connect {line}")
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out, err)
    assert elapsed < FAIL_FAST, f"took {elapsed:.1f} s to fail"
    message = str(result.error_in_exec)
    assert "\n" not in message
    assert err.strip() == f"UsageError: {message}", err
    assert "Traceback" not in out + err
    assert not shell.magics_manager.registry["RpycMagics"].registry.sessions
    assert "conn" not in shell.user_ns
    return message


def connect_ok(shell, line: str, pid: int) -> None:
    """``%rpyc_connect LINE`` reaches the server process ``pid`` and ``rsys.path[0]`` works over it."""
    shell.run_line_magic("rpyc_connect", line)
    assert shell.user_ns["ros"].getpid() == pid
    result = shell.run_cell("rsys.path[0]")
    result.raise_error()
    assert isinstance(result.result, str)


# -- SSL ---------------------------------------------------------------------------------------------
def test_ssl_with_ca_certs(shell, pki, capsys):
    with ssl_server(pki) as server:
        port = server.port
        connect_ok(shell, f"127.0.0.1:{port} --ssl --ca-certs {q(pki['ca.pem'])}", server.pid)
        shell.run_line_magic("rpyc_disconnect", "")
        # --ca-certs alone implies SSL; the DNS name in the certificate works as well as the IP
        connect_ok(shell, f"localhost:{port} --ca-certs {q(pki['ca.pem'])}", server.pid)
        shell.run_line_magic("rpyc_disconnect", "")
        # and the server really speaks only SSL: a plain connection is refused, quickly
        message = connect_fails(shell, capsys, f"127.0.0.1:{port}")
        assert f"127.0.0.1:{port}" in message


def test_ssl_rejects_a_ca_not_given(shell, pki, capsys):
    with ssl_server(pki) as server:
        message = connect_fails(shell, capsys, f"127.0.0.1:{server.port} --ssl")
    assert "certificate" in message and f"127.0.0.1:{server.port}" in message


@pytest.mark.parametrize(
    "cert, host, reason",
    [
        ("self", "127.0.0.1", "self-signed"),
        ("other", "127.0.0.1", "not valid for '127.0.0.1'"),  # host name verification is on
        ("other", "localhost", "not valid for 'localhost'"),
    ],
)
def test_ssl_rejects_a_certificate_not_for_this_server(shell, pki, capsys, cert, host, reason):
    with ssl_server(pki, cert) as server:
        message = connect_fails(shell, capsys, f"{host}:{server.port} --ssl --ca-certs {q(pki['ca.pem'])}")
    assert "certificate" in message and reason in message, message


def test_ssl_client_certificates(shell, pki, capsys):
    ca = q(pki["ca.pem"])
    with ssl_server(pki, "srv", "--ca-certs", pki["ca.pem"]) as server:
        where = f"127.0.0.1:{server.port}"
        # With TLS 1.3 the server's verdict on the client certificate races the client's first
        # request: the client sees an alert or a bare EOF/reset. The message must be clear either way.
        message = connect_fails(shell, capsys, f"{where} --ssl --ca-certs {ca}")
        assert "closed the SSL connection" in message and "require a client certificate" in message, message
        assert "--certfile" in message
        # a client certificate the server's CA did not sign is refused as well
        message = connect_fails(
            shell, capsys, f"{where} --ca-certs {ca} --certfile {q(pki['self.pem'])} --keyfile {q(pki['self.key'])}"
        )
        assert "reject the client certificate" in message, message
        message = connect_fails(shell, capsys, f"{where} --ca-certs {ca} --certfile {q(pki['ca.pem'] + '.missing')}")
        assert f"--certfile {pki['ca.pem']}.missing: no such file" in message, message  # the option and the file
        connect_ok(
            shell,
            f"{where} --ca-certs {ca} --certfile {q(pki['client.pem'])} --keyfile {q(pki['client.key'])}",
            server.pid,
        )
        shell.run_line_magic("rpyc_disconnect", "")


@pytest.mark.parametrize(
    "files",
    [
        ["--certfile", "missing.pem"],
        ["--certfile", "srv.pem"],  # the key is in srv.key, not in srv.pem
        ["--certfile", "srv.pem", "--keyfile", "other.key"],  # not srv.pem's key
        ["--certfile", "srv.pem", "--keyfile", "srv.key", "--ca-certs", "missing.pem"],
    ],
)
def test_server_rejects_unusable_ssl_files_at_startup(pki, files):
    """Not at the first client's connection, which is when rpyc itself would load them."""
    paths = [pki.get(f, os.path.join(os.path.dirname(pki["ca.pem"]), f)) if not f.startswith("--") else f
             for f in files]
    res = subprocess.run([sys.executable, "-m", "ipyrpyc", "server", "--port", "0", *paths],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
    assert res.returncode == 2, res
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert "error: cannot use the SSL files" in res.stderr.strip().splitlines()[-1]


def test_ssl_to_stock_rpyc_classic(shell, pki):
    server = StockServer("--ssl-keyfile", pki["srv.key"], "--ssl-certfile", pki["srv.pem"])
    try:
        connect_ok(shell, f"127.0.0.1:{server.port} --ssl --ca-certs {q(pki['ca.pem'])}", server.pid)
        shell.run_line_magic("rpyc_disconnect", "")
    finally:
        server.stop()


# -- SSH ---------------------------------------------------------------------------------------------
SSHD = "/usr/sbin/sshd"
SSH_OPTIONS = '["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]'
NOBODY = 65534  # another local user
PROBE = ("import socket, sys\n"
         "s = socket.socket(socket.AF_UNIX)\n"
         "try:\n    s.connect(sys.argv[1])\n    print('CONNECTED')\n"
         "except OSError as e:\n    print(type(e).__name__, e.errno)\n")


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def ssh_processes() -> List[int]:
    """Our ``ssh`` client processes (started by the tunnel keepers we started)."""
    return [pid for pid, _ in descendants(os.getpid()) if os.path.basename(cmdline(pid)[0]) == "ssh"]


def keepers() -> List[int]:
    return [pid for pid, _ in descendants(os.getpid()) if "ipyrpyc.ssh" in cmdline(pid)]


def tcp_listeners_of(pid: int) -> List[str]:
    """The TCP sockets in LISTEN state that process ``pid`` holds (from /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.user = getpass.getuser()
        self.host_key = keygen(directory / "host_key")
        self.other_host_key = keygen(directory / "other_host_key")  # what a changed host would show
        self.key = keygen(directory / "user_key")
        self.stranger_key = keygen(directory / "stranger_key")  # not authorized
        self.locked_key = keygen(directory / "locked_key", passphrase="nobody knows")  # authorized, encrypted
        self.no_forwarding_key = keygen(directory / "no_forwarding_key")  # may log in, may not forward
        authorized = directory / "authorized_keys"
        authorized.write_text("".join(Path(f"{k}.pub").read_text() for k in (self.key, self.locked_key))
                              + "no-port-forwarding " + Path(f"{self.no_forwarding_key}.pub").read_text())
        self.proc = None
        self.log: List[str] = []
        for _ in range(3):  # free_port() can race with another process grabbing the port
            self.port = free_port()
            config = directory / "sshd_config"
            config.write_text(
                f"Port {self.port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {self.host_key}\n"
                f"PidFile {directory / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {authorized}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "AllowTcpForwarding yes\n"
                "PrintMotd no\n"
            )
            if self._start(config):
                return
        raise RuntimeError(f"sshd did not start: {self.log}")

    def _start(self, config: Path) -> bool:
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        lines: "queue.Queue[str]" = queue.Queue()

        def pump() -> None:
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if f"listening on 127.0.0.1 port {self.port}" in line:
                return True
            if not line:
                break
        self.stop()
        return False

    def known_hosts(self, path: Path, key: Path) -> Path:
        """A known_hosts file that trusts ``key`` (a .pub beside it) for this sshd."""
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        path.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sessions(self) -> List[int]:
        """sshd's per-connection children."""
        return children_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    assert os.path.exists(SSHD), "install Debian's openssh-server"
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        sessions = server.sessions()
        server.stop()
        assert wait_until(lambda: not any(pid_alive(p) for p in sessions), 5), "an sshd session outlived sshd"


@pytest.fixture
def ssh_shell(shell):
    """``shell`` with the ssh options a throwaway host key needs."""
    shell.run_line_magic("config", f"RpycMagics.ssh_options = {SSH_OPTIONS}")
    try:
        yield shell
    finally:
        shell.run_line_magic("rpyc_disconnect", "--all")
        shell.run_line_magic("config", "RpycMagics.ssh_options = []")
        assert wait_until(lambda: not ssh_processes() and not keepers(), 5), "an ssh outlived the test"


def tunnel_path(shell, name: str = "conn") -> str:
    """The private socket the connection ``name`` goes through (the peer of its rpyc socket)."""
    return shell.user_ns[name]._channel.stream.sock.getpeername()


def test_ssh_tunnel_to_stock_server(ssh_shell, sshd, classic_server):
    shell = ssh_shell
    via = f"--ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.key)}"
    # a second server only the SSH host's 127.0.0.2 reaches: HOST is resolved there, not here
    other = ServerProcess("--host", "127.0.0.2", "--port", "0")
    assert not ssh_processes()
    try:
        other.wait_listening()
        # without HOST the server is localhost as seen from the SSH host
        connect_ok(shell, f"{via} --port {classic_server.port}", classic_server.pid)
        assert ssh_processes(), "no ssh process: the connection did not go through SSH"
        assert sshd.sessions(), "sshd has no session for us"
        path = tunnel_path(shell)
        shell.run_line_magic("rpyc_connect", f"127.0.0.2:{other.port} {via} --name lab --no-inject")
        assert shell.user_ns["lab"].modules.os.getpid() == other.pid
        table = repr(shell.run_line_magic("rpyc_connections", ""))
        assert f"via ssh {sshd.user}@127.0.0.1:{sshd.port}" in table and "alive" in table

        shell.run_line_magic("rpyc_disconnect", "conn")
        assert not os.path.exists(os.path.dirname(path)), "the tunnel's directory outlived the connection"
        shell.run_line_magic("rpyc_disconnect", "lab")
        assert "rsys" not in shell.user_ns and "lab" not in shell.user_ns
        assert wait_until(lambda: not ssh_processes() and not keepers(), 5), [cmdline(p) for p in ssh_processes()]
        assert wait_until(lambda: not sshd.sessions(), 5), "the SSH session was not closed"
    finally:
        shell.run_line_magic("rpyc_disconnect", "--all")
        other.stop()


def test_ssh_tunnel_only_this_user_can_use(ssh_shell, sshd, classic_server):
    """The tunnel is a Unix socket (0600) in a private 0700 directory, not a TCP port: another
    local user (uid 65534) gets EACCES; ssh listens on no TCP port."""
    shell = ssh_shell
    connect_ok(shell, f"--ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.key)} --port {classic_server.port}",
               classic_server.pid)
    path = tunnel_path(shell)
    directory = os.path.dirname(path)
    assert os.path.dirname(directory) == tempfile.gettempdir()
    assert os.path.basename(directory).startswith("ipyrpyc-ssh-")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700 and os.stat(directory).st_uid == os.getuid()
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    [ssh] = ssh_processes()
    assert tcp_listeners_of(ssh) == [], "ssh listens on a TCP port"
    probe = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             "/usr/bin/python3", "-c", PROBE, path]
    res = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == f"PermissionError {errno.EACCES}", res
    # the same probe through a directory it may enter reaches the socket: the directory is the lock
    os.chmod(directory, 0o711)
    try:
        res = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert res.stdout.strip() == f"PermissionError {errno.EACCES}", res  # and the socket is 0600
        os.chmod(path, 0o666)
        res = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert res.stdout.strip() == "CONNECTED", res  # the probe itself can connect when allowed
    finally:
        os.chmod(path, 0o600)
        os.chmod(directory, 0o700)
    assert shell.user_ns["ros"].getpid() == classic_server.pid
    shell.run_line_magic("rpyc_disconnect", "")
    assert not os.path.exists(directory)


def test_ssh_tunnel_goes_with_a_killed_kernel(sshd, classic_server):
    """SIGKILL of the kernel: its ssh stops, the tunnel's directory is removed, sshd's session ends."""
    k = Kernel()
    try:
        ok(k, f"%config RpycMagics.ssh_options = {SSH_OPTIONS}")
        ok(k, f"%rpyc_connect --ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.key)} "
              f"--port {classic_server.port}")
        assert value(k, "ros.getpid()") == classic_server.pid
        directory = os.path.dirname(value(k, "conn._channel.stream.sock.getpeername()"))
        family = [pid for pid, _ in descendants(k.pid)]
        assert any(os.path.basename(cmdline(p)[0]) == "ssh" for p in family), family
        assert os.path.isdir(directory) and sshd.sessions()
        os.kill(k.pid, signal.SIGKILL)
        assert wait_gone(k.pid)
        assert all(wait_gone(p) for p in family), [cmdline(p) for p in family if pid_alive(p)]
        assert wait_until(lambda: not os.path.exists(directory), 5), f"{directory} was left behind"
        assert wait_until(lambda: not sshd.sessions(), 5), "the SSH session outlived the kernel"
    finally:
        k.shutdown(check=False)


def tunnel_dirs() -> set:
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("ipyrpyc-ssh-")}


def ssh_fails(shell, capsys, line: str, *fragments: str) -> str:
    """``connect_fails`` with ``--ssh``: the message has every fragment; no ssh, no directory is left."""
    before = tunnel_dirs()
    message = connect_fails(shell, capsys, line)
    for fragment in fragments:
        assert fragment in message, message
    assert wait_until(lambda: not ssh_processes() and not keepers(), 5)
    assert not tunnel_dirs() - before, "a tunnel's directory was left behind"
    return message


@pytest.mark.parametrize("case", ["unknown host", "host key not trusted", "host key changed", "authentication",
                                  "encrypted key", "connection refused", "remote port closed",
                                  "forwarding refused", "not an SSH server", "no answer"])
def test_ssh_failures_are_one_line_each(shell, sshd, classic_server, capsys, tmp_path, case):
    """Each failure against the real sshd (or a loopback peer that is not one) says what went wrong,
    in one line naming the host, within seconds."""
    user, port, key = sshd.user, sshd.port, q(sshd.key)
    options = SSH_OPTIONS
    where = f"--port {classic_server.port}"
    peer = None
    if case == "unknown host":
        # the resolver refuses an empty label before sending any query: no traffic leaves the machine
        line, expect = f"--ssh {user}@unknown-host..invalid --ssh-key {key}", ["unknown SSH host unknown-host..invalid"]
    elif case in ("host key not trusted", "host key changed"):
        known = tmp_path / "known_hosts"
        if case == "host key not trusted":
            known.write_text("")
            expect = ["SSH host key of 127.0.0.1 is not trusted yet", f"ssh -p {port} {user}@127.0.0.1"]
        else:
            sshd.known_hosts(known, sshd.other_host_key)
            expect = ["SSH host key of 127.0.0.1 has CHANGED"]
        options = f'["StrictHostKeyChecking=yes", "UserKnownHostsFile={known}"]'
        line = f"--ssh {user}@127.0.0.1:{port} --ssh-key {key}"
    elif case in ("authentication", "encrypted key"):
        bad = sshd.stranger_key if case == "authentication" else sshd.locked_key
        line = f"--ssh {user}@127.0.0.1:{port} --ssh-key {q(bad)}"
        expect = [f"SSH authentication failed for {user}@127.0.0.1:{port} with {bad}"]
    elif case == "connection refused":
        closed = free_port()
        line, expect = f"--ssh {user}@127.0.0.1:{closed} --ssh-key {key}", [f"no SSH server at 127.0.0.1 port {closed}"]
    elif case == "remote port closed":
        closed = free_port()
        line, where = f"--ssh {user}@127.0.0.1:{port} --ssh-key {key}", f"--port {closed}"
        expect = [f"nothing listens on localhost:{closed} as seen from the SSH host 127.0.0.1"]
    elif case == "forwarding refused":
        line = f"--ssh {user}@127.0.0.1:{port} --ssh-key {q(sshd.no_forwarding_key)}"
        expect = ["the SSH server 127.0.0.1 refuses port forwarding"]
    elif case == "not an SSH server":
        peer = Listener(b"HTTP/1.0 400 Bad Request\r\n\r\n", close_after=True)
        line = f"--ssh {user}@127.0.0.1:{peer.port} --ssh-key {key}"
        expect = [f"127.0.0.1 port {peer.port} does not speak SSH"]
    else:
        peer = Listener()  # accepts and stays silent
        shell.run_line_magic("config", "RpycMagics.connect_timeout = 1")
        line, expect = f"--ssh {user}@127.0.0.1:{peer.port} --ssh-key {key}", [
            f"no answer from the SSH server 127.0.0.1 port {peer.port} within 1 s"]
    shell.run_line_magic("config", f"RpycMagics.ssh_options = {options}")
    try:
        message = ssh_fails(shell, capsys, f"{line} {where}", *expect)
    finally:
        if peer is not None:
            peer.stop()
    assert message.startswith("cannot connect to ") and " via ssh " in message, message
    print(case, "->", message)


def test_ssh_never_prompts(ssh_shell, sshd, classic_server, capsys, tmp_path, monkeypatch):
    """BatchMode: an encrypted key is skipped, not a passphrase prompt that would hang a kernel."""
    marker = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho \"$@\" >> {q(marker)}\necho wrong-passphrase\n")
    askpass.chmod(0o700)
    for name, setting in (("SSH_ASKPASS", str(askpass)), ("SSH_ASKPASS_REQUIRE", "force"), ("DISPLAY", ":0")):
        monkeypatch.setenv(name, setting)  # ssh inherits the kernel's environment
    ssh_fails(ssh_shell, capsys,
              f"--ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.locked_key)} --port {classic_server.port}",
              "SSH authentication failed")
    assert not marker.exists(), f"ssh asked for a passphrase: {marker.read_text()!r}"


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("--ssh gw --ssl", "cannot be combined"),
        ("--ssh gw --ca-certs ca.pem", "cannot be combined"),
        ("lab --ssh-key id_ed25519", "--ssh-key needs --ssh"),
        ("--ssh root@", "--ssh expects [USER@]HOST[:PORT]"),
        ("--ssh gw:notaport", "--ssh expects [USER@]HOST[:PORT]"),
    ],
)
def test_ssh_flag_mistakes(shell, capsys, line, fragment):
    assert fragment in connect_fails(shell, capsys, line)
    assert not ssh_processes()
