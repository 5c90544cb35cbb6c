"""``%%rpyc_trace`` and ``%rpyc_trace on|off`` in a real kernel, checked against the wire.

The kernel connects to a stock ``rpyc_classic`` through the benchmark's frame-counting
proxy (``ipyrpyc.proxy.DelayProxy``, in this process): what the trace says a cell sent
must be what crossed the wire, request for request.  The in-process part checks the
trace's wrappers themselves: present only while tracing, and stacking with others.
"""

from __future__ import annotations

import ast
import gc
import re
from typing import Iterator, List, Tuple

import pytest
import rpyc

from ipyrpyc.proxy import C2S, S2C, DelayProxy
from ipyrpyc.wire import RequestCounter, Trace, name_request
from tests.support.counting import KERNEL_IMPORT
from tests.support.kernels import Kernel, evaluate, fails, ok, run, shell_request, usage_error
from tests.support.processes import StockServer

TRACED = "get_ipython().magics_manager.registry['TraceMagics'].last"
ROW = re.compile(r"^\s+(\d+)  (\S+)\s{2,}(.+?)\s{2,}")


class Wire:
    """A stock server behind the counting proxy, and a kernel connected through it as ``conn``."""

    def __init__(self) -> None:
        self.server = StockServer()
        self.proxy = DelayProxy(("127.0.0.1", self.server.port))
        self.kernel = Kernel()
        ok(self.kernel, f"%rpyc_connect 127.0.0.1:{self.proxy.port}\n" + KERNEL_IMPORT)

    def quiet(self) -> None:
        """Nothing in flight (a late ``del`` of an earlier cell), nothing counted yet.  What the
        server sent late has crossed the proxy but waits unread in the kernel's socket until the
        kernel next serves the connection: serve it now, or a trace would count it."""
        ok(self.kernel, "import gc; gc.collect()")
        assert self.proxy.quiesce(0.2, 5)
        ok(self.kernel, "conn.poll_all(0)")
        assert self.proxy.quiesce(0.2, 5)
        self.proxy.take()

    def requests(self) -> Tuple[List[tuple], List[tuple]]:
        """What crossed the wire since :meth:`quiet`: (client requests, server requests), as
        (handler, remote type, name) in order."""
        assert self.proxy.quiesce(0.2, 5)
        frames = [f for f in self.proxy.take() if f.kind == "request"]
        parts = [(f.direction, f.request.handler, f.request.type_name, f.request.name) for f in frames]
        return [p[1:] for p in parts if p[0] == C2S], [p[1:] for p in parts if p[0] == S2C]

    def traced(self) -> Tuple[List[tuple], List[tuple]]:
        """What the last trace recorded, in the same form."""
        rows = ast.literal_eval(evaluate(self.kernel, f"[(r.callback, r.request.handler, r.request.type_name, "
                                                      f"r.request.name) for r in {TRACED}.requests]"))
        return [tuple(r[1:]) for r in rows if not r[0]], [tuple(r[1:]) for r in rows if r[0]]

    def stop(self) -> None:
        try:
            self.kernel.shutdown()
        finally:
            self.proxy.stop()
            self.server.stop()


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    w = Wire()
    try:
        yield w
    finally:
        w.stop()


def report(res) -> Tuple[str, str]:
    """(text/plain, text/html) of the trace a cell displayed (its last display_data)."""
    shown = [c["data"] for _, kind, c, _ in res.msgs if kind == "display_data"]
    assert shown, res
    return shown[-1]["text/plain"], shown[-1].get("text/html", "")


def request_rows(text: str) -> List[Tuple[str, str, str]]:
    """(#, connection, request words) of each row of a text report's request table."""
    body = text.split("\nrequests:\n", 1)[1].splitlines()[2:]
    return [m.groups() for m in map(ROW.match, body) if m]


