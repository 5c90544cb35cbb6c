"""``%rpyc_connect`` over SSL (``--ssl``, ``--ca-certs``, client certificates) and over SSH (``--ssh``).

Real components only: certificates made by ``openssl`` into a temporary directory, our own
``python -m ipyrpyc server`` and stock ``rpyc_classic`` as SSL servers, and Debian's ``sshd``
started on a free 127.0.0.1 port with a throwaway host key and user keys.
"""

from __future__ import annotations

import getpass
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from IPython.core.error import UsageError

from tests.support.certs import make_pki
from tests.support.processes import (
    STARTUP_TIMEOUT, ServerProcess, StockServer, children_of, cmdline, free_port, pid_alive, stop_process, wait_until,
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


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def ssh_children() -> List[int]:
    """Our ``ssh`` client processes (the SSH session and its tunnels)."""
    return [p for p in children_of(os.getpid()) if os.path.basename(cmdline(p)[0]) == "ssh"]


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.user = getpass.getuser()
        self.host_key = keygen(directory / "host_key")
        self.key = keygen(directory / "user_key")
        self.stranger_key = keygen(directory / "stranger_key")  # not authorized
        self.locked_key = keygen(directory / "locked_key", passphrase="nobody knows")  # authorized, encrypted
        authorized = directory / "authorized_keys"
        authorized.write_text("".join(Path(f"{k}.pub").read_text() for k in (self.key, self.locked_key)))
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
        shell.run_line_magic("config", "RpycMagics.ssh_options = []")


def test_ssh_tunnel_to_stock_server(ssh_shell, sshd, classic_server):
    shell = ssh_shell
    via = f"--ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.key)}"
    # a second server only the SSH host's 127.0.0.2 reaches: HOST is resolved there, not here
    other = ServerProcess("--host", "127.0.0.2", "--port", "0")
    assert not ssh_children()
    try:
        other.wait_listening()
        # without HOST the server is localhost as seen from the SSH host
        connect_ok(shell, f"{via} --port {classic_server.port}", classic_server.pid)
        assert ssh_children(), "no ssh process: the connection did not go through SSH"
        assert sshd.sessions(), "sshd has no session for us"
        shell.run_line_magic("rpyc_connect", f"127.0.0.2:{other.port} {via} --name lab --no-inject")
        assert shell.user_ns["lab"].modules.os.getpid() == other.pid
        table = repr(shell.run_line_magic("rpyc_connections", ""))
        assert f"via ssh {sshd.user}@127.0.0.1:{sshd.port}" in table and "alive" in table

        shell.run_line_magic("rpyc_disconnect", "conn")
        shell.run_line_magic("rpyc_disconnect", "lab")
        assert "rsys" not in shell.user_ns and "lab" not in shell.user_ns
        assert wait_until(lambda: not ssh_children(), 5), [cmdline(p) for p in ssh_children()]
        assert wait_until(lambda: not sshd.sessions(), 5), "the SSH session was not closed"
    finally:
        shell.run_line_magic("rpyc_disconnect", "--all")
        other.stop()


@pytest.mark.parametrize("case", ["stranger_key", "closed_port"])
def test_ssh_failure_is_a_quick_one_line_usage_error(ssh_shell, sshd, classic_server, capsys, case):
    if case == "stranger_key":
        via = f"{sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.stranger_key)}"
    else:
        via = f"{sshd.user}@127.0.0.1:{free_port()} --ssh-key {q(sshd.key)}"
    message = connect_fails(ssh_shell, capsys, f"--ssh {via} --port {classic_server.port}")
    assert "ssh" in message and "127.0.0.1" in message, message
    assert wait_until(lambda: not ssh_children(), 5)


def test_ssh_never_prompts(ssh_shell, sshd, classic_server, capsys, tmp_path):
    """BatchMode: an encrypted key is skipped, not a passphrase prompt that would hang a kernel."""
    from plumbum import local  # the ssh client is started by plumbum, with plumbum's copy of the environment

    marker = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho \"$@\" >> {q(marker)}\necho wrong-passphrase\n")
    askpass.chmod(0o700)
    with local.env(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0"):
        connect_fails(
            ssh_shell, capsys,
            f"--ssh {sshd.user}@127.0.0.1:{sshd.port} --ssh-key {q(sshd.locked_key)} --port {classic_server.port}",
        )
    assert not marker.exists(), f"ssh asked for a passphrase: {marker.read_text()!r}"
    assert wait_until(lambda: not ssh_children(), 5)


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
    assert not ssh_children()
