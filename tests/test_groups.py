"""Many servers at once, on loopback: groups, parallel cells, TCP discovery, bad input.

Every server is a stock ``rpyc_classic`` process on 127.0.0.1 (several per test), the TCP
registry is rpyc's own ``TCPRegistryServer`` bound to 127.0.0.1, and the kernels are real
ipykernels from the ``ipyrpyc`` kernelspec.  The same code across real separate hosts (UDP
broadcast discovery) is in ``test_groups_netns.py``.  Timing is asserted only as order and
overlap (what ran at the same time on the servers), never as speed; ``benchmarks/fleet.py``
measures speed.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from typing import Callable, Iterator, List

import pytest
import rpyc
from IPython.core.error import UsageError
from rpyc.core.service import ClassicClient

from ipyrpyc.errors import GroupError
from ipyrpyc.groups import Group, Results
from ipyrpyc.proxy import C2S, DelayProxy
from tests.support.kernels import Kernel, fails, ok, state_of, usage_error, value
from tests.support.processes import Listener, StockServer, free_port, quiet_port, stop_process, wait_until

HANDSHAKE = 10  # requests of rpyc's own classic handshake (ClassicClient), measured below


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def servers() -> Iterator[Callable[..., List[StockServer]]]:
    """``start(n, *extra, port=0)``: n more stock classic servers; all stopped at the end."""
    started: List[StockServer] = []

    def start(n: int, *extra: str, port: int = 0) -> List[StockServer]:
        new = [StockServer(*extra, port=port) for _ in range(n)]
        started.extend(new)
        return new

    try:
        yield start
    finally:
        for s in started:
            s.stop()


def addresses(servers: List[StockServer]) -> str:
    return " ".join(s.address for s in servers)


class TcpRegistry:
    """rpyc's own TCPRegistryServer on 127.0.0.1 (``rpyc_registry`` would bind every interface)."""

    def __init__(self) -> None:
        self.port = free_port()
        code = ("import sys; from rpyc.utils.registry import TCPRegistryServer; "
                "TCPRegistryServer(host='127.0.0.1', port=int(sys.argv[1])).start()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(self._listening, 20):
            self.stop()
            raise RuntimeError("the TCP registry did not start")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    @property
    def registration(self) -> tuple:
        """rpyc_classic's switches to register with this registry."""
        return ("--register", "--registry-type", "TCP", "--registry-host", "127.0.0.1",
                "--registry-port", str(self.port))

    def known(self) -> list:
        from rpyc.utils.registry import TCPRegistryClient

        return sorted(TCPRegistryClient("127.0.0.1", port=self.port, timeout=2).discover("SLAVE"))

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def tcp_registry() -> Iterator[TcpRegistry]:
    reg = TcpRegistry()
    try:
        yield reg
    finally:
        reg.stop()


def magics_of(ip):
    return ip.magics_manager.registry["RpycMagics"]


# -- connecting a group ----------------------------------------------------------------------------
def test_a_group_binds_only_its_name_and_maps_members_to_connections(shell, servers, capsys):
    a, b, c = servers(3)
    shell.run_line_magic("rpyc_connect", f"{a.address} {b.address} east={c.address} --group lab")
    out, err = capsys.readouterr()
    assert out.startswith("Connected 3 of 3 members of lab in ") and "(bound to lab)" in out, out
    assert f"lab1 {a.address} (pid {a.pid})" in out and f"east {c.address} (pid {c.pid})" in out, out
    assert err == ""
    lab = shell.user_ns["lab"]
    assert type(lab) is Group and list(lab) == ["lab1", "lab2", "east"] and len(lab) == 3
    assert [lab[m].modules.os.getpid() for m in lab] == [a.pid, b.pid, c.pid]
    assert all(isinstance(conn, rpyc.Connection) for conn in lab.values())
    assert not {"lab1", "lab2", "east", "conn", "rsys", "ros"} & set(shell.user_ns)  # members bind nothing
    table = repr(shell.run_line_magic("rpyc_connections", "")).splitlines()
    assert table[0].split()[-1] == "group" and len(table) == 5
    assert all(re.match(rf"^{m} .* alive .* no +lab$", line) for m, line in zip(lab, table[2:])), table
    assert repr(lab) == f"<rpyc group lab: lab1 ({a.address}), lab2 ({b.address}), east ({c.address})>"

    shell.run_line_magic("rpyc_disconnect", "lab")
    out, _ = capsys.readouterr()
    assert out == "Disconnected group lab (lab1, lab2, east); removed lab\n"
    assert "lab" not in shell.user_ns and not magics_of(shell).registry.sessions


def test_disconnect_all_and_unloading_remove_the_groups(shell, servers):
    a, b, c = servers(3)
    shell.run_line_magic("rpyc_connect", f"{a.address} {b.address} --group lab")
    shell.run_line_magic("rpyc_connect", f"{c.address} --group other")
    shell.run_line_magic("rpyc_disconnect", "--all")
    assert not {"lab", "other"} & set(shell.user_ns) and not magics_of(shell).registry.sessions
    shell.run_line_magic("rpyc_connect", f"{a.address} --group lab")
    conn = shell.user_ns["lab"]["lab1"]
    shell.run_line_magic("unload_ext", "ipyrpyc")
    try:
        assert "lab" not in shell.user_ns and conn.closed
    finally:
        shell.run_line_magic("load_ext", "ipyrpyc")  # the fixture unloads it again


def test_members_that_cannot_connect_are_listed_one_line_each(shell, servers, capsys):
    good = servers(2)
    refused = free_port()
    garbage = Listener(payload=b"SSH-2.0-OpenSSH_9.2\r\n" * 4)
    try:
        shell.run_line_magic("config", "RpycMagics.connect_timeout = 1.0")
        shell.run_line_magic("rpyc_connect", f"{good[0].address} 127.0.0.1:{refused} "
                                             f"127.0.0.1:{garbage.port} {good[1].address} --group lab")
    finally:
        garbage.stop()
    out, err = capsys.readouterr()
    assert out.startswith("Connected 2 of 4 members of lab in "), out
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0] == f"lab2: cannot connect to 127.0.0.1:{refused}: connection refused"
    assert lines[1].startswith(f"lab3: cannot connect to 127.0.0.1:{garbage.port}"), lines
    assert list(shell.user_ns["lab"]) == ["lab1", "lab4"]
    assert sorted(magics_of(shell).registry.sessions) == ["lab1", "lab4"]