# -- the trace agrees with the wire ---------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("code", [
    "rsys.path",
    "type(rsys.path)",
    "total = 0\nfor x in rsys.path:\n    total += len(x)\ntotal",
    "p = rsys.path\np[0], len(p), 'x' in p, p == ()",
])
def test_the_trace_shows_exactly_the_requests_the_proxy_counts(wire, code):
    wire.quiet()
    res = ok(wire.kernel, "%%rpyc_trace\n" + code)
    sent, called_back = wire.requests()
    traced_sent, traced_back = wire.traced()
    assert traced_sent == sent and traced_back == called_back, (traced_sent, sent)
    assert sent, "the cell made no request at all"
    text, html = report(res)
    rows = request_rows(text)
    assert [int(n) for n, _, _ in rows] == list(range(1, len(sent) + 1))  # every request, one row each
    words = [name_request_words(r) for r in sent]
    assert [w.replace(" (raised)", "") for _, _, w in rows] == words, text
    assert "<table" in html and html.count("<tr>") >= len(sent) + 1


def name_request_words(parts: tuple) -> str:
    """The plain words the trace uses for a request the proxy decoded."""
    from ipyrpyc.wire import RequestName

    return RequestName(*parts).words


def test_rsys_path_costs_one_attribute_and_one_display(wire):
    wire.quiet()
    text, _ = report(ok(wire.kernel, "%%rpyc_trace\nrsys.path"))
    assert text.startswith("rpyc trace: 2 requests in "), text
    assert re.search(r"\n\s+1  conn\s+get attribute\s+module sys\s+path\s+your code\s+\d+\s+\d+\s+[\d.]+\n", text), text
    assert re.search(r"\n\s+2  conn\s+call\s+function\s+ipyrpyc display\s", text), text


@pytest.mark.timeout(180)
def test_a_1000_iteration_loop_is_one_folded_hot_spot_with_a_hint(wire):
    ok(wire.kernel, "big = conn.eval('list(range(1000))')")
    wire.quiet()
    res = ok(wire.kernel, "%%rpyc_trace\ntotal = 0\nfor x in big:\n    total += x\ntotal")
    assert res.results[0]["text/plain"] == "499500"  # the cell's own result, first
    text, html = report(res)
    sent, _ = wire.requests()
    assert len(sent) == 1002 + 1  # __iter__, 1,001 __next__ (the last raises StopIteration), del of the iterator
    assert text.startswith("rpyc trace: 1,002 requests + 1 del in "), text
    spots = [line for line in text.splitlines() if " × " in line]
    assert spots[0].strip().startswith("1,001 × next item `__next__` on list_iterator (conn): "), text
    assert len([s for s in spots if "next item" in s]) == 1
    hint = text.splitlines()[text.splitlines().index(spots[0]) + 1]
    assert "%%rpyc --pull" in hint and "%%rpyc" in hint, hint
    rows = request_rows(text)
    assert len(rows) == 40 and "… 963 more not shown" in text  # capped; the totals count all
    assert "<code>__next__</code>" in html and "1,001 ×" in html


def test_a_loop_of_method_calls_hints_at_moving_it_to_the_server(wire):
    ok(wire.kernel, "acc = conn.eval('[]')")
    wire.quiet()
    text, _ = report(ok(wire.kernel, "%%rpyc_trace\nfor i in range(50):\n    acc.append(i)"))
    lines = text.splitlines()
    spot = [i for i, line in enumerate(lines) if "× get attribute `append` on list (conn)" in line]
    assert spot and lines[spot[0]].strip().startswith("50 ×"), text
    assert "move the loop into %%rpyc" in lines[spot[0] + 1], text


# -- the traced cell is the cell ----------------------------------------------------------------------
def without_cell_numbers(text: str) -> str:
    """Differences between two runs of one cell: its number, the hash in a syntax error's file name."""
    return re.sub(r"\(\d+\.py, line", "(N.py, line", re.sub(r"(Cell In\[|\.cell-)\d+", r"\1N", text))


