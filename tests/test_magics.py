"""%rpyc_connect and its family in a real InteractiveShell, against real classic servers.

Every server here is a real process on loopback: the stock ``rpyc_classic`` of the
``classic_server`` fixture, extra ``StockServer`` instances, or the embedded server
the extension starts itself.  The few plain TCP listeners (silent, garbage) are
real sockets too.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import signal
import socket
import struct
import threading
import time
import types
from typing import Any, Dict, Optional

import pytest
import rpyc
from IPython.core.error import UsageError
from traitlets import TraitError

import ipyrpyc
from ipyrpyc import _rpyc
from tests.support.processes import Listener, StockServer, children_of, free_port, pid_alive, wait_until

PY_VERSION = platform.python_version()  # the stock servers run this interpreter too


# -- helpers ---------------------------------------------------------------------------------


def magics_of(ip) -> Any:
    return ip.magics_manager.registry["RpycMagics"]


def run(ip, magic: str, line: str = "") -> Any:
    return ip.run_line_magic(magic, line)


def user_names(ip) -> Dict[str, Any]:
    """The user's visible names and the objects bound to them."""
    return {k: v for k, v in ip.user_ns.items() if not k.startswith("_")}


def assert_ns_unchanged(ip, before: Dict[str, Any]) -> None:
    after = user_names(ip)
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k] is v, k


def server_pid_of(netref_os) -> int:
    return netref_os.getpid()


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


def run_bounded(fn, seconds: float, listener: "Listener") -> Optional[BaseException]:
    """Run ``fn`` in a thread; what it raised, or a failure if it is still running after ``seconds``
    (then the listener's sockets are closed, which ends the call)."""
    outcome: list = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: B036 - handed to the test
            outcome.append(e)
        else:
            outcome.append(None)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        listener.stop()
        worker.join(10)
        pytest.fail(f"still connecting after {seconds} s")
    return outcome[0]


# -- connect / inject / disconnect / reconnect -----------------------------------------------