def test_no_member_connecting_is_a_usage_error_and_binds_nothing(shell, capsys):
    with pytest.raises(UsageError, match=r"^no member of lab could connect \(2 tried, each listed above\)$"):
        shell.run_line_magic("rpyc_connect", f"127.0.0.1:{free_port()} 127.0.0.1:{free_port()} --group lab")
    assert len(capsys.readouterr().err.splitlines()) == 2
    assert "lab" not in shell.user_ns and not magics_of(shell).registry.sessions


def test_connecting_a_member_costs_the_handshake_and_two_requests(shell, servers):
    """Counted by a proxy in front of each server: rpyc's classic handshake, then the server
    program with its modules' netref classes, then its start with live output routed."""
    srv = servers(3)
    proxies = [DelayProxy(("127.0.0.1", s.port)) for s in srv]
    try:
        def requests(proxy: DelayProxy) -> List[str]:
            assert proxy.quiesce(timeout=5)
            return [f.handler for f in proxy.take()
                    if f.direction == C2S and f.kind == "request" and f.handler != "close"]

        plain = rpyc.connect("127.0.0.1", proxies[0].port, service=ClassicClient)
        plain.close()
        assert len(requests(proxies[0])) == HANDSHAKE
        plain = rpyc.classic.connect("127.0.0.1", proxies[0].port)
        assert plain.modules.sys is not plain.modules.os
        plain.close()
        assert len(requests(proxies[0])) == HANDSHAKE + 4  # two imports and two inspects

        shell.run_line_magic("rpyc_connect", f"127.0.0.1:{proxies[0].port}")  # rsys, ros bound
        got = requests(proxies[0])
        assert len(got) == HANDSHAKE + 2 and got[-2:] == ["call", "call"], got
        assert shell.user_ns["ros"].getpid() == srv[0].pid
        requests(proxies[0])  # that getpid's own requests

        shell.run_line_magic("rpyc_connect", " ".join(f"127.0.0.1:{p.port}" for p in proxies) + " --group lab")
        for proxy in proxies:
            got = requests(proxy)
            assert len(got) == HANDSHAKE + 2 and "del" not in got, got
    finally:
        for p in proxies:
            p.stop()