@pytest.mark.parametrize("code", [
    "rsys.path[300]",
    "1/0",
    "print('out'); import sys; print('err', file=sys.stderr)\nx = 5\nx",
    "%%rpyc\nprint('remote')\n1 + 1",
    "%%rpyc\nraise KeyError('remote')",
    "def f(:",
])
def test_output_and_errors_are_the_cells_own(wire, code):
    plain = run(wire.kernel, code)
    traced = run(wire.kernel, "%%rpyc_trace\n" + code)
    assert (traced.status, traced.ename) == (plain.status, plain.ename)
    assert without_cell_numbers(traced.evalue) == without_cell_numbers(plain.evalue)
    assert without_cell_numbers(traced.plain_traceback) == without_cell_numbers(plain.plain_traceback)
    assert len(traced.errors) == len(plain.errors)
    assert (traced.stdout, traced.stderr) == (plain.stdout, plain.stderr)
    assert traced.results[:-1] == plain.results  # then the trace, one display of its own
    assert report(traced)[0].startswith("rpyc trace: ")


# -- callbacks and ipyrpyc's own traffic -----------------------------------------------------------------
def test_callbacks_and_live_output_are_marked_as_the_servers(wire):
    ok(wire.kernel, 'conn.execute("def apply(f, x):\\n    return f(x)")')
    wire.quiet()
    res = ok(wire.kernel, "%%rpyc_trace\nconn.namespace['apply'](lambda v: v * 3, 14)")
    assert res.results[0]["text/plain"] == "42"
    text, _ = report(res)
    assert re.search(r"\n\s+\d+  conn\s+← call\s+function\s+callback\s", text), text
    _, called_back = wire.requests()
    calls = [r for r in called_back if r[0] != "del"]  # the server lets go of the lambda when it can
    assert [r for r in wire.traced()[1] if r[0] != "del"] == calls and len(calls) == 1
    wire.quiet()
    res = ok(wire.kernel, "%%rpyc_trace\n%%rpyc\nprint('hello from the server')")
    assert res.stdout == "hello from the server\n"
    text, _ = report(res)
    assert re.search(r"\n\s+1  conn\s+call\s+method\s+%%rpyc\s", text), text
    assert "← call" in text and "live output" in text, text
    assert wire.traced()[1] == wire.requests()[1]


def test_line_mode_traces_each_cell_and_ipyrpyc_completion_and_off_leaves_nothing(wire):
    k = wire.kernel
    snapshot = "sorted(k for k in vars(conn) if not k.startswith('__'))"
    before = evaluate(k, snapshot)
    assert "on" not in ok(k, "%rpyc_trace").stdout.split("rpyc tracing is ")[1][:3]
    assert "rpyc tracing on" in ok(k, "%rpyc_trace on").stdout
    try:
        text, _ = report(ok(k, "rsys.version_info[0]"))
        assert "get attribute" in text and "module sys" in text and "version_info" in text
        reply, _ = shell_request(k, "complete", "rsys.pa")
        assert "path" in reply["matches"]
        text, _ = report(ok(k, "x = rsys.maxsize"))
        assert re.search(r"\n\s+1  conn\s+call\s+function\s+ipyrpyc completion\s", text), text
        res = ok(k, "y = 1")  # no request: no report
        assert not [m for m in res.msgs if m[1] == "display_data"]
        res = ok(k, "%%rpyc_trace\nrsys.maxsize")  # one report, from the line mode
        assert len([m for m in res.msgs if m[1] == "display_data"]) == 1
    finally:
        assert "rpyc tracing off" in ok(k, "%rpyc_trace off").stdout
    assert evaluate(k, snapshot) == before  # no wrapper left on the connection
    assert evaluate(k, "type(conn._send).__name__, conn._send.__func__ is type(conn)._send") == "('method', True)"
    res = ok(k, "rsys.version_info[0]")
    assert not [m for m in res.msgs if m[1] == "display_data"]


