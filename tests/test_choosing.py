"""With several connections open, the magics pick the one the user means; ``%rpyc_who``.

One real kernel with three connections, as a user would have them: ``conn`` (the embedded
server), ``lab`` and ``slow`` (stock ``rpyc_classic`` servers on loopback).  Only a truly
ambiguous case asks for a name, in one line that lists the names.
"""

from __future__ import annotations

import re
import sys
from typing import Iterator

import pytest

from tests.support.counting import KERNEL_IMPORT
from tests.support.kernels import Kernel, evaluate, fails, ok, run, usage_error
from tests.support.processes import StockServer


class Three:
    def __init__(self) -> None:
        self.lab = StockServer()
        self.slow = StockServer()
        self.kernel = Kernel()
        ok(self.kernel, "%rpyc_connect\n" + KERNEL_IMPORT)
        for name, server in (("lab", self.lab), ("slow", self.slow)):
            ok(self.kernel, f"%rpyc_connect {server.address} --name {name} --no-inject")

    def stop(self) -> None:
        try:
            self.kernel.shutdown()
        finally:
            self.lab.stop()
            self.slow.stop()


@pytest.fixture(scope="module")
def three() -> Iterator[Three]:
    t = Three()
    try:
        yield t
    finally:
        t.stop()


# -- %rpyc_debug --------------------------------------------------------------------------------------
BOOM = 'execute("def boom(x):\\n    y = x * 2\\n    raise ValueError(y)")'


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["lab", "conn", "slow"])
def test_debug_without_a_name_debugs_the_connection_that_raised(three, name):
    k = three.kernel
    ok(k, f"{name}.{BOOM}")
    fails(k, f"{name}.namespace['boom'](21)", "ValueError")
    res = run(k, "%rpyc_debug", answers=["p y, __import__('os').getpid()", "q"])
    assert res.status == "ok", res
    pid = evaluate(k, f"{name}.modules.os.getpid()")
    assert f"(42, {pid})" in res.stdout, res


def test_debug_without_a_name_after_a_local_error_asks_which(three):
    fails(three.kernel, "1 / 0", "ZeroDivisionError")
    assert usage_error(three.kernel, "%rpyc_debug") == (
        "UsageError: several connections are open (conn, lab, slow): name one")


# -- %rpyc_reconnect ----------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_reconnect_without_a_name_takes_the_one_busy_or_lost(three):
    k = three.kernel
    assert usage_error(k, "%rpyc_reconnect") == (
        "UsageError: several connections are open (conn, lab, slow) and none is lost or busy: name one")
    res = fails(k, "%%rpyc slow --timeout 0.5\nimport time\ntime.sleep(3)", "RemoteTimeoutError")
    assert "still running on the server" in res.evalue
    assert ok(k, "%rpyc_reconnect").stdout.startswith(f"Reconnected slow to {three.slow.address}")
    assert evaluate(k, "slow.eval('6 * 7')") == "42"
    three.lab.stop()
    line = usage_error(k, "%rpyc_reconnect")  # lab is lost, and its server gone: the attempt says so
    assert line.startswith(f"UsageError: lab: cannot connect to {three.lab.address}"), line
    three.lab = StockServer(port=three.lab.port)
    assert ok(k, "%rpyc_reconnect").stdout.startswith(f"Reconnected lab to {three.lab.address}")


# -- %rpyc_who ------------------------------------------------------------------------------------------
def who_display(res) -> dict:
    assert res.status == "ok" and len(res.results) == 1, res
    return res.results[0]


@pytest.mark.timeout(120)
def test_who_is_one_round_trip_within_its_caps_whatever_the_namespace_holds(three):
    k = three.kernel
    ok(k, "%%rpyc conn\nfor i in range(10_000):\n    globals()['v%05d' % i] = i\nbig = b'\\0' * 100_000_000\n"
          "text = 'hello'\nimport numpy as np\narr = np.zeros((1000, 3))")
    ok(k, "rc = RequestCounter(conn).__enter__()")
    try:
        data = who_display(ok(k, "%rpyc_who"))
        assert evaluate(k, "rc.count") == "1"
    finally:
        ok(k, "rc.__exit__()")
    text, html = data["text/plain"], data["text/html"]
    n = int(evaluate(k, "conn.eval('len([n for n in globals() if not n.startswith(\"_\")])')"))
    assert n > 10_000 and text.startswith(f"conn (embedded server): {n:,} of {n:,} names\n"), text[:200]
    rows = text.splitlines()[4:-1]
    assert len(rows) == 100 and text.splitlines()[-1] == f"… {n - 100:,} more not shown (RpycMagics.who_max_rows = 100)"
    assert re.match(r"arr\s+numpy\.ndarray\s+shape \(1000, 3\), float64, 23\.4 KB$", rows[0]), rows[0]
    assert re.match(r"big\s+builtins\.bytes\s+len 100,000,000, 95\.4 MB: b'\\x00", rows[1]), rows[1]
    assert len(text) < 20_000 and len(html) < 30_000  # well inside display_max_bytes (100,000)
    assert html.count("<tr>") == 101
    data = who_display(ok(k, "%rpyc_who t*"))
    assert data["text/plain"].splitlines()[0] == f"conn (embedded server): 1 of {n:,} names matching 't*'"
    assert f"len 5, {sys.getsizeof('hello')} bytes: 'hello'" in data["text/plain"]  # the server's Python is ours


def test_who_names_and_patterns(three):
    k = three.kernel
    ok(k, "%%rpyc lab\nlab_value = 1")
    assert who_display(ok(k, "%rpyc_who lab")).get("text/plain").startswith(f"lab ({three.lab.address}): ")
    assert "lab_value" in who_display(ok(k, "%rpyc_who lab lab_*"))["text/plain"]
    assert "lab_value" not in who_display(ok(k, "%rpyc_who"))["text/plain"][:500]  # conn by default
    assert ok(k, "%rpyc_who slow").stdout.startswith("slow (")  # nothing there yet: one line
    assert "the server namespace is empty" in ok(k, "%rpyc_who slow").stdout


@pytest.mark.parametrize("line, start, end", [
    ("%rpyc_who zz*", "UsageError: no name in conn's server namespace matches 'zz*' (of ", " names)"),
    ("%rpyc_who labb", "UsageError: no name in conn's server namespace matches 'labb' (of ",
     " names); no connection is named 'labb' either (open: conn, lab, slow)"),
    ("%rpyc_who nosuch x*", "UsageError: no connection named 'nosuch' (open: conn, lab, slow)", ""),
    ("%rpyc_who a b c", "UsageError: %rpyc_who takes a connection name and a pattern, not 3 words", ""),
    ("%rpyc_who lab zz", "UsageError: no name in lab's server namespace matches 'zz' (of ", " names)"),
])
def test_who_bad_input_is_one_line(three, line, start, end):
    said = usage_error(three.kernel, line)
    assert said.startswith(start) and said.endswith(end), said


def test_who_and_trace_need_a_name_only_when_conn_is_missing(three):
    k = three.kernel
    ok(k, "%rpyc_disconnect conn")
    try:
        assert usage_error(k, "%rpyc_who") == "UsageError: several connections are open (lab, slow): name one"
        shown = [c["data"]["text/plain"] for _, kind, c, _ in
                 ok(k, "%%rpyc_trace\nlab.modules.sys.maxsize").msgs if kind == "display_data"]
        assert "\n  lab " in shown[0] and "\n  slow " in shown[0]  # no conn: every open connection
    finally:
        ok(k, "%rpyc_connect\n" + KERNEL_IMPORT)