def test_force_replaces_a_group_and_names_never_collide(shell, servers):
    a, b = servers(2)
    shell.run_line_magic("rpyc_connect", f"{a.address} --group lab")
    first = shell.user_ns["lab"]
    with pytest.raises(UsageError, match="a group named 'lab' is open"):
        shell.run_line_magic("rpyc_connect", f"{b.address} --group lab")
    with pytest.raises(UsageError, match="'lab' is the name of a group"):
        shell.run_line_magic("rpyc_connect", f"{b.address} --name lab")
    with pytest.raises(UsageError, match="a connection named 'lab1' is open"):
        shell.run_line_magic("rpyc_connect", f"lab1={b.address} --group other")
    shell.user_ns["mine"] = 1
    with pytest.raises(UsageError, match="'mine' is already a variable of yours"):
        shell.run_line_magic("rpyc_connect", f"{b.address} --group mine")
    shell.run_line_magic("rpyc_connect", f"{b.address} --group lab --force")
    assert shell.user_ns["lab"] is not first and shell.user_ns["lab"]["lab1"].modules.os.getpid() == b.pid
    assert len(first) == 0  # the old group's member was closed


# -- running on a group ----------------------------------------------------------------------------
RECORD = """\
import os, time
started = time.time()
time.sleep(0.5)
(os.getpid(), started, time.time())
"""


def test_a_cell_runs_on_every_member_at_the_same_time(shell, servers):
    srv = servers(3)
    shell.run_line_magic("rpyc_connect", f"{addresses(srv)} --group lab")
    results = shell.run_cell_magic("rpyc", "lab", RECORD)
    assert type(results) is Results and shell.user_ns["_rpyc_results"] is results
    assert list(results) == ["lab1", "lab2", "lab3"] and not results.errors
    assert [results[m][0] for m in results] == [s.pid for s in srv]
    starts, ends = [r[1] for r in results.values()], [r[2] for r in results.values()]
    assert max(starts) < min(ends), "the members did not run at the same time"
    table = repr(results).splitlines()
    assert [line.split()[0] for line in table] == ["lab1", "lab2", "lab3"]
    assert table[0].startswith(f"lab1  ({srv[0].pid}, ")
    # a statement gives no value but the results are still there
    assert shell.run_cell_magic("rpyc", "lab", "x = 1") is None
    assert dict(shell.user_ns["_rpyc_results"]) == {"lab1": None, "lab2": None, "lab3": None}


def test_a_cell_on_named_connections_and_on_all(shell, servers):
    srv = servers(3)
    shell.run_line_magic("rpyc_connect", f"{srv[0].address} --name solo --no-inject")
    shell.run_line_magic("rpyc_connect", f"{srv[1].address} {srv[2].address} --group lab")
    pid = "__import__('os').getpid()"
    assert dict(shell.run_cell_magic("rpyc", "solo,lab2", pid)) == {"solo": srv[0].pid, "lab2": srv[2].pid}
    assert dict(shell.run_cell_magic("rpyc", "--all", pid)) == {"solo": srv[0].pid, "lab1": srv[1].pid,
                                                               "lab2": srv[2].pid}
    assert dict(shell.run_cell_magic("rpyc", "lab,solo", pid)) == {"lab1": srv[1].pid, "lab2": srv[2].pid,
                                                                  "solo": srv[0].pid}
    assert shell.run_cell_magic("rpyc", "solo", pid) == srv[0].pid  # one name alone: the single path


