"""``python -m ipyrpyc server`` / ``ipyrpyc-server`` and the embedded server a kernel starts.

Real processes only: every server is started on 127.0.0.1 with a port the OS picks
(``--port 0``), its pid is recorded, and it is stopped in a ``finally`` that checks it is gone.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Sequence, Set

import pytest
import rpyc

from tests.support.processes import (
    MODULE_CMD, STARTUP_TIMEOUT, ServerProcess, children_of, pid_alive, sigkill, wait_until,
)

def script_cmd() -> List[str]:
    exe = shutil.which("ipyrpyc-server", path=os.path.dirname(sys.executable))
    assert exe, f"the ipyrpyc-server console script is missing from {os.path.dirname(sys.executable)}"
    return [exe]


@pytest.fixture(params=["module", "script"])
def server_cmd(request) -> List[str]:
    """``python -m ipyrpyc server`` and the ``ipyrpyc-server`` console script must behave alike."""
    return MODULE_CMD if request.param == "module" else script_cmd()


def run_cli(cmd: Sequence[str], *args: str) -> subprocess.CompletedProcess:
    """Run a command that is expected to exit on its own (usage errors, --help); killed after 15 s."""
    return subprocess.run([*cmd, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)


def _decode(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6: four 32-bit words, each in host (little-endian) order
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening_addresses(port: int) -> Set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            addr, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(_decode(addr))
    return found


def assert_classic_server_at(port: int, pid: int) -> None:
    """A plain ``rpyc.classic.connect`` (nothing of ours) reaches the process ``pid``."""
    conn = rpyc.classic.connect("127.0.0.1", port)
    try:
        assert conn.modules.os.getpid() == pid
        conn.execute("x = 6 * 7")
        assert conn.eval("x") == 42
    finally:
        conn.close()


# -- python -m ipyrpyc server / ipyrpyc-server ----------------------------------------------------
def test_serves_classic_on_loopback_only_by_default(server_cmd):
    server = ServerProcess("--port", "0", cmd=server_cmd)
    try:
        port = server.wait_listening()
        assert server.host == "127.0.0.1"
        assert listening_addresses(port) == {"127.0.0.1"}
        assert_classic_server_at(port, server.pid)
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert not any("WARNING" in line for line in server.stderr_lines), server.stderr_lines


def test_rpyc_connect_magic_reaches_the_cli_server(shell):
    server = ServerProcess("--port", "0")
    try:
        port = server.wait_listening()
        shell.run_line_magic("rpyc_connect", f"127.0.0.1:{port}")
        assert shell.user_ns["ros"].getpid() == server.pid
        result = shell.run_cell("rsys.path[0]")
        result.raise_error()
        assert isinstance(result.result, str)
        shell.run_line_magic("rpyc_disconnect", "")
        assert "conn" not in shell.user_ns, repr(shell.user_ns.get("conn"))
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_refuses_a_non_loopback_address_without_allow_remote(server_cmd, host):
    res = run_cli(server_cmd, "--host", host, "--port", "0")
    assert res.returncode == 2, res
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, res.stderr
    msg = errors[0]
    assert "refusing" in msg and host in msg and "--allow-remote" in msg
    assert "run any code" in msg, "the message must say what the risk is"


def test_allow_remote_binds_and_warns(server_cmd):
    # Bound to every interface for a moment; the test itself only ever connects through 127.0.0.1.
    server = ServerProcess("--host", "0.0.0.0", "--allow-remote", "--port", "0", cmd=server_cmd)
    try:
        port = server.wait_listening()
        assert server.host == "0.0.0.0"
        assert listening_addresses(port) == {"0.0.0.0"}
        assert wait_until(lambda: any("WARNING" in line for line in server.stderr_lines), 5), server.stderr_lines
        warning = next(line for line in server.stderr_lines if "WARNING" in line)
        assert "anyone who can reach this port can run any code" in warning
        assert "--certfile" in warning, "the warning should recommend SSL"
        assert server.stdout_lines == [f"ipyrpyc classic server listening on 0.0.0.0:{port}"], "warning not on stderr"
        assert_classic_server_at(port, server.pid)
    finally:
        server.stop()


def test_help(server_cmd):
    res = run_cli(server_cmd, "--help")
    assert res.returncode == 0, res
    for option in ("--host", "--port", "--allow-remote", "--certfile", "--keyfile", "--ca-certs", "--unix-socket"):
        assert option in res.stdout
    assert "127.0.0.1" in res.stdout
    assert "--parent-fd" not in res.stdout and "--ready-fd" not in res.stdout, "internal options leak into --help"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--keyfile", "srv.key", "--port", "0"], "need --certfile"),
        (["--ca-certs", "ca.pem", "--port", "0"], "need --certfile"),
        (["--unix-socket", "/nonexistent/x.sock", "--port", "1"], "--unix-socket cannot be combined"),
        (["--port", "many"], "invalid int value"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_option_errors_exit_2(server_cmd, args, fragment):
    res = run_cli(server_cmd, *args)
    assert res.returncode == 2, res
    assert res.stdout == ""
    assert fragment in res.stderr
    assert "Traceback" not in res.stderr


def test_top_level_usage():
    bare = run_cli([sys.executable, "-m", "ipyrpyc"])
    assert bare.returncode == 2, bare
    assert "usage: python -m ipyrpyc" in bare.stderr and bare.stdout == ""

    unknown = run_cli([sys.executable, "-m", "ipyrpyc"], "serve")
    assert unknown.returncode == 2, unknown
    assert "unknown command 'serve'" in unknown.stderr and "usage:" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    helped = run_cli([sys.executable, "-m", "ipyrpyc"], "--help")
    assert helped.returncode == 0, helped
    assert "server" in helped.stdout


# -- the embedded server ----------------------------------------------------------------------------
def test_embedded_server_private_socket_own_session_and_stop():
    from ipyrpyc.server import EmbeddedServer

    server = EmbeddedServer()
    pid = None
    try:
        server.start()
        pid = server.pid
        assert pid is not None and pid_alive(pid) and server.alive()
        path = server.address
        assert isinstance(path, str), f"expected a Unix socket path, got {path!r}"
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        directory = os.path.dirname(path)
        st = os.stat(directory)
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        assert st.st_uid == os.getuid()
        # its own session: a kernel interrupt (SIGINT to the kernel's process group) never reaches it
        assert os.getsid(pid) == pid != os.getsid(0)
        conn = rpyc.classic.unix_connect(path)
        try:
            assert conn.modules.os.getpid() == pid
        finally:
            conn.close()

        server.stop()
        assert not pid_alive(pid)
        assert not server.alive()
        assert not os.path.exists(directory)
        server.stop()  # harmless the second time
        assert not os.path.exists(directory)
    finally:
        server.stop()
        sigkill(pid)
    assert pid not in children_of(os.getpid())


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from ipyrpyc.server import EmbeddedServer
    server = EmbeddedServer().start()
    print(server.pid, os.path.dirname(server.address), flush=True)
    time.sleep(60)
    """
)


