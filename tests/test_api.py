"""ipyrpyc in scripts, and the error hierarchy scripts rely on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

import ipyrpyc
from ipyrpyc import errors
from tests.support.processes import free_port, pid_alive, wait_until


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_a_connection_failure_is_caught_as_connection_error_in_a_script():
    port = free_port()  # nothing listens there
    out = run_script(f"""
        import ipyrpyc
        try:
            ipyrpyc.connect("127.0.0.1:{port}", connect_timeout=2)
        except ConnectionError as e:
            print("ConnectionError:", type(e).__name__, "|", e)
        try:
            ipyrpyc.connect("127.0.0.1:{port}")
        except ipyrpyc.IpyrpycError as e:
            print("IpyrpycError:", isinstance(e, ipyrpyc.ConnectError))
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"ConnectionError: ConnectError | cannot connect to 127.0.0.1:{port}: connection refused"
    assert lines[1] == "IpyrpycError: True"
    assert "Traceback" not in out.stderr


def test_a_script_connection_works_and_closing_it_stops_its_embedded_server(classic_server):
    conn = ipyrpyc.connect(classic_server.address, timeout=10)
    try:
        assert conn.modules.os.getpid() == classic_server.pid
    finally:
        conn.close()
    conn = ipyrpyc.connect()
    pid = conn.modules.os.getpid()
    assert pid_alive(pid)
    conn.close()
    assert wait_until(lambda: not pid_alive(pid), 10)


def test_lost_busy_and_stale_are_catchable_by_their_builtin_kinds():
    assert issubclass(errors.ConnectionLostError, ConnectionError)
    assert issubclass(errors.RemoteTimeoutError, TimeoutError)
    assert issubclass(errors.StaleNetrefError, ReferenceError)
    assert issubclass(errors.BusyError, RuntimeError)
    assert issubclass(errors.CallInterrupted, KeyboardInterrupt)
    assert errors.CallInterrupted.__name__ == "KeyboardInterrupt"
    for cls in (errors.ConnectError, errors.ConnectionLostError, errors.BusyError, errors.StaleNetrefError,
                errors.RemoteTimeoutError):
        assert issubclass(cls, ipyrpyc.IpyrpycError)


def test_bad_arguments_in_a_script_are_value_errors():
    with pytest.raises(ValueError, match="--keyfile needs --certfile"):
        ipyrpyc.connect("127.0.0.1:1", keyfile="k.pem")
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        ipyrpyc.connect(name="not a name")


@pytest.mark.parametrize("option", ["--certfile", "--ca-certs"])
def test_windows_style_paths_arrive_as_typed_and_errors_name_the_file(shell, tmp_path, monkeypatch, option):
    """``C:\\certs\\client.pem`` is one file name here (backslashes are ordinary characters on
    POSIX file systems): it must reach the SSL code unchanged, and the error must name it."""
    monkeypatch.chdir(tmp_path)
    name = r"C:\certs\client.pem"
    with pytest.raises(UsageError) as missing:
        shell.run_line_magic("rpyc_connect", rf"127.0.0.1:1 {option} {name}")
    assert str(missing.value) == rf"{option} C:\certs\client.pem: no such file"
    (tmp_path / name).write_text("not a certificate")
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("rpyc_connect", rf'127.0.0.1:1 {option} "{name}"')
    assert rf"{option} C:\certs\client.pem" in str(bad.value) and "not a usable" in str(bad.value)
    with pytest.raises(UsageError, match="cannot parse arguments: No closing quotation"):
        shell.run_line_magic("rpyc_connect", rf'127.0.0.1:1 {option} "{name}')