def test_a_cell_that_cannot_be_sent_is_refused_before_any_member_runs_it(shell, servers):
    srv = servers(2)
    shell.run_line_magic("rpyc_connect", f"{addresses(srv)} --group lab")
    for cell, says in [("x = 1\0", r"the cell contains a null character \(\\x00\), .*"),
                       ("x = '\ud800'", r"the cell contains '\\ud800', a lone surrogate, which UTF-8 source .*")]:
        with pytest.raises(UsageError, match=says):
            shell.run_cell_magic("rpyc", "lab", cell)
    assert dict(shell.run_cell_magic("rpyc", "lab", "'x' in globals()")) == {"lab1": False, "lab2": False}


def test_netref_values_are_displayed_in_one_request_each_all_at_once(shell, servers):
    srv = servers(2)
    shell.run_line_magic("rpyc_connect", f"{addresses(srv)} --group lab")
    results = shell.run_cell_magic("rpyc", "lab", "import os\n[os.getpid()] * 3")
    from ipyrpyc.wire import RequestCounter

    counters = [RequestCounter(conn) for conn in shell.user_ns["lab"].values()]
    for c in counters:
        c.__enter__()
    try:
        text = repr(results)
    finally:
        for c in counters:
            c.__exit__(None, None, None)
    assert [c.count for c in counters] == [1, 1]
    assert text == f"lab1  [{srv[0].pid}, {srv[0].pid}, {srv[0].pid}]\nlab2  [{srv[1].pid}, {srv[1].pid}, {srv[1].pid}]"
    long = shell.run_cell_magic("rpyc", "lab", "list(range(5000))")
    assert repr(long).splitlines()[0].endswith("… [whole value: _rpyc_results['lab1']]")


def test_push_sends_to_all_and_pull_gathers_a_mapping(shell, servers):
    srv = servers(2)
    shell.run_line_magic("rpyc_connect", f"{addresses(srv)} --group lab")
    shell.user_ns["n"] = 10
    shell.run_cell_magic("rpyc", "lab --push n --pull total,me", "import os\nme = os.getpid()\ntotal = n * n")
    assert shell.user_ns["total"] == {"lab1": 100, "lab2": 100}
    assert shell.user_ns["me"] == {"lab1": srv[0].pid, "lab2": srv[1].pid}
    # a member without the name: the cell fails, the names stay as they were, the rest is in _rpyc_results
    shell.run_cell_magic("rpyc", "lab1", "only = 1")
    shell.user_ns["only"] = "mine"
    with pytest.raises(GroupError, match=r"^1 of 2 members failed the cell: lab2$") as info:
        shell.run_cell_magic("rpyc", "lab --pull only", "pass")
    assert str(info.value.errors["lab2"]) == "--pull only: not defined on lab2"
    assert shell.user_ns["only"] == "mine" and shell.user_ns["_rpyc_results"].pulled == {"only": {"lab1": 1}}


def test_apply_and_map(shell, servers):
    srv = servers(3)
    shell.run_line_magic("rpyc_connect", f"{addresses(srv)} --group lab")
    lab = shell.user_ns["lab"]

    def where(offset, scale=1):
        import os

        return (os.getpid() + offset) * scale

    def square(x):
        return x * x

    assert dict(lab.apply(where, 1, scale=2)) == {f"lab{i + 1}": (s.pid + 1) * 2 for i, s in enumerate(srv)}
    assert lab.map(square, range(10)) == [x * x for x in range(10)]
    assert lab.map(square, []) == []
    assert dict(lab.apply("len", "abc")) == {"lab1": 3, "lab2": 3, "lab3": 3}  # a name on the servers
    with pytest.raises(ValueError, match="a lambda cannot be sent"):
        lab.apply(lambda: 1)
    with pytest.raises(TypeError, match="not plain data"):
        lab.apply(where, object())
    with pytest.raises(GroupError, match=r"^3 of 3 members failed calling square: lab1, lab2, lab3$") as info:
        lab.map(square, ["a", "b", "c"])
    assert "can't multiply sequence" in str(info.value.errors["lab1"])