def test_tracing_off_sends_nothing_more(wire):
    """The same cell costs the same requests before tracing and after it was on and off."""
    code = "p = rsys.path\np[0], len(p)"
    wire.quiet()
    ok(wire.kernel, code)
    before = wire.requests()
    ok(wire.kernel, "%rpyc_trace on")
    ok(wire.kernel, code)
    ok(wire.kernel, "%rpyc_trace off")
    ok(wire.kernel, "%%rpyc_trace\n" + code)
    wire.quiet()
    ok(wire.kernel, code)
    assert wire.requests() == before


# -- choosing connections, and bad input -----------------------------------------------------------------
def test_names_pick_connections_and_conn_is_the_default(wire):
    k = wire.kernel
    ok(k, f"%rpyc_connect 127.0.0.1:{wire.server.port} --name lab --no-inject")
    try:
        text, _ = report(ok(k, "%%rpyc_trace\nlab.modules.sys.maxsize, rsys.maxsize"))
        assert text.startswith("rpyc trace: 1 request in ") and "  lab  " not in text, text  # conn only
        assert "not traced: lab (%%rpyc_trace NAME … names them" in text, text
        text, _ = report(ok(k, "%%rpyc_trace lab conn\nlab.modules.sys.maxsize, rsys.maxsize"))
        assert "\n  lab " in text and "\n  conn " in text, text
        assert "not traced" not in text
        text, _ = report(ok(k, "%%rpyc_trace lab\nrsys.maxsize"))
        assert text.startswith("rpyc trace: no requests on lab"), text
    finally:
        ok(k, "%rpyc_disconnect lab")


@pytest.mark.parametrize("code, message", [
    ("%rpyc_trace maybe", "UsageError: %rpyc_trace takes on or off, not 'maybe'"),
    ("%rpyc_trace on off", "UsageError: %rpyc_trace takes on or off, not 'on off'"),
    ("%%rpyc_trace nosuch\n1", "UsageError: no connection named 'nosuch' (open: conn)"),
    ("%%rpyc_trace on\n1", "UsageError: %%rpyc_trace takes connection names; %rpyc_trace on|off (one %)"),
    ("%%rpyc_trace --rows 3\n1", "UsageError: unrecognized arguments: --rows"),
])
def test_bad_input_is_one_line(wire, code, message):
    assert usage_error(wire.kernel, code).startswith(message)
    assert ok(wire.kernel, "rsys.maxsize > 0").results[0]["text/plain"] == "True"  # connection intact


def test_no_connection_is_one_line():
    k = Kernel()
    try:
        assert usage_error(k, "%%rpyc_trace\n1") == (
            "UsageError: no rpyc connection is open; open one with %rpyc_connect")
        fails(k, "%%rpyc_trace conn\nundefined_name", "UsageError")
    finally:
        k.shutdown()


# -- the API and its wrappers, in this process ---------------------------------------------------------
WRAPPED = ("_send", "_dispatch", "_seq_request_callback", "_dispatch_request")


def test_trace_api_on_a_connection_opened_by_hand(classic_server):
    conn = rpyc.classic.connect(classic_server.host, classic_server.port)
    try:
        before = {n: vars(conn).get(n) for n in WRAPPED}
        big = conn.eval("list(range(30))")
        with Trace(conn) as trace:
            assert all(n in vars(conn) for n in WRAPPED)
            assert sum(big) == 435
            with RequestCounter(conn) as rc:  # a wrapper of someone else's on top of ours
                big[0]
        assert rc.count == 1
        assert {n: vars(conn).get(n) for n in WRAPPED} == before  # nothing of the trace left
        words = [r.words for r in trace.requests]
        assert words[:2] == ["iterate", "next item"] and words.count("next item") == 31
        assert words[-1] == "get item" and trace.totals[classic_server.address].requests == 33
        assert all(r.seconds is not None and r.sent > 0 and r.received > 0 for r in trace.requests
                   if r.request.handler != "del")
        # removed while someone else's wrapper sits on top: ours stays, passing through
        trace = Trace(conn)
        rc = RequestCounter(conn).__enter__()
        trace.close()
        big[1]
        rc.__exit__()
        assert trace.count == 0 and rc.count == 1
        assert not any(n in vars(conn) for n in WRAPPED[1:])
        assert not trace.taps and big[2] == 2  # the _send that stayed passes through
    finally:
        conn.close()


