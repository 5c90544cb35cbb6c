"""The "Foundation" issue, tested in real ipykernels started from the ``ipyrpyc`` kernelspec.

Everything here is real: kernels from ``jupyter_client``, the embedded server the
kernel starts, and stock ``rpyc_classic`` servers, all on 127.0.0.1.
"""

import ast
import html
import os
import platform
import re
import shutil
import signal
import tempfile
import time

import pytest

from tests.support.kernels import Kernel, ok, run, usage_error, value
from tests.support.processes import children_of, cmdline, free_port, pid_alive, sigkill, wait_gone, wait_until

SERVER_PID = "conn.eval(\"__import__('os').getpid()\")"
SOCKET_PATH = "conn._channel.stream.sock.getpeername()"
RPYC_MAGICS = (  # (instances among the configurables, %rpyc_connect registered)
    "(sum(type(c).__name__ == 'RpycMagics' for c in get_ipython().configurables), "
    "'rpyc_connect' in get_ipython().magics_manager.magics['line'])"
)
COLUMNS = ("name", "address", "state", "latency", "server", "injected", "trusted")


# -- helpers ---------------------------------------------------------------------------------
def kill_server(pid):
    """SIGKILL ``pid`` if it is still an embedded ipyrpyc server (never a reused pid); remove its directory."""
    argv = cmdline(pid)
    if "ipyrpyc" in argv and "server" in argv:
        sigkill(pid)
        if "--private-dir" in argv:
            private = argv[argv.index("--private-dir") + 1]
            if os.path.basename(private).startswith("ipyrpyc-"):
                wait_gone(pid)
                shutil.rmtree(private, ignore_errors=True)


def embedded_pid(kernel):
    """Pid of the embedded server behind ``conn``, checked to be a child of the kernel."""
    pid = value(kernel, SERVER_PID)
    assert pid in children_of(kernel.pid), (pid, kernel.pid)
    return pid