def test_connect_binds_conn_and_remote_sys_os(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    out, err = capsys.readouterr()
    assert out == (
        f"Connected to 127.0.0.1:{classic_server.port} (Python {PY_VERSION}, pid {classic_server.pid}) "
        "as conn; injected rsys, ros\n"
    )
    assert err == ""
    ns = shell.user_ns
    assert isinstance(ns["conn"], rpyc.Connection) and not ns["conn"].closed
    assert isinstance(ns["rsys"], rpyc.BaseNetref) and isinstance(ns["ros"], rpyc.BaseNetref)
    assert not hasattr(ns["rsys"], "getpid")  # it really is sys, not os
    assert ns["ros"].getpid() == classic_server.pid != os.getpid()
    assert ns["rsys"].version.split()[0] == PY_VERSION


def test_connect_embedded_prints_and_disconnect_stops_server(shell, capsys):
    run(shell, "rpyc_connect")
    out, _ = capsys.readouterr()
    pid = shell.user_ns["conn"].eval("__import__('os').getpid()")
    assert out == f"Connected to embedded server (Python {PY_VERSION}, pid {pid}) as conn; injected rsys, ros\n"
    assert pid in children_of(os.getpid())
    run(shell, "rpyc_disconnect")
    assert wait_until(lambda: not pid_alive(pid), 10)
    assert "conn" not in shell.user_ns


def test_name_flag_binds_that_name(shell, classic_server, capsys):
    run(shell, "rpyc_connect", f"{classic_server.address} --name lab")
    out, _ = capsys.readouterr()
    assert out.rstrip("\n").endswith(" as lab; injected rsys, ros")
    assert isinstance(shell.user_ns["lab"], rpyc.Connection)
    assert "conn" not in shell.user_ns
    assert list(magics_of(shell).registry.sessions) == ["lab"]


def test_two_named_connections_at_once(shell, classic_server):
    other = StockServer()
    try:
        run(shell, "rpyc_connect", f"{classic_server.address} --name a --prefix a")
        run(shell, "rpyc_connect", f"{other.address} --name b --prefix b")
        ns = shell.user_ns
        assert ns["aos"].getpid() == classic_server.pid
        assert ns["bos"].getpid() == other.pid
        assert ns["a"] is not ns["b"] and not ns["a"].closed and not ns["b"].closed
        assert sorted(magics_of(shell).registry.sessions) == ["a", "b"]
        run(shell, "rpyc_disconnect", "a")
        assert "a" not in ns and "asys" not in ns
        assert ns["bos"].getpid() == other.pid
    finally:
        run(shell, "rpyc_disconnect", "--all")
        other.stop()


def test_prefix_flag(shell, classic_server, capsys):
    run(shell, "rpyc_connect", f"{classic_server.address} --prefix s")
    ns = shell.user_ns
    assert ns["sos"].getpid() == classic_server.pid and not hasattr(ns["ssys"], "getpid")
    assert "rsys" not in ns and "ros" not in ns
    run(shell, "rpyc_connect", f'{classic_server.address} --name c2 --prefix ""')
    out, _ = capsys.readouterr()
    assert out.rstrip("\n").endswith("as c2; injected sys, os")
    assert ns["os"].getpid() == classic_server.pid and not hasattr(ns["sys"], "getpid")


def test_modules_flag_aliases_and_dotted_names(shell, classic_server, capsys):
    run(shell, "rpyc_connect", f'{classic_server.address} --modules "sys np=json os.path"')
    out, err = capsys.readouterr()
    assert out.rstrip("\n").endswith("as conn; injected rsys, rnp, ros_path") and err == ""
    ns = shell.user_ns
    assert ns["rnp"].__name__ == "json" and ns["rnp"].dumps((1, "a")) == '[1, "a"]'
    assert ns["ros_path"].__name__ == "posixpath" and ns["ros_path"].join("a", "b") == "a/b"
    assert not hasattr(ns["rsys"], "getpid")
    assert "ros" not in ns


def test_unimportable_module_is_skipped_with_one_warning(shell, classic_server, capsys):
    run(shell, "rpyc_connect", f'{classic_server.address} --modules "sys no_such_mod_xyz os"')
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and "no_such_mod_xyz" in lines[0], err
    assert out.rstrip("\n").endswith("as conn; injected rsys, ros")
    ns = shell.user_ns
    assert "rno_such_mod_xyz" not in ns
    assert ns["ros"].getpid() == classic_server.pid


def test_no_inject_binds_only_the_connection(shell, classic_server, capsys):
    before = user_names(shell)
    run(shell, "rpyc_connect", f"{classic_server.address} --no-inject")
    out, _ = capsys.readouterr()
    assert out.rstrip("\n").endswith(" as conn")
    assert set(user_names(shell)) - set(before) == {"conn"}


def test_disconnect_removes_our_names_but_keeps_reassigned(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    conn = shell.user_ns["conn"]
    shell.run_cell("rsys = 5")
    capsys.readouterr()
    run(shell, "rpyc_disconnect")
    out, _ = capsys.readouterr()
    assert out == f"Disconnected conn ({classic_server.address}); removed conn, ros\n"
    ns = shell.user_ns
    assert ns["rsys"] == 5
    assert "conn" not in ns and "ros" not in ns
    assert conn.closed
    assert not magics_of(shell).registry.sessions


def test_disconnect_all_and_nothing_open(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    run(shell, "rpyc_connect", f"{classic_server.address} --name b --prefix b")
    a, b = shell.user_ns["conn"], shell.user_ns["b"]
    run(shell, "rpyc_disconnect", "--all")
    assert a.closed and b.closed
    for name in ("conn", "rsys", "ros", "b", "bsys", "bos"):
        assert name not in shell.user_ns
    capsys.readouterr()
    run(shell, "rpyc_disconnect")
    run(shell, "rpyc_disconnect", "--all")
    out, _ = capsys.readouterr()
    assert out == "No open rpyc connections.\n" * 2


def test_reconnect_gives_new_connection_and_rebinds(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    ns = shell.user_ns
    old_conn, old_rsys = ns["conn"], ns["rsys"]
    capsys.readouterr()
    run(shell, "rpyc_reconnect")
    out, _ = capsys.readouterr()
    assert out.rstrip("\n").endswith("; bound conn, rsys, ros")
    assert ns["conn"] is not old_conn and not ns["conn"].closed
    assert old_conn.closed and _rpyc.connection_of(old_rsys) is old_conn
    assert ns["rsys"] is not old_rsys and _rpyc.connection_of(ns["rsys"]) is ns["conn"]
    assert len(ns["rsys"].path) > 0
    assert ns["ros"].getpid() == classic_server.pid


def test_reconnect_keeps_a_name_the_user_reassigned(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    shell.run_cell("ros = 5")
    capsys.readouterr()
    run(shell, "rpyc_reconnect")
    out, err = capsys.readouterr()
    assert out.rstrip("\n").endswith("; bound conn, rsys")
    assert "'ros'" in err and len(err.splitlines()) == 1, err
    assert shell.user_ns["ros"] == 5
    assert _rpyc.connection_of(shell.user_ns["rsys"]) is shell.user_ns["conn"]


def test_reconnect_keeps_the_connection_name_if_the_user_took_it(shell, classic_server, capsys):
    run(shell, "rpyc_connect", classic_server.address)
    shell.run_cell('conn = "mine"')
    capsys.readouterr()
    run(shell, "rpyc_reconnect", "conn")
    out, err = capsys.readouterr()
    ns = shell.user_ns
    assert ns["conn"] == "mine"
    assert "'conn'" in err and len(err.splitlines()) == 1, err
    assert out.rstrip("\n").endswith("; bound rsys, ros")
    assert ns["ros"].getpid() == classic_server.pid
    assert _rpyc.connection_of(ns["ros"]) is magics_of(shell).registry.sessions["conn"].conn


def test_reconnect_after_stock_server_died_is_usage_error(shell, classic_server):
    run(shell, "rpyc_connect", classic_server.address)
    classic_server.stop()
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        run(shell, "rpyc_reconnect", "conn")
    assert time.monotonic() - start < 6
    text = one_line(err.value)
    assert "conn" in text and classic_server.address in text, text


def test_reconnect_restarts_killed_embedded_server(shell):
    run(shell, "rpyc_connect")
    ns = shell.user_ns
    old_conn = ns["conn"]
    pid = old_conn.eval("__import__('os').getpid()")
    server = magics_of(shell).registry.sessions["conn"].server
    assert server.pid == pid
    os.kill(pid, signal.SIGKILL)
    # Reap it before reconnecting. Under gVisor (this CI's sandbox) a SIGKILLed child can look
    # dead in /proc and be reaped by waitpid(WNOHANG) while its exit is still in flight; the
    # next fork may then get the same pid and die of that SIGKILL (~7% of quick reconnects).
    # A blocking wait lets the exit finish; a user reconnects seconds later anyway.
    assert server.proc.wait(10) == -signal.SIGKILL
    assert not pid_alive(pid)
    run(shell, "rpyc_reconnect")
    new_pid = ns["ros"].getpid()
    assert new_pid != pid and pid_alive(new_pid)
    assert ns["conn"] is not old_conn and old_conn.closed
    assert ns["conn"].eval("__import__('os').getpid()") == new_pid
    assert magics_of(shell).registry.sessions["conn"].server.pid == new_pid


# -- never silently overwrite user variables ---------------------------------------------------


def test_user_variable_named_like_connection_is_not_replaced(shell):
    shell.run_cell("conn = 1")
    listener = Listener()
    try:
        before = user_names(shell)
        children = set(children_of(os.getpid()))
        for line in (f"127.0.0.1:{listener.port}", ""):  # a TCP server, and the embedded one
            with pytest.raises(UsageError) as err:
                run(shell, "rpyc_connect", line)
            text = one_line(err.value)
            assert "'conn'" in text and "--name" in text and "--force" in text
            assert_ns_unchanged(shell, before)
            assert not magics_of(shell).registry.sessions
        time.sleep(0.2)
        assert listener.accepted == 0  # nothing was opened
        assert set(children_of(os.getpid())) == children  # no server was started
    finally:
        listener.stop()
    run(shell, "rpyc_connect", "--force")
    assert isinstance(shell.user_ns["conn"], rpyc.Connection)


def test_user_module_name_is_kept_with_a_warning(shell, classic_server, capsys):
    shell.run_cell('rsys = "mine"')
    run(shell, "rpyc_connect", classic_server.address)
    out, err = capsys.readouterr()
    ns = shell.user_ns
    assert ns["rsys"] == "mine"
    assert len(err.splitlines()) == 1 and "'rsys'" in err, err
    assert out.rstrip("\n").endswith("as conn; injected ros")
    assert ns["ros"].getpid() == classic_server.pid
    run(shell, "rpyc_connect", f"{classic_server.address} --name c2 --force")
    assert isinstance(ns["rsys"], rpyc.BaseNetref) and not hasattr(ns["rsys"], "getpid")


def test_second_connection_takes_over_our_names(shell, classic_server, capsys):
    other = StockServer()
    try:
        run(shell, "rpyc_connect", classic_server.address)
        capsys.readouterr()
        run(shell, "rpyc_connect", f"{other.address} --name b")
        out, err = capsys.readouterr()
        assert out.rstrip("\n").endswith("as b; injected rsys, ros")
        assert err.splitlines() == [
            "ipyrpyc: rsys now belongs to connection 'b' (was 'conn')",
            "ipyrpyc: ros now belongs to connection 'b' (was 'conn')",
        ]
        ns = shell.user_ns
        assert ns["ros"].getpid() == other.pid
        run(shell, "rpyc_disconnect", "conn")
        assert "conn" not in ns
        assert ns["ros"].getpid() == other.pid and _rpyc.connection_of(ns["rsys"]) is ns["b"]
        run(shell, "rpyc_disconnect", "b")
        assert "rsys" not in ns and "ros" not in ns
    finally:
        run(shell, "rpyc_disconnect", "--all")
        other.stop()


def test_names_come_back_to_the_earlier_connection_still_open(shell, classic_server, capsys):
    other, third = StockServer(), StockServer()
    try:
        run(shell, "rpyc_connect", classic_server.address)
        run(shell, "rpyc_connect", f"{other.address} --name b")
        run(shell, "rpyc_connect", f"{third.address} --name c --modules os")
        ns = shell.user_ns
        assert ns["ros"].getpid() == third.pid and _rpyc.connection_of(ns["rsys"]) is ns["b"]
        capsys.readouterr()
        run(shell, "rpyc_disconnect", "c")
        out, err = capsys.readouterr()
        assert out == f"Disconnected c ({third.address}); removed c\n"
        assert err == "ipyrpyc: ros is connection 'b''s again\n"
        assert ns["ros"].getpid() == other.pid
        run(shell, "rpyc_disconnect", "b")
        out, err = capsys.readouterr()
        assert out == f"Disconnected b ({other.address}); removed b\n"
        assert err == "ipyrpyc: rsys, ros are connection 'conn''s again\n"
        assert ns["ros"].getpid() == classic_server.pid and _rpyc.connection_of(ns["rsys"]) is ns["conn"]
        # a name the user took in between stays theirs; a closed connection's names never come back
        run(shell, "rpyc_connect", f"{other.address} --name b")
        ns["rsys"] = "mine"
        run(shell, "rpyc_disconnect", "conn")
        run(shell, "rpyc_disconnect", "b")
        assert ns["rsys"] == "mine" and "ros" not in ns
        run(shell, "rpyc_connect", classic_server.address)
        run(shell, "rpyc_connect", f"{other.address} --name b --force")
        capsys.readouterr()
        run(shell, "rpyc_disconnect", "--all")  # everything closes: nothing handed back on the way
        out, err = capsys.readouterr()
        assert err == "" and not {"conn", "b", "rsys", "ros"} & set(ns)
    finally:
        run(shell, "rpyc_disconnect", "--all")
        other.stop()
        third.stop()


def test_same_connection_name_twice(shell, classic_server):
    run(shell, "rpyc_connect", classic_server.address)
    old = shell.user_ns["conn"]
    with pytest.raises(UsageError) as err:
        run(shell, "rpyc_connect", classic_server.address)
    text = one_line(err.value)
    assert "%rpyc_reconnect conn" in text and "--name" in text and "--force" in text
    assert shell.user_ns["conn"] is old and not old.closed
    run(shell, "rpyc_connect", f"{classic_server.address} --force")
    assert old.closed
    assert shell.user_ns["conn"] is not old and shell.user_ns["ros"].getpid() == classic_server.pid
    assert list(magics_of(shell).registry.sessions) == ["conn"]


# -- address forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    ["127.0.0.1:{port}", "127.0.0.1 --port {port}", "127.0.0.1 -p {port}", "127.0.0.1 --port={port}",
     "localhost:{port}", "127.0.0.1:{port} --port {port}"],
)
def test_address_forms(shell, classic_server, form):
    run(shell, "rpyc_connect", form.format(port=classic_server.port))
    assert shell.user_ns["ros"].getpid() == classic_server.pid


def test_ipv6_loopback_address(shell, capsys):
    with socket.socket(socket.AF_INET6) as probe:  # ::1 must work here: fail loudly if not
        probe.bind(("::1", 0))
        probe.listen(1)
        socket.create_connection(probe.getsockname()[:2], 2).close()
    server = StockServer(host="::1")
    try:
        run(shell, "rpyc_connect", server.address)
        out, _ = capsys.readouterr()
        assert out.startswith(f"Connected to [::1]:{server.port} (Python {PY_VERSION}, pid {server.pid})")
        assert shell.user_ns["ros"].getpid() == server.pid
        run(shell, "rpyc_disconnect")
    finally:
        server.stop()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e7"])
def test_bad_timeout_flag(shell, classic_server, value):
    """Not a positive number of seconds that rpyc can wait (its poll() takes a C int of ms)."""
    with pytest.raises(UsageError, match="--timeout"):
        run(shell, "rpyc_connect", f"{classic_server.address} --timeout {value}")
    assert not magics_of(shell).registry.sessions


def test_large_timeout_still_works(shell, classic_server):
    run(shell, "rpyc_connect", f"{classic_server.address} --timeout 1e6")
    assert shell.user_ns["ros"].getpid() == classic_server.pid


def test_ssh_destination_cannot_be_an_option(shell):
    """``-o…@host`` would be read by ssh as an option (ProxyCommand runs a local command)."""
    before = set(children_of(os.getpid()))
    for value in ("-oProxyCommand=false@127.0.0.1:1", "-oProxyCommand=false", "u@-oProxyCommand=false"):
        with pytest.raises(UsageError, match="cannot start with '-'"):
            run(shell, "rpyc_connect", f"--ssh={value}")
    assert set(children_of(os.getpid())) == before


def test_conflicting_ports(shell, classic_server):
    """The address says one port, --port another (a live server): refuse, connect nowhere."""
    with pytest.raises(UsageError) as err:
        run(shell, "rpyc_connect", f"127.0.0.1:1 --port {classic_server.port}")
    assert one_line(err.value) == f"the address says port 1 but --port says {classic_server.port}"
    assert not magics_of(shell).registry.sessions and "conn" not in shell.user_ns


# -- failures are one-line UsageErrors, quickly ----------------------------------------------


def test_refused_port_fails_fast(shell):
    port = free_port()
    before = user_names(shell)
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        run(shell, "rpyc_connect", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 6
    text = one_line(err.value)
    assert f"127.0.0.1:{port}" in text and "refused" in text, text
    assert_ns_unchanged(shell, before)
    assert not magics_of(shell).registry.sessions


def test_failed_embedded_connect_leaves_no_server(shell):
    """The embedded server starts, the handshake cannot finish in 1 ns: UsageError, server stopped."""
    before = set(children_of(os.getpid()))
    with pytest.raises(UsageError) as err:
        run(shell, "rpyc_connect", "--timeout 1e-9")
    assert "embedded server" in one_line(err.value) and "timed out" in str(err.value)
    assert wait_until(lambda: set(children_of(os.getpid())) == before, 5)
    assert not magics_of(shell).registry.sessions and "conn" not in shell.user_ns


def test_silent_listener_times_out(shell):
    run(shell, "config", "RpycMagics.connect_timeout = 1")
    listener = Listener()
    try:
        start = time.monotonic()
        with pytest.raises(UsageError) as err:
            run(shell, "rpyc_connect", f"127.0.0.1:{listener.port}")
        assert time.monotonic() - start < 1 + 2
        assert "timed out" in one_line(err.value)
        assert listener.accepted == 1
    finally:
        listener.stop()
    assert not magics_of(shell).registry.sessions


def _frame(payload: bytes) -> bytes:
    """One rpyc channel frame (length, compressed flag, data, flusher)."""
    return struct.pack("!LB", len(payload), 0) + payload + b"\n"


@pytest.mark.parametrize(
    "payload, close_after",
    [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False),  # huge frame length, then silence
        (b"\xff\xfe garbage \x00\x01" * 8, True),  # junk, then EOF
        (_frame(b"\xfe\xfd\xfc\xfb\xfa"), False),  # a well-framed message that is not brine
        (_frame(rpyc.core.brine.dump("hello")), False),  # brine, but not an rpyc message
    ],
    ids=["http", "junk-eof", "bad-brine", "wrong-message"],
)
def test_garbage_speaking_listener(shell, payload, close_after):
    run(shell, "config", "RpycMagics.connect_timeout = 1")
    listener = Listener(payload, close_after)
    try:
        start = time.monotonic()
        error = run_bounded(lambda: run(shell, "rpyc_connect", f"127.0.0.1:{listener.port}"), 1 + 2, listener)
        assert time.monotonic() - start < 1 + 2
        assert isinstance(error, UsageError), repr(error)
        assert f"127.0.0.1:{listener.port}" in one_line(error)
    finally:
        listener.stop()
    assert not magics_of(shell).registry.sessions
    assert "conn" not in shell.user_ns


# -- %rpyc_connections -----------------------------------------------------------------------


def test_connections_table(shell, classic_server):
    run(shell, "rpyc_connect", classic_server.address)
    run(shell, "rpyc_connect", f"{classic_server.address} --name t --prefix t --trust")
    table = run(shell, "rpyc_connections")
    lines = repr(table).splitlines()
    assert lines[0].split() == ["name", "address", "state", "latency", "server", "injected", "trusted"]
    assert set(lines[1]) == {"-", " "}
    server = f"Python {PY_VERSION}, pid {classic_server.pid}"
    row_conn = re.compile(
        rf"^conn +127\.0\.0\.1:{classic_server.port} +alive +\d+\.\d ms +{re.escape(server)}, \S+ +conn, rsys, ros +no$"
    )
    row_t = re.compile(
        rf"^t +127\.0\.0\.1:{classic_server.port} +alive +\d+\.\d ms +{re.escape(server)}, \S+ +t, tsys, tos +yes$"
    )
    assert len(lines) == 4 and row_conn.match(lines[2]) and row_t.match(lines[3]), lines
    page = table._repr_html_()
    assert page.startswith("<table") and page.endswith("</table>")
    assert page.count("<tr>") == 3 and page.count("<th>") == 7 and page.count("<td>") == 14
    assert "<td>alive</td>" in page and "<td>yes</td>" in page and "<td>no</td>" in page
    assert "<td>conn, rsys, ros</td>" in page

    classic_server.stop()
    lines = repr(run(shell, "rpyc_connections")).splitlines()
    assert len(lines) == 4
    for line in lines[2:]:
        assert line.split()[2:4] == ["lost", "-"], line


def test_connections_with_nothing_open(shell):
    table = run(shell, "rpyc_connections")
    assert repr(table) == "No open rpyc connections."
    assert "No open rpyc connections." in table._repr_html_() and "<table" not in table._repr_html_()


def test_connections_html_escapes_what_the_server_says(shell, classic_server):
    run(shell, "rpyc_connect", classic_server.address)
    # Make the (real) server lie about itself through this very connection, then reconnect.
    shell.user_ns["conn"].execute(
        "import socket, sys\n"
        "socket.gethostname = lambda: '<img src=x onerror=alert(1)>'\n"
        "sys.version = '<b>3&1</b> (evil)'\n"
    )
    run(shell, "rpyc_reconnect")
    page = run(shell, "rpyc_connections")._repr_html_()
    assert "<img" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Python &lt;b&gt;3&amp;1&lt;/b&gt;" in page
    assert "<img src=x" in repr(run(shell, "rpyc_connections"))  # text stays as the server said


# -- configuration ---------------------------------------------------------------------------


TRAITS = {"host", "port", "timeout", "connect_timeout", "modules", "prefix", "trust", "ssh_options"}


def close_all_handlers(registry=None) -> list:
    """The live bound ``Registry.close_all`` methods: what atexit holds for us.

    (``atexit._ncallbacks()`` cannot tell: ``unregister`` leaves its count alone.)
    """
    from ipyrpyc.registry import Registry

    gc.collect()
    return [
        o for o in gc.get_objects()
        if type(o) is types.MethodType and o.__func__ is Registry.close_all  # type(): no netref probing
        and (registry is None or o.__self__ is registry)
    ]


def test_config_lists_every_trait_with_help(shell, capsys):
    cls = type(magics_of(shell))
    assert TRAITS <= set(cls.class_traits(config=True))
    run(shell, "config", "RpycMagics")
    out, _ = capsys.readouterr()
    for name, trait in cls.class_traits(config=True).items():
        assert f"RpycMagics.{name}=" in out, name
        assert trait.help and trait.help.split()[0] in out, name


def test_config_prefix_and_flag_override(shell, classic_server):
    run(shell, "config", 'RpycMagics.prefix = "q"')
    run(shell, "rpyc_connect", classic_server.address)
    ns = shell.user_ns
    assert ns["qos"].getpid() == classic_server.pid and "ros" not in ns
    run(shell, "rpyc_connect", f"{classic_server.address} --name c2 --prefix z")
    assert ns["zos"].getpid() == classic_server.pid


def test_config_modules(shell, classic_server):
    run(shell, "config", 'RpycMagics.modules = ["json"]')
    run(shell, "rpyc_connect", classic_server.address)
    ns = shell.user_ns
    assert ns["rjson"].__name__ == "json"
    assert "rsys" not in ns and "ros" not in ns
    run(shell, "rpyc_connect", f"{classic_server.address} --name c2 --prefix m --modules os")
    assert "mjson" not in ns and ns["mos"].getpid() == classic_server.pid


def test_config_timeout_and_flag_override(shell, classic_server):
    run(shell, "config", "RpycMagics.timeout = 2.5")
    run(shell, "rpyc_connect", classic_server.address)
    assert shell.user_ns["conn"]._config["sync_request_timeout"] == 2.5
    run(shell, "rpyc_connect", f"{classic_server.address} --name c2 --prefix c --timeout 7")
    assert shell.user_ns["c2"]._config["sync_request_timeout"] == 7.0
    assert shell.user_ns["conn"]._config["sync_request_timeout"] == 2.5


def test_config_host_and_port_defaults(shell, classic_server):
    run(shell, "config", 'RpycMagics.host = "127.0.0.1"')
    run(shell, "config", f"RpycMagics.port = {classic_server.port}")
    before = set(children_of(os.getpid()))
    run(shell, "rpyc_connect")  # no address: the configured server, not the embedded one
    assert shell.user_ns["ros"].getpid() == classic_server.pid
    assert set(children_of(os.getpid())) == before
    run(shell, "rpyc_connect", "127.0.0.1 --name c2 --prefix c")  # host given, port from the trait
    assert shell.user_ns["cos"].getpid() == classic_server.pid


@pytest.mark.parametrize(
    "trait, bad",
    [("timeout", -1), ("timeout", 0), ("timeout", float("nan")), ("timeout", float("inf")), ("timeout", 1e7),
     ("connect_timeout", -1), ("connect_timeout", 1e7), ("port", 70000), ("port", -1)],
)
def test_invalid_trait_value_is_rejected(shell, trait, bad):
    magics = magics_of(shell)
    old = getattr(magics, trait)
    with pytest.raises(TraitError):
        setattr(magics, trait, bad)
    assert getattr(magics, trait) == old
    run(shell, "config", f"RpycMagics.{trait} = {bad!r}".replace("nan", "float('nan')").replace("inf", "float('inf')"))
    assert getattr(magics, trait) == old


# -- extension life cycle ----------------------------------------------------------------------


def _rpyc_configurables(ip) -> list:
    return [c for c in ip.configurables if type(c).__name__ == "RpycMagics"]


def test_loading_twice_is_harmless(shell):
    magics = magics_of(shell)
    assert len(close_all_handlers(magics.registry)) == 1
    run(shell, "load_ext", "ipyrpyc")
    ipyrpyc.load_ipython_extension(shell)
    assert magics_of(shell) is magics
    assert _rpyc_configurables(shell) == [magics]
    assert [h.__self__ for h in close_all_handlers()] == [magics.registry]
    run(shell, "reload_ext", "ipyrpyc")
    new = magics_of(shell)
    assert new is not magics and _rpyc_configurables(shell) == [new]
    assert [h.__self__ for h in close_all_handlers()] == [new.registry]


def test_unload_cleans_up_and_load_works_again(shell, classic_server):
    run(shell, "rpyc_connect")
    run(shell, "rpyc_connect", f"{classic_server.address} --name s --prefix s")
    ns = shell.user_ns
    embedded, stock = ns["conn"], ns["s"]
    pid = embedded.eval("__import__('os').getpid()")
    magics = magics_of(shell)
    assert len(close_all_handlers(magics.registry)) == 1

    run(shell, "unload_ext", "ipyrpyc")
    assert embedded.closed and stock.closed
    for name in ("conn", "rsys", "ros", "s", "ssys", "sos"):
        assert name not in ns
    assert wait_until(lambda: not pid_alive(pid), 10)
    assert not magics.registry.sessions
    for name in ("rpyc_connect", "rpyc_disconnect", "rpyc_reconnect", "rpyc_connections"):
        with pytest.raises(UsageError, match=f"Line magic function `%{name}` not found"):
            run(shell, name)
    assert "RpycMagics" not in shell.magics_manager.registry
    assert _rpyc_configurables(shell) == []
    assert close_all_handlers() == []  # atexit let go of it

    run(shell, "load_ext", "ipyrpyc")
    assert len(close_all_handlers(magics_of(shell).registry)) == 1
    run(shell, "rpyc_connect", classic_server.address)
    assert ns["ros"].getpid() == classic_server.pid


def test_help_is_the_docstring_and_help_flag_is_harmless(shell, capsys):
    doc = shell.find_line_magic("rpyc_connect").__doc__
    assert "Open an RPyC classic connection" in doc and "--name" in doc and "--timeout" in doc
    shell.run_cell("%rpyc_connect?")
    out, _ = capsys.readouterr()
    assert "Open an RPyC classic connection" in out
    for line in ("--help", "-h"):
        with pytest.raises(UsageError):
            run(shell, "rpyc_connect", line)
    result = shell.run_cell("%rpyc_connect --help")
    assert isinstance(result.error_in_exec, UsageError)
    assert shell.run_cell("40 + 2").result == 42
    assert not magics_of(shell).registry.sessions


def test_a_refused_config_value_does_not_block_loading_again(shell, capsys):
    """``%config`` stores a value even when the trait refuses it; loading again drops it with a warning."""
    run(shell, "config", "RpycMagics.timeout = -1")
    run(shell, "unload_ext", "ipyrpyc")
    capsys.readouterr()
    run(shell, "load_ext", "ipyrpyc")
    err = capsys.readouterr().err
    assert "ignoring RpycMagics.timeout = -1" in err
    magics = magics_of(shell)
    assert magics.timeout == 30.0 and "timeout" not in shell.config.get("RpycMagics", {})
    assert [c for c in shell.configurables if type(c).__name__ == "RpycMagics"] == [magics]


def test_connection_name_cannot_be_an_injected_module_name(shell, classic_server):
    with pytest.raises(UsageError, match="also the name of an injected module"):
        run(shell, "rpyc_connect", f"{classic_server.address} --name ros")
    assert "ros" not in shell.user_ns and not magics_of(shell).registry.sessions
    run(shell, "rpyc_connect", f"{classic_server.address} --name ros --no-inject")
    assert shell.user_ns["ros"] is magics_of(shell).registry.sessions["ros"].conn