# -- failures --------------------------------------------------------------------------------------
def test_a_failing_member_fails_the_cell_and_the_others_values_stay(kernel, servers):
    srv = servers(3)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    cell = f"%%rpyc lab\nimport os\ndef check(pid):\n    return 1 / (pid - {srv[1].pid})\ncheck(os.getpid())"
    res = fails(kernel, cell, "GroupError")
    assert res.evalue == "1 of 3 members failed the cell: lab2", res
    tb = res.plain_traceback
    assert tb.startswith("[lab2:execute]:\nRemote traceback (" + srv[1].address + f", pid {srv[1].pid}):"), tb
    assert "<lab2.cell-1>" in tb and "return 1 / (pid - " in tb and "ZeroDivisionError: division by zero" in tb
    assert tb.endswith("GroupError: 1 of 3 members failed the cell: lab2") and "lab1" not in tb.split("\n", 1)[1]
    assert value(kernel, "sorted(_rpyc_results)") == ["lab1", "lab3"]
    assert value(kernel, "list(_rpyc_results.errors)") == ["lab2"]
    full = fails(kernel, "raise _rpyc_results.errors['lab2']", "ZeroDivisionError")  # every traceback reachable
    assert "return 1 / (pid - " in full.plain_traceback


def test_many_failures_show_four_tracebacks_and_name_the_rest(kernel, servers):
    srv = servers(6)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    res = fails(kernel, "%%rpyc lab\n{}['missing']", "GroupError")
    tb = res.plain_traceback
    assert [line for line in tb.splitlines() if line.startswith("[lab")] == [f"[lab{i}:execute]:" for i in range(1, 5)]
    assert "... 2 more: lab5 (KeyError), lab6 (KeyError); every error is in _rpyc_results.errors" in tb, tb


def test_live_output_is_labelled_and_arrives_as_printed(kernel, servers):
    srv = servers(3)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    cell = ("%%rpyc lab\nimport os, sys, time\nfor i in range(3):\n    print('out', i, os.getpid(), flush=True)\n"
            "    print('err', i, file=sys.stderr, flush=True)\n    time.sleep(0.4)\n")
    res = ok(kernel, cell)
    first = res.streams[0][0]
    assert res.t_idle - first > 0.6, "the output came at the end, not as printed"
    current = {}
    lines = {"stdout": [], "stderr": []}
    for _, name, text in res.streams:
        for line in text.splitlines():
            m = re.fullmatch(r"\[(stdout|stderr):(lab\d)\]", line)
            if m:
                assert m.group(1) == name
                current[name] = m.group(2)
            else:
                lines[name].append((current[name], line))
    pids = {f"lab{i + 1}": s.pid for i, s in enumerate(srv)}
    for member, pid in pids.items():
        assert [line for m, line in lines["stdout"] if m == member] == [f"out {i} {pid}" for i in range(3)]
        assert [line for m, line in lines["stderr"] if m == member] == [f"err {i}" for i in range(3)]


SPIN = ("%%rpyc lab\nimport time\nspins = 0\nwhile True:\n    spins += 1\n    if spins % 1000 == 0:\n"
        "        time.sleep(0.001)\n")


def test_interrupt_stops_every_member(kernel, servers):
    srv = servers(3)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    res = fails(kernel, SPIN, "KeyboardInterrupt", interrupt_after=1.0)
    assert res.evalue == ("interrupted the cell (stopped on the server: lab1, lab2, lab3); "
                          "what finished is in _rpyc_results"), res
    assert res.since_interrupt < 2.0, res
    spins = value(kernel, "[lab[m].namespace['spins'] for m in lab]")
    time.sleep(0.3)
    assert value(kernel, "[lab[m].namespace['spins'] for m in lab]") == spins and min(spins) > 0
    after = ok(kernel, "%%rpyc lab\n6 * 7")
    assert after.result == "lab1  42\nlab2  42\nlab3  42"
    assert all(state_of(kernel, m) == "alive" for m in ("lab1", "lab2", "lab3"))