def test_a_trace_keeps_the_first_rows_and_counts_all(classic_server):
    conn = rpyc.classic.connect(classic_server.host, classic_server.port)
    try:
        rsys = conn.modules.sys
        with Trace(conn, keep=10) as trace:
            for _ in range(25):
                assert rsys.maxsize > 0
        assert len(trace.requests) == 10 and trace.count == 25
        assert list(trace.totals.values())[0].requests == 25
        assert [tot.requests for tot in trace.groups.values()] == [25]
    finally:
        conn.close()
    gc.collect()


def test_requests_are_named_as_the_proxy_names_them():
    tup, value, ref = 2, 1, 4  # rpyc's labels: LABEL_TUPLE, LABEL_VALUE, LABEL_REMOTE_REF
    r = name_request(4, (tup, ((ref, ("builtins.list", 1, 2)), (value, "append"))))
    assert (r.handler, r.type_name, r.name, r.detail, r.words, r.on) == (
        "getattr", "builtins.list", "append", "getattr builtins.list.append", "get attribute", "list")
    cmp = name_request(11, (tup, ((ref, ("sys", 1, 2)), (ref, ("builtins.list", 3, 4)), (value, "__eq__"))))
    assert (cmp.words, cmp.on, cmp.detail) == ("compare ==", "module sys", "cmp sys")
    assert name_request(8, (tup, ((ref, ("numpy.ndarray", 1, 2)), (value, "__iadd__")))).words == "operator +="
    assert name_request(8, (tup, ((ref, ("builtins.list", 1, 2)), (value, "__next__")))).words == "next item"
    assert name_request(15, (tup, ((ref, ("builtins.list", 1, 2)), (value, 1)))).words == "delete reference"
    inspect = name_request(16, (tup, ((value, ("numpy.ndarray", 1, 0)),)))
    assert (inspect.words, inspect.on, inspect.detail) == ("inspect type", "numpy.ndarray", "inspect numpy.ndarray")
    assert name_request(99, "garbage").handler == "99"


def test_line_mode_follows_new_connections_and_unloading_takes_everything_back(shell, classic_server, capsys):
    def ours() -> list:
        return [cb for name in ("pre_run_cell", "post_run_cell") for cb in shell.events.callbacks[name]
                if type(getattr(cb, "__self__", None)).__name__ == "TraceMagics"]

    shell.run_line_magic("rpyc_connect", classic_server.address)
    conn = shell.user_ns["conn"]
    before = {n: vars(conn).get(n) for n in WRAPPED}
    shell.run_line_magic("rpyc_trace", "on")
    other = StockServer()
    try:
        shell.run_cell(f"%rpyc_connect {other.address} --name lab --no-inject")
        lab = shell.user_ns["lab"]
        capsys.readouterr()
        shell.run_cell("lab.modules.sys.maxsize, rsys.maxsize")
        out = capsys.readouterr().out
        assert "\n  lab " in out and "\n  conn " in out, out  # the connection opened since is traced too
        assert all(n in vars(lab) for n in WRAPPED)
        assert len(ours()) == 2
        shell.run_line_magic("unload_ext", "ipyrpyc")
        assert ours() == []
        assert {n: vars(conn).get(n) for n in WRAPPED} == before and not any(n in vars(lab) for n in WRAPPED)
    finally:
        shell.run_line_magic("load_ext", "ipyrpyc")  # the fixture unloads it
        other.stop()