def table_rows(result):
    """(text/plain rows, text/html rows) of a ``%rpyc_connections`` result, each a list of dicts."""
    assert len(result.results) == 1, result
    data = result.results[0]
    assert {"text/plain", "text/html"} <= set(data), data
    lines = data["text/plain"].splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == list(COLUMNS), lines
    assert set(lines[1].replace(" ", "")) == {"-"}, lines
    text_rows = [dict(zip(COLUMNS, re.split(r"\s{2,}", ln.strip()))) for ln in lines[2:]]
    doc = data["text/html"]
    assert [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", doc)] == list(COLUMNS), doc
    html_rows = [
        dict(zip(COLUMNS, [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]))
        for row in re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", doc)
    ]
    return text_rows, html_rows


@pytest.fixture
def servers(kernel):
    """Pids of embedded servers seen in ``kernel``; after the kernel stops, every one must be gone."""
    pids = []
    yield pids
    if pid_alive(kernel.pid):
        pids.extend(children_of(kernel.pid))
    try:
        kernel.shutdown()
    finally:
        leftover = [p for p in set(pids) if not wait_gone(p)]
        for p in leftover:
            kill_server(p)
        assert all(wait_gone(p) for p in leftover), f"cannot stop {leftover}"
    assert not leftover, f"embedded servers outlived their kernel: {leftover}"


# -- 1. kernelspec ---------------------------------------------------------------------------
def test_kernelspec_preloads_extension_and_load_ext_is_harmless(kernel, servers):
    """The ipyrpyc kernelspec exists, pre-loads the extension, and loading it again changes nothing."""
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    assert "ipyrpyc" in ksm.find_kernel_specs()
    assert ksm.get_kernel_spec("ipyrpyc").display_name == "Python 3 (ipyrpyc)"

    probe = (
        "_ip = get_ipython(); "
        "(id(_ip.magics_manager.registry.get('RpycMagics')), "
        "sum(type(c).__name__ == 'RpycMagics' for c in _ip.configurables), "
        "'rpyc_connect' in _ip.magics_manager.magics['line'], "
        "'ipyrpyc' in _ip.extension_manager.loaded)"
    )
    # pre-loaded: no %load_ext has run in this kernel
    before = value(kernel, probe)
    assert before[1:] == (1, True, True), before

    ok(kernel, "%load_ext ipyrpyc")
    ok(kernel, "import ipyrpyc; ipyrpyc.load_ipython_extension(get_ipython())")  # the guard itself
    assert value(kernel, probe) == before

    out = ok(kernel, "%rpyc_connect").stdout
    assert out.startswith("Connected to embedded server"), out
    servers.append(embedded_pid(kernel))
    assert isinstance(value(kernel, "rsys.path[0]"), str)


# -- 2. done-when ----------------------------------------------------------------------------
def check_done_when(kernel, server_pid):
    """``type(rsys.path)``, ``isinstance(rsys.path, list)`` and ``rsys.path[0]`` work and are the server's."""
    res = ok(kernel, "type(rsys.path)")
    assert "list" in res.text, res
    assert value(kernel, "isinstance(rsys.path, list)") is True
    first = value(kernel, "rsys.path[0]")
    assert first == value(kernel, "conn.eval(\"__import__('sys').path[0]\")")
    assert value(kernel, "ros.getpid()") == server_pid
    return first


def test_done_when_embedded_and_stock(kernel, servers, classic_server):
    """%rpyc_connect gives working rsys/ros against the embedded server and a stock rpyc_classic."""
    version = re.escape(platform.python_version())

    out = ok(kernel, "%rpyc_connect").stdout
    m = re.fullmatch(rf"Connected to embedded server \(Python {version}, pid (\d+)\) as conn; injected rsys, ros\n",
                     out)
    assert m, out
    pid = int(m.group(1))
    servers.append(pid)
    assert pid == embedded_pid(kernel)
    first = check_done_when(kernel, pid)
    # ``python -m`` puts the server's working directory first
    assert first == os.readlink(f"/proc/{pid}/cwd")

    ok(kernel, "%rpyc_disconnect")
    assert wait_gone(pid)

    out = ok(kernel, f"%rpyc_connect {classic_server.address}").stdout
    assert re.fullmatch(
        rf"Connected to 127\.0\.0\.1:{classic_server.port} \(Python {version}, pid {classic_server.pid}\) "
        r"as conn; injected rsys, ros\n",
        out,
    ), out
    first = check_done_when(kernel, classic_server.pid)
    # a script puts its own directory first
    script = cmdline(classic_server.pid)[1]
    assert first == os.path.dirname(os.path.realpath(script))
    assert not children_of(kernel.pid)


# -- 3. embedded server life cycle ------------------------------------------------------------
def test_embedded_server_isolated_from_kernel_signals(kernel, servers):
    """The embedded server is its own session, so interrupting the kernel leaves it and the connection alive."""
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    assert pid != kernel.pid
    assert os.getpgid(pid) != os.getpgid(kernel.pid)
    assert os.getsid(pid) != os.getsid(kernel.pid)
    first = value(kernel, "rsys.path[0]")

    res = run(kernel, "import time; print('sleeping', flush=True); time.sleep(30)", 40,
              interrupt_after=lambda r: "sleeping" in r.stdout)
    assert res.t_interrupt is not None and res.t_interrupt < res.t_idle, res  # interrupted while it ran
    assert res.since_interrupt < 5, res
    assert res.status == "error" and res.ename == "KeyboardInterrupt", res

    time.sleep(0.3)  # a server that got the SIGINT needs a moment to exit
    assert pid_alive(pid)
    assert value(kernel, "rsys.path[0]") == first
    assert embedded_pid(kernel) == pid


def test_embedded_server_stops_with_disconnect_unload_and_shutdown(kernel, servers):
    """%rpyc_disconnect, %unload_ext and a graceful kernel shutdown each stop the server and remove its directory."""
    # %rpyc_disconnect
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    sock_dir = os.path.dirname(value(kernel, SOCKET_PATH))
    assert os.path.basename(sock_dir).startswith("ipyrpyc-") and os.path.isdir(sock_dir)
    out = ok(kernel, "%rpyc_disconnect").stdout
    assert "removed conn, rsys, ros" in out, out
    assert wait_gone(pid)
    assert not os.path.exists(sock_dir)
    assert value(kernel, "[n for n in ('conn', 'rsys', 'ros') if n in globals()]") == []

    # %unload_ext
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    sock_dir = os.path.dirname(value(kernel, SOCKET_PATH))
    ok(kernel, "%unload_ext ipyrpyc")
    assert wait_gone(pid)
    assert not os.path.exists(sock_dir)
    assert value(kernel, "[n for n in ('conn', 'rsys', 'ros') if n in globals()]") == []
    assert value(kernel, RPYC_MAGICS) == (0, False)
    res = run(kernel, "%rpyc_connect")
    assert res.status == "error" and not children_of(kernel.pid), res

    # graceful shutdown (after loading the extension again)
    ok(kernel, "%load_ext ipyrpyc")
    assert value(kernel, RPYC_MAGICS) == (1, True)
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    sock_dir = os.path.dirname(value(kernel, SOCKET_PATH))
    kernel.shutdown()
    assert wait_gone(pid)
    assert not os.path.exists(sock_dir)


def test_embedded_server_dies_with_sigkilled_kernel():
    """SIGKILL of the kernel stops its embedded server within seconds and removes its private directory."""
    k = Kernel()
    pids, sock_dir = [], None
    try:
        ok(k, "%rpyc_connect")
        pid = embedded_pid(k)
        pids.append(pid)
        sock_dir = os.path.dirname(value(k, SOCKET_PATH))
        assert os.path.dirname(sock_dir) == tempfile.gettempdir()
        assert os.path.basename(sock_dir).startswith("ipyrpyc-") and os.path.isdir(sock_dir)
        os.kill(k.pid, signal.SIGKILL)
        assert wait_gone(k.pid)
        assert wait_gone(pid), "the embedded server outlived its SIGKILLed kernel"
        assert wait_until(lambda: not os.path.exists(sock_dir), 5), f"{sock_dir} was left behind"
    finally:
        if pid_alive(k.pid):
            pids.extend(children_of(k.pid))
        try:
            k.shutdown()
            k.km.cleanup_resources()
        finally:
            for p in pids:
                kill_server(p)
            if sock_dir is not None and os.path.basename(sock_dir).startswith("ipyrpyc-"):
                shutil.rmtree(sock_dir, ignore_errors=True)
        assert all(wait_gone(p) for p in pids)


# -- 4. trust boundary -----------------------------------------------------------------------
PROBE = "def probe(c):\n    return c.root.getmodule('os').getpid()"
HELPERS = "def ident(c):\n    return 7\ndef peek(o):\n    return getattr(o, 'secret')"


def test_trust_boundary_both_ways(kernel, servers, classic_server):
    """By default a server can neither reach into the kernel nor read local attributes; --trust allows both."""
    kernel_pid = value(kernel, "__import__('os').getpid()")
    assert kernel_pid == kernel.pid
    ok(kernel, "class Box: pass\nbox = Box(); box.secret = 'hunter2'")
    connects = {
        "conn": "%rpyc_connect",
        "tconn": "%rpyc_connect --name tconn --no-inject --trust",
        "sconn": f"%rpyc_connect {classic_server.address} --name sconn --no-inject",
        "stconn": f"%rpyc_connect {classic_server.address} --name stconn --no-inject --trust",
    }
    trusted_names = {"tconn", "stconn"}
    for name, line in connects.items():
        out = ok(kernel, line).stdout
        assert f" as {name}" in out and (("[trusted" in out) == (name in trusted_names)), out
        ok(kernel, f"{name}.execute({PROBE!r}); {name}.execute({HELPERS!r})")
    servers.extend(children_of(kernel.pid))
    assert len(servers) == 2  # one embedded server per embedded connection

    for name in connects:
        trusted = name in trusted_names
        # the call path itself works: the server gets its own Connection and returns
        assert value(kernel, f"{name}.namespace['ident']({name}.root.getconn())") == 7
        res = run(kernel, f"{name}.namespace['probe']({name}.root.getconn())")
        peek = run(kernel, f"{name}.namespace['peek'](box)")
        if trusted:
            assert res.status == "ok" and ast.literal_eval(res.text) == kernel_pid, (name, res)
            assert peek.status == "ok" and ast.literal_eval(peek.text) == "hunter2", (name, peek)
        else:
            assert res.status == "error" and res.errors, (name, res)
            assert str(kernel_pid) not in res.text + res.stdout, (name, res)
            assert peek.status == "error" and peek.errors, (name, peek)
            assert peek.ename.endswith("AttributeError"), (name, peek)
            assert "hunter2" not in repr(peek), (name, peek)

    text_rows, html_rows = table_rows(ok(kernel, "%rpyc_connections"))
    for rows in (text_rows, html_rows):
        assert {r["name"]: r["trusted"] for r in rows} == {"conn": "no", "tconn": "yes", "sconn": "no", "stconn": "yes"}


# -- 5. malformed calls ----------------------------------------------------------------------
def test_malformed_calls_are_one_line_usage_errors(kernel, servers):
    """Every mistake is a one-line UsageError without traceback, and the user's variables survive."""
    ok(kernel, "x = 41")
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    cases = {
        "%rpyc_connect --port abc": "abc",
        "%rpyc_connect 127.0.0.1:99999": "99999",
        "%rpyc_connect --bogus": "--bogus",
        "%rpyc_disconnect nope": "nope",
        "%rpyc_reconnect nope": "nope",
        "%rpyc_connections extra": "extra",
        '%rpyc_connect "unterminated': "",
        "%rpyc_connect --name other --port abc": "abc",
        "%rpyc_connect --name 1bad": "1bad",
    }
    for line, mention in cases.items():
        msg = usage_error(kernel, line)
        assert mention in msg, (line, msg)

    port = free_port()
    start = time.monotonic()
    msg = usage_error(kernel, f"%rpyc_connect 127.0.0.1:{port} --name other", timeout=20)
    assert time.monotonic() - start < 6
    assert f"127.0.0.1:{port}" in msg and "refused" in msg, msg

    assert value(kernel, "x") == 41
    assert value(kernel, "'other' in globals()") is False
    assert value(kernel, "rsys.path[0]") == os.readlink(f"/proc/{pid}/cwd")
    rows, _ = table_rows(ok(kernel, "%rpyc_connections"))
    assert [r["name"] for r in rows] == ["conn"]
    assert children_of(kernel.pid) == [pid]


# -- 6. %rpyc_connections --------------------------------------------------------------------
def test_connections_table_alive_then_lost(kernel, servers, classic_server):
    """%rpyc_connections shows HTML and text with every column; a stopped server shows as lost."""
    ok(kernel, "%rpyc_connect")
    pid = embedded_pid(kernel)
    servers.append(pid)
    ok(kernel, f"%rpyc_connect {classic_server.address} --name lab --prefix lab_")
    version = platform.python_version()

    text_rows, html_rows = table_rows(ok(kernel, "%rpyc_connections"))
    assert text_rows == html_rows
    rows = {r["name"]: r for r in text_rows}
    assert set(rows) == {"conn", "lab"}
    lab, local = rows["lab"], rows["conn"]
    assert lab["address"] == classic_server.address
    assert local["address"] == "embedded server"
    for row, server_pid in ((lab, classic_server.pid), (local, pid)):
        assert row["state"] == "alive", row
        assert re.fullmatch(r"\d+\.\d ms", row["latency"]), row
        assert row["server"].startswith(f"Python {version}, pid {server_pid}, "), row
        assert row["trusted"] == "no", row
    assert lab["injected"] == "lab, lab_sys, lab_os"
    assert local["injected"] == "conn, rsys, ros"

    classic_server.stop()
    text_rows, html_rows = table_rows(ok(kernel, "%rpyc_connections", timeout=15))
    assert text_rows == html_rows
    rows = {r["name"]: r for r in text_rows}
    assert (rows["lab"]["state"], rows["lab"]["latency"]) == ("lost", "-"), rows
    assert rows["conn"]["state"] == "alive", rows