def test_embedded_server_exits_when_its_parent_dies():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server_pid = None
    directory = None
    try:
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: lines.put(parent.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            line = ""
        assert line, f"the parent did not start its server: {parent.poll()}"
        pid_text, directory = line.split()
        server_pid = int(pid_text)
        assert pid_alive(server_pid) and os.path.isdir(directory)

        parent.kill()  # SIGKILL: no atexit, no finally, nothing of ours runs in the parent
        parent.wait(5)
        t0 = time.monotonic()
        assert wait_until(lambda: not pid_alive(server_pid), 5), "the embedded server outlived its parent"
        assert wait_until(lambda: not os.path.exists(directory), 2), "the private directory was left behind"
        assert time.monotonic() - t0 < 5
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        sigkill(server_pid)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
    assert not pid_alive(parent.pid)
    assert server_pid is None or not pid_alive(server_pid)


def test_console_script_is_installed():
    exe = script_cmd()[0]
    assert os.access(exe, os.X_OK)
    res = run_cli([exe], "--help")
    module_help = run_cli(MODULE_CMD, "--help").stdout
    assert res.returncode == 0 and res.stdout.startswith("usage: ipyrpyc-server")
    assert module_help.startswith("usage: python -m ipyrpyc server")
    assert res.stdout.split("\n\n", 1)[1] == module_help.split("\n\n", 1)[1]  # same options, same help