def test_timeout_applies_per_member(kernel, servers):
    srv = servers(3)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    slow = ("%%rpyc lab --timeout 1\nimport os, time\nif os.getpid() == " + str(srv[1].pid) + ":\n"
            "    for step in range(100):\n        time.sleep(0.05)\nos.getpid()")
    res = fails(kernel, slow, "GroupError")
    assert res.evalue == "1 of 3 members failed the cell: lab2", res
    assert (f"[lab2:execute]:\nRemoteTimeoutError: lab2: no answer from {srv[1].address} within 1 s "
            "(stopped on the server); raise the limit with %%rpyc --timeout") in res.plain_traceback, res
    assert value(kernel, "dict(_rpyc_results)") == {"lab1": srv[0].pid, "lab3": srv[2].pid}
    step = value(kernel, "%%rpyc lab2\nstep")  # lab2's loop was stopped, not left to run to its end
    time.sleep(0.3)
    assert value(kernel, "%%rpyc lab2\nstep") == step < 99
    assert ok(kernel, "%%rpyc lab\n1").result == "lab1  1\nlab2  1\nlab3  1"


def test_a_member_killed_mid_cell_is_reported_and_the_others_finish(kernel, servers):
    port = quiet_port()
    srv = servers(2) + servers(1, port=port)
    ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
    killed = []

    def kill(t: float) -> None:
        if t > 0.7 and not killed:
            srv[2].proc.kill()
            killed.append(t)

    res = fails(kernel, "%%rpyc lab\nimport os, time\ntime.sleep(2)\nos.getpid()", "GroupError", during=kill)
    assert killed and res.evalue == "1 of 3 members failed the cell: lab3", res
    assert f"[lab3:execute]:\nConnectionLostError: the connection 'lab3' to {srv[2].address} is lost" in \
        res.plain_traceback, res
    assert value(kernel, "dict(_rpyc_results)") == {"lab1": srv[0].pid, "lab2": srv[1].pid}
    assert state_of(kernel, "lab3") == "lost"

    srv[2].proc.wait(5)
    again = servers(1, port=port)[0]
    first = value(kernel, "[id(lab[m]) for m in ('lab1', 'lab2')]")
    out = ok(kernel, "%rpyc_reconnect lab").stdout
    assert out == f"Reconnected 1 of the 1 lost members of lab: lab3 {again.address} (pid {again.pid})\n", out
    assert value(kernel, "[id(lab[m]) for m in ('lab1', 'lab2')]") == first  # the others were left alone
    assert ok(kernel, "%%rpyc lab\n__import__('os').getpid()").result.endswith(f"lab3  {again.pid}")
    assert ok(kernel, "%rpyc_reconnect lab").stdout == "All 3 members of lab are connected: nothing to reconnect\n"


# -- discovery on loopback: a TCP registry -----------------------------------------------------------
def test_tcp_discovery_lists_and_connects_the_registered_servers(shell, servers, tcp_registry, capsys):
    srv = servers(3, *tcp_registry.registration)
    expected = sorted(("127.0.0.1", s.port) for s in srv)
    assert wait_until(lambda: tcp_registry.known() == expected, 20), tcp_registry.known()
    where = f"--registry 127.0.0.1:{tcp_registry.port} --tcp"
    found = shell.run_line_magic("rpyc_discover", where)
    rows = repr(found).splitlines()
    assert rows[0].split() == ["host", "port", "answers", "latency"]
    assert [tuple(r.split()[:3]) for r in rows[2:]] == [("127.0.0.1", str(p), "yes") for _, p in expected]
    assert all(re.search(r"\d+\.\d ms$", r) for r in rows[2:])
    assert found.addresses == [f"127.0.0.1:{p}" for _, p in expected]
    assert found._repr_html_().count("<td>yes</td>") == 3

    stopped = srv[1]
    stopped.proc.terminate()  # SIGTERM: it stays registered until the registry prunes it
    stopped.proc.wait(5)
    rows = repr(shell.run_line_magic("rpyc_discover", where)).splitlines()
    assert f"127.0.0.1  {stopped.port}  no: connection refused  -" in rows, rows
    capsys.readouterr()
    shell.run_line_magic("rpyc_connect", f"--discover {where} --group lab")
    out, err = capsys.readouterr()
    assert out.startswith("Connected 2 of 3 members of lab"), out
    member = f"lab{expected.index(('127.0.0.1', stopped.port)) + 1}"  # members are numbered in address order
    assert err == f"{member}: cannot connect to 127.0.0.1:{stopped.port}: connection refused\n"
    by_port = {s.port: s.pid for s in srv}
    assert [conn.modules.os.getpid() for conn in shell.user_ns["lab"].values()] == [
        by_port[p] for _, p in expected if p != stopped.port]


# -- bad input: one clear line each ------------------------------------------------------------------
def test_bad_input_is_one_line_each(kernel: Kernel, servers):
    srv = servers(2)
    silent = Listener()  # a TCP "registry" that never answers
    try:
        udp = free_port()
        cases = [
            ("%%rpyc nosuch\n1", r"no connection or group named 'nosuch' \(open: none\)"),
            ("%rpyc_discover --tcp", r"--tcp needs --registry HOST: a TCP registry is asked at its address"),
            (f"%rpyc_discover --registry 127.0.0.1:{silent.port} --tcp --timeout 1",
             rf"no rpyc registry answered at the TCP registry 127\.0\.0\.1:{silent.port} within 1 s"),
            (f"%rpyc_discover --registry 127.0.0.1:{udp} --timeout 1",
             rf"no rpyc registry answered at the UDP registry 127\.0\.0\.1:{udp} within 1 s"),
            (f"%rpyc_discover --registry 127.0.0.1:{free_port()} --tcp",
             r"the TCP registry 127\.0\.0\.1:\d+ refused the connection: is rpyc_registry --mode TCP running there\?"),
            (f"%rpyc_connect --discover --registry 127.0.0.1:{silent.port} --tcp --group lab",
             r"no rpyc registry answered at the TCP registry 127\.0\.0\.1:\d+ within 2 s"),
            (f"%rpyc_connect {addresses(srv)}", r"2 addresses: add --group NAME to connect them as a group"),
            ("%rpyc_connect --discover", r"--discover connects a group: add --group NAME"),
            ("%rpyc_connect --group lab", r"--group lab: no server to connect to \(give HOST1 HOST2 … or --discover\)"),
            (f"%rpyc_connect {srv[0].address} --group 1lab", r"--group must be a Python identifier, not '1lab'"),
            (f"%rpyc_connect {srv[0].address} --group lab --name x", r"--name names one connection; .*"),
            (f"%rpyc_connect {srv[0].address} --group lab --modules sys", r"--modules and --prefix bind .*"),
            (f"%rpyc_connect {srv[0].address} --registry 127.0.0.1 --group lab",
             r"--registry and --tcp go with --discover"),
            (f"%rpyc_connect a={srv[0].address} a={srv[1].address} --group lab",
             r"--group lab: a member's name is given twice"),
            (f"%rpyc_connect 1a={srv[0].address} --group lab",
             r"1a=.*: a member's name must be a Python identifier, not '1a'"),
            ("%%rpyc --all\n1", r"no rpyc connection is open; open one with %rpyc_connect"),
        ]
        for code, expected in cases:
            line = usage_error(kernel, code, timeout=30)
            assert re.fullmatch("UsageError: " + expected, line), (code, line)
        ok(kernel, f"%rpyc_connect {addresses(srv)} --group lab")
        for code, expected in [
            ("%%rpyc lab,,lab1\n1", r"'lab,,lab1': an empty name between commas"),
            ("%%rpyc --all lab\n1", r"give a connection, a group, a,b,c or --all, not two of them"),
            ("%%rpyc lab --push nothing_here\n1", r"--push nothing_here: no such variable here"),
            ("%%rpyc lab1,nosuch\n1", r"no connection or group named 'nosuch' \(open: lab, lab1, lab2\)"),
        ]:
            line = usage_error(kernel, code)
            assert re.fullmatch("UsageError: " + expected, line), (code, line)
        ok(kernel, "%rpyc_disconnect lab1\n%rpyc_disconnect lab2")  # the group is now empty
        line = usage_error(kernel, "%%rpyc lab\n1")
        assert line == "UsageError: the group lab has no open member: %rpyc_connect … --group lab --force", line
        assert usage_error(kernel, "%rpyc_reconnect lab").endswith("the group lab has no open member: "
                                                                    "%rpyc_connect … --group lab --force")
        assert value(kernel, "len(lab)") == 0
    finally:
        silent.stop()
