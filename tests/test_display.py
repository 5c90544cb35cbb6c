"""Netref display, completion and inspection in one round trip, counted in real kernels.

Every count is taken inside the kernel: a ``RequestCounter`` wraps the connection's send
path, a cell resets it, the operation runs (a cell, a ``complete_request`` or an
``inspect_request``), and a cell that sends nothing itself reads the count back.
Servers are real (the kernel's embedded server, stock ``rpyc_classic``, a plain
``rpyc.Service``), all on 127.0.0.1.
"""

import ast
import base64
import re
import textwrap
import threading
import time

import pytest

from tests.support.kernels import ANSI, Kernel, ok, run, shell_request, value
from tests.support.counting import KERNEL_IMPORT
from tests.support.processes import StockServer, pid_alive, wait_until

SLEEP = 2.5  # seconds a deliberately slow remote repr / __dir__ blocks the server

# Objects that live on the embedded server; the kernel holds netrefs to them.
SERVER_SETUP = textwrap.dedent(
    r'''
    import time, types
    import numpy as np
    import pandas as pd
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = {"a": 1, "b": [2, 3], "alpha": 3, 5: 6}
    df = pd.DataFrame({"alpha": [1, 2], "beta": [3.5, 4.5], 7: ["x", "y"]})
    arr = np.arange(12).reshape(3, 4)
    fig = plt.figure(figsize=(2, 1.5))
    plt.plot([1, 3, 2])
    big = list(range(1000000))
    ns = types.SimpleNamespace(alpha=1)

    class Huge:
        def _repr_html_(self):
            return "<b>" + "x" * 300000 + "</b>"
        def __repr__(self):
            return "Huge()"

    class Raises:
        def __repr__(self):
            raise ValueError("no repr for you\nsecond line")

    class Sleeps:
        def __repr__(self):
            time.sleep(%(sleep)r)
            return "Sleeps()"

    class Hostile:
        def __repr__(self):
            return "\x1b[2J<script>alert(1)</script>\x07"

    class Tricky:
        """Counts every attribute read that runs code."""
        hits = 0
        data = 1
        @property
        def prop(self):
            Tricky.hits += 1
            return self
        def __getattr__(self, name):
            if name.startswith("_"):  # rpyc itself probes dunder names
                raise AttributeError(name)
            Tricky.hits += 1
            return self

    class SlowDir:
        def __dir__(self):
            time.sleep(%(sleep)r)
            return ["never"]

    huge, raises, sleeps, hostile, tricky, slowdir = Huge(), Raises(), Sleeps(), Hostile(), Tricky(), SlowDir()
    '''
    % {"sleep": SLEEP}
)

KERNEL_SETUP = KERNEL_IMPORT + textwrap.dedent(
    """
    conn.execute(SERVER_SETUP)
    names = "d df arr fig big ns huge raises sleeps hostile tricky slowdir".split()
    d, df, arr, fig, big, ns, huge, raises, sleeps, hostile, tricky, slowdir = [conn.namespace[n] for n in names]
    p, f, b = rsys.path, ros.path.abspath, ros.listdir
    ld = {"a": 1, "b": [2, 3], "alpha": 3, 5: 6}
    import pandas as pd
    ldf = pd.DataFrame({"alpha": [1, 2], "beta": [3.5, 4.5], 7: ["x", "y"]})
    received = []  # sizes of the frames read from the server
    _stream = conn._channel.stream
    _read = _stream.read
    _stream.read = lambda count: (lambda data: (received.append(len(data)), data)[1])(_read(count))
    rc = RequestCounter(conn).__enter__()
    """
)


# -- helpers -----------------------------------------------------------------------------------
def reset(k):
    ok(k, "rc.count = 0; rc.handlers.clear(); received.clear()")


def spent(k):
    """Requests sent since the last reset (``del`` messages excluded); this cell sends none."""
    res = ok(k, "print(rc.count, sum(received), *rc.handlers)")
    count, nbytes, *handlers = res.stdout.split()
    spent.handlers, spent.bytes = handlers, int(nbytes)
    return int(count)


def counted(k, code):
    """(cell result, requests it sent)."""
    reset(k)
    res = ok(k, code)
    return res, spent(k)


def complete(k, code, cursor_pos=None, timeout=10.0):
    return shell_request(k, "complete", code, cursor_pos, timeout)[0]


def inspect_(k, code, detail_level=0, cursor_pos=None):
    content, _ = shell_request(k, "inspect", code, cursor_pos, detail_level=detail_level)
    assert content["status"] == "ok" and content["found"], content
    return content


def plain(content):
    return ANSI.sub("", content["data"]["text/plain"])


def only(res):
    """The data of the one output of a cell."""
    assert len(res.results) == 1, res
    return res.results[0]


def server_repr(k, expr):
    """The server's own ``repr(expr)``, asked for in a separate, uncounted cell."""
    return value(k, f"conn.eval({f'repr({expr})'!r})")


def set_trait(k, trait, val):
    ok(k, f"%config {trait} = {val!r}")


# -- the shared kernel -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rk():
    """One real ipyrpyc kernel, connected to its embedded server, with netrefs to many kinds of objects."""
    k = Kernel()
    server_pid = None
    try:
        ok(k, "%rpyc_connect")
        server_pid = value(k, "conn.eval(\"__import__('os').getpid()\")")
        ok(k, f"SERVER_SETUP = {SERVER_SETUP!r}")
        ok(k, KERNEL_SETUP)
        yield k
    finally:
        k.shutdown()
        if server_pid is not None:
            assert wait_until(lambda: not pid_alive(server_pid), 10), "the embedded server outlived its kernel"


# -- the counter itself ------------------------------------------------------------------------
def test_counting_is_honest(rk):
    """Reading the count sends nothing; a single remote call counts exactly 1."""
    reset(rk)
    assert spent(rk) == 0
    assert spent(rk) == 0  # the reading cell of the line above added nothing
    assert counted(rk, "pass")[1] == 0
    assert counted(rk, "x = conn.eval('6 * 7')")[1] == 1
    assert counted(rk, "rsys.path[0]")[1] == 2  # a getattr and a __getitem__ call


# -- display -----------------------------------------------------------------------------------
KINDS = {  # kind: (variable in the kernel, expression on the server)
    "module": ("rsys", "__import__('sys')"),
    "list": ("p", "__import__('sys').path"),
    "dict": ("d", "d"),
    "function": ("f", "__import__('os').path.abspath"),
    "builtin": ("b", "__import__('os').listdir"),
    "DataFrame": ("df", "df"),
    "ndarray": ("arr", "arr"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_display_costs_one_request_and_shows_the_server_repr(rk, kind):
    name, expr = KINDS[kind]
    expected = server_repr(rk, expr)
    res, n = counted(rk, name)
    assert n == 1, (kind, spent.handlers)
    data = only(res)
    assert data["text/plain"] == expected
    if kind == "DataFrame":
        assert data["text/html"] == value(rk, "conn.eval('df._repr_html_()')")
        assert "<table" in data["text/html"]
    else:
        assert "text/html" not in data
    assert res.stderr == ""
    assert counted(rk, name)[1] == 1  # the second display costs the same


def test_figure_displays_as_png(rk):
    res, n = counted(rk, "fig")
    assert n == 1, spent.handlers
    data = only(res)
    png = base64.b64decode(data["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 500
    assert data["text/plain"] == server_repr(rk, "fig")


def test_huge_list_is_truncated_with_its_true_length(rk):
    true_length = value(rk, "conn.eval('len(repr(big))')")
    start = server_repr(rk, "big[:5000]")[:-1]  # "[0, 1, ... 4999"
    assert true_length > 6_000_000
    res, n = counted(rk, "big")
    assert n == 1
    text = only(res)["text/plain"]
    assert text.startswith(start[:19_000])
    assert text.endswith(f"… [{true_length:,} characters, first 20,000 shown]")
    assert len(text) < 20_100
    assert spent.bytes < 40_000  # the reply on the wire, not the 6.9 MB repr
    set_trait(rk, "RpycMagics.display_max_chars", 100)
    try:
        res, n = counted(rk, "big")
        assert n == 1
        text = only(res)["text/plain"]
        assert text == start[:100] + f"… [{true_length:,} characters, first 100 shown]"
        assert spent.bytes < 2_000
    finally:
        set_trait(rk, "RpycMagics.display_max_chars", 20_000)


def test_html_over_the_byte_limit_is_omitted_with_a_note(rk):
    res, n = counted(rk, "huge")
    assert n == 1
    data = only(res)
    assert "text/html" not in data
    assert data["text/plain"].startswith("Huge()\n")
    assert "text/html not shown: 300,007 bytes, over the 100,000-byte limit" in data["text/plain"]
    assert spent.bytes < 5_000
    set_trait(rk, "RpycMagics.display_max_bytes", 400_000)
    try:
        data = only(counted(rk, "huge")[0])
        assert len(data["text/html"]) == 300_007 and data["text/plain"] == "Huge()"
    finally:
        set_trait(rk, "RpycMagics.display_max_bytes", 100_000)


def test_repr_that_raises_gives_a_short_marker(rk):
    res, n = counted(rk, "raises")
    assert n == 1
    text = only(res)["text/plain"]
    assert "ValueError" in text and "no repr for you" in text
    assert "Traceback" not in text and "\n" not in text and len(text) < 300
    assert res.stderr == ""


def test_repr_that_sleeps_is_cut_off_and_the_connection_survives(rk):
    set_trait(rk, "RpycMagics.display_timeout", 1.0)
    try:
        reset(rk)
        start = time.monotonic()
        res = ok(rk, "sleeps")
        elapsed = time.monotonic() - start
        assert elapsed < 2.3, elapsed  # the repr sleeps 2.5 s
        assert only(res)["text/plain"] == "<netref builtins.Sleeps: no answer within 1 s>"
        assert spent(rk) == 1
        # the server is still in the repr: the next call says so at once, then all is well again
        busy = run(rk, "conn.eval('6 * 7')")
        assert busy.ename == "BusyError" and "a display that ran out of time" in busy.reply["evalue"], busy
        assert wait_until(lambda: run(rk, "conn.eval('6 * 7')").status == "ok", 5)
        assert time.monotonic() - start >= SLEEP - 0.1
        res, n = counted(rk, "p")
        assert n == 1 and only(res)["text/plain"] == server_repr(rk, "__import__('sys').path")
    finally:
        set_trait(rk, "RpycMagics.display_timeout", 5.0)


def test_hostile_repr_is_inert(rk):
    res, n = counted(rk, "hostile")
    assert n == 1
    data = only(res)
    text = data["text/plain"]
    assert "\x1b" not in text and "\x07" not in text
    assert text == "\\x1b[2J<script>alert(1)</script>\\x07"
    assert list(data) == ["text/plain"]


def test_rich_display_off_sends_text_only(rk):
    set_trait(rk, "RpycMagics.rich_display", False)
    try:
        res, n = counted(rk, "df")
        assert n == 1 and list(only(res)) == ["text/plain"]
    finally:
        set_trait(rk, "RpycMagics.rich_display", True)


# -- the tutorial's vocabulary -----------------------------------------------------------------
@pytest.mark.parametrize(
    "expr, shown",
    [
        ("type(rsys)", "<netref class 'builtins.module'>"),
        ("type(p)", "<netref class 'builtins.list'>"),
        ("type(f)", "<netref class 'builtins.function'>"),
        ("type(b)", "<netref class 'builtins.builtin_function_or_method'>"),
    ],
)
def test_netref_classes_display_without_a_request(rk, expr, shown):
    res, n = counted(rk, expr)
    assert n == 0
    assert only(res) == {"text/plain": shown}


def test_type_of_an_attribute_costs_only_the_attribute(rk):
    res, n = counted(rk, "type(rsys.path)")
    assert n == 1 and spent.handlers == ["getattr"]
    assert only(res) == {"text/plain": "<netref class 'builtins.list'>"}


def test_isinstance_and_inspect_predicates(rk):
    assert value(rk, "isinstance(rsys.path, list)") is True
    assert value(rk, "isinstance(p, dict)") is False
    assert value(rk, "import inspect; inspect.isbuiltin(ros.listdir)") is True
    assert value(rk, "inspect.isfunction(ros.path.abspath)") is True
    assert value(rk, "inspect.isbuiltin(ros.path.abspath), inspect.isfunction(ros.listdir)") == (False, False)
    assert value(rk, "inspect.ismodule(rsys)") is True


def test_rpyc_info_shows_the_plumbing(rk):
    type_id, obj_id = value(rk, "conn.eval('(id(type(__import__(\"sys\").path)), id(__import__(\"sys\").path))')")
    res, n = counted(rk, "%rpyc_info rsys.path")
    assert n == 2  # one getattr to evaluate rsys.path, one call for the remote dir()
    out = res.stdout
    assert out.startswith("rsys.path: netref to a remote builtins.list\n")
    assert "____conn__      the connection: conn (embedded server)" in out
    assert f"____id_pack__   ('builtins.list', {type_id}, {obj_id})" in out
    assert "____refcount__" in out
    assert "netref slots    ____conn__, ____id_pack__, ____refcount__" in out
    listing = out.split("names):\n", 1)[1].splitlines()
    assert all(len(line) <= 79 and line.startswith("    '") for line in listing), listing  # wrapped between names
    names = ast.literal_eval("(" + "".join(listing) + ",)")
    assert "append" in names and "__len__" in names
    assert names == tuple(value(rk, "conn.eval('tuple(dir([]))')"))


# -- completion --------------------------------------------------------------------------------
@pytest.mark.parametrize("use_jedi", [True, False])
def test_attribute_completion_on_a_module(rk, use_jedi):
    set_trait(rk, "IPCompleter.use_jedi", use_jedi)
    try:
        module_completion(rk)
    finally:
        set_trait(rk, "IPCompleter.use_jedi", True)


def module_completion(rk):
    reset(rk)
    first = complete(rk, "rsys.pa")
    again = complete(rk, "rsys.pa")
    assert spent(rk) == 1, spent.handlers  # the repeat came from the cache
    assert first["status"] == "ok" and first == again
    assert {"path", "path_hooks", "path_importer_cache"} <= set(first["matches"])
    assert all(m.startswith("pa") for m in first["matches"])
    assert (first["cursor_start"], first["cursor_end"]) == (5, 7)
    # in the middle of a longer cell
    code = "x = 1\ny = rsys.pa + 2"
    reply = complete(rk, code, code.index(" + "))
    assert "path" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (code.index("pa "), code.index(" + "))


@pytest.mark.parametrize(
    "code, expected, start",
    [
        ("rsys.path.app", {"append"}, 10),
        ("p.app", {"append"}, 2),
        ("ros.path.", {"abspath", "join", "dirname"}, 9),
        ("ros.path.ab", {"abspath"}, 9),
        ("df.al", {"align", "all", "alpha"}, 3),
    ],
)
def test_attribute_completion_follows_the_chain(rk, code, expected, start):
    reset(rk)
    reply = complete(rk, code)
    again = complete(rk, code)
    assert spent(rk) == 1, spent.handlers
    assert reply == again
    assert expected <= set(reply["matches"])
    assert (reply["cursor_start"], reply["cursor_end"]) == (start, len(code))


def test_completion_matches_the_local_equivalent(rk):
    """Same names and cursor as for the same object held locally."""
    for remote, local in [("df.al", "ldf.al"), ("d.ke", "ld.ke"), ('d["', 'ld["'), ("d['a", "ld['a"),
                          ('df["', 'ldf["'), ("df['b", "ldf['b")]:
        r, loc = complete(rk, remote), complete(rk, local)
        shift = len(local) - len(remote)
        assert r["matches"] == loc["matches"], (remote, r, loc)
        assert (r["cursor_start"] + shift, r["cursor_end"] + shift) == (loc["cursor_start"], loc["cursor_end"])


@pytest.mark.parametrize(
    "code, expected, start",
    [
        ('d["', ["a", "alpha", "b"], 3),
        ("d['", ["a", "alpha", "b"], 3),
        ("d['a", ["a", "alpha"], 3),
        ('df["', ["alpha", "beta"], 4),
        ("df['be", ["beta"], 4),
    ],
)
def test_key_completion(rk, code, expected, start):
    reset(rk)
    reply = complete(rk, code)
    assert complete(rk, code) == reply
    assert spent(rk) == 1, spent.handlers
    assert reply["matches"] == expected
    assert (reply["cursor_start"], reply["cursor_end"]) == (start, len(code))


def test_completion_cache_is_refreshed_by_the_next_cell(rk):
    reset(rk)
    before = complete(rk, "ns.")
    assert "alpha" in before["matches"] and "beta" not in before["matches"]
    ok(rk, "conn.execute('ns.beta = 2')")
    after = complete(rk, "ns.")
    assert {"alpha", "beta"} <= set(after["matches"])
    assert complete(rk, "ns.") == after
    assert spent(rk) == 3, spent.handlers  # two completions and the execute; the repeat was cached


def test_different_modules_never_share_names(rk):
    reset(rk)
    sys_names = set(complete(rk, "rsys.")["matches"])
    os_names = set(complete(rk, "ros.")["matches"])
    assert spent(rk) == 2
    assert "getrecursionlimit" in sys_names and "listdir" not in sys_names
    assert "listdir" in os_names and "getrecursionlimit" not in os_names
    assert sys_names == set(value(rk, "conn.eval('tuple(n for n in dir(__import__(\"sys\")) if n[0] != \"_\")')"))


@pytest.mark.parametrize("use_jedi", [False, True])
def test_completion_runs_no_remote_code(rk, use_jedi):
    set_trait(rk, "IPCompleter.use_jedi", use_jedi)
    try:
        reset(rk)
        assert {"prop", "data", "hits"} <= set(complete(rk, "tricky.")["matches"])
        assert {"prop"} == set(complete(rk, "tricky.pr")["matches"])
        assert complete(rk, "tricky.prop.")["matches"] == []
        assert complete(rk, "tricky.prop.da")["matches"] == []
        assert complete(rk, "tricky.missing.")["matches"] == []
        assert complete(rk, "tricky.missing.x.")["matches"] == []
        assert "bit_length" in complete(rk, "tricky.data.")["matches"]
        assert spent(rk) == 5, spent.handlers  # one per distinct chain
        assert value(rk, "conn.eval('Tricky.hits')") == 0
    finally:
        set_trait(rk, "IPCompleter.use_jedi", True)


def test_completion_on_a_blocked_server_gives_up_in_time(rk):
    set_trait(rk, "RpycMagics.completion_timeout", 0.5)
    try:
        start = time.monotonic()
        reply = complete(rk, "slowdir.")
        elapsed = time.monotonic() - start
        assert reply["status"] == "ok" and reply["matches"] == []
        assert elapsed < 1.5, elapsed  # __dir__ sleeps 2.5 s
        busy = run(rk, "conn.eval('6 * 7')")  # the server is still in __dir__: said at once
        assert busy.ename == "BusyError" and "a completion that ran out of time" in busy.reply["evalue"], busy
        assert wait_until(lambda: run(rk, "conn.eval('6 * 7')").status == "ok", 5)
        assert time.monotonic() - start >= SLEEP - 0.1
        assert "path" in complete(rk, "rsys.pa")["matches"]
    finally:
        set_trait(rk, "RpycMagics.completion_timeout", 1.0)


# -- inspection --------------------------------------------------------------------------------
def test_inspect_a_list(rk):
    reset(rk)
    content = inspect_(rk, "p")
    assert spent(rk) == 1, spent.handlers
    text = plain(content)
    fields = dict(line.split(":", 1) for line in text.splitlines() if re.match(r"^[A-Z][a-z ]+:", line))
    assert fields["Type"].strip() == "builtins.list (remote, via rpyc)"
    assert fields["String form"].strip() == server_repr(rk, "__import__('sys').path")
    assert fields["Length"].strip() == str(value(rk, "conn.eval(\"len(__import__('sys').path)\")"))
    assert re.search(r"^Docstring:\s*\nBuilt-in mutable sequence\.", text, re.M), text


def test_inspect_a_function(rk):
    reset(rk)
    text = plain(inspect_(rk, "f"))
    assert spent(rk) == 1, spent.handlers
    assert re.search(r"^Signature: +\(path\)$", text, re.M), text
    source_file = value(rk, "conn.eval(\"__import__('inspect').getfile(__import__('os').path.abspath)\")")
    assert re.search(rf"^File: +{re.escape(source_file)} \(on the server\)$", text, re.M), text
    assert re.search(r"^Docstring: +Return an absolute path\.$", text, re.M), text
    assert "Source:" not in text


COMPLETIONS = {  # kind: (code, matches)
    "module": ("rsys.getr", ["getrecursionlimit", "getrefcount"]),
    "list": ("p.app", ["append"]),
    "dict": ("d.ke", ["keys"]),
    "function": ("f.__na", ["__name__"]),
    "builtin": ("b.__qual", ["__qualname__"]),
    "DataFrame": ("df.al", ["align", "all", "alpha"]),
    "ndarray": ("arr.resh", ["reshape"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_completes_and_inspects_in_one_request(rk, kind):
    name = KINDS[kind][0]
    code, matches = COMPLETIONS[kind]
    reset(rk)
    reply = complete(rk, code)
    assert spent(rk) == 1, (kind, spent.handlers)
    assert reply["matches"] == matches
    reset(rk)
    for detail in (0, 1):
        text = plain(inspect_(rk, name, detail))
        assert text.startswith("Type:") and "(remote, via rpyc)" in text
    assert spent(rk) == 2, (kind, spent.handlers)


def test_inspect_shows_the_source_of_a_function_from_a_file(rk, tmp_path):
    (tmp_path / "ipyrpyc_probe_mod.py").write_text(
        "def probe(x, y=2):\n    '''Add y to x.'''\n    return x + y  # the probe's own line\n"
    )
    ok(rk, f"rsys.path.insert(0, {str(tmp_path)!r}); pf = conn.modules['ipyrpyc_probe_mod'].probe")
    try:
        reset(rk)
        brief = plain(inspect_(rk, "pf", 0))
        full = plain(inspect_(rk, "pf", 1))
        assert spent(rk) == 2, spent.handlers
        assert re.search(r"^Signature: +\(x, y=2\)$", brief, re.M)
        assert "Source:" not in brief and "Add y to x." in brief
        assert re.search(r"^Source:\s*\ndef probe\(x, y=2\):\n", full, re.M), full
        assert "return x + y  # the probe's own line" in full
        assert str(tmp_path / "ipyrpyc_probe_mod.py") in full
    finally:
        ok(rk, f"rsys.path.remove({str(tmp_path)!r})")


# -- netrefs inside local things ---------------------------------------------------------------
def test_local_list_of_netrefs_costs_one_request_each(rk):
    res, n = counted(rk, "[p, ros]")
    assert n == 2, spent.handlers
    text = only(res)["text/plain"]
    assert server_repr(rk, "__import__('sys').path") in text
    assert server_repr(rk, "__import__('os')") in text
    assert text.startswith("[[") and text.endswith(">]")


def test_closed_connection_shows_a_marker(rk):
    server = StockServer()
    try:
        ok(rk, f"%rpyc_connect {server.address} --name c2 --no-inject")
        ok(rk, "x2 = c2.modules.sys.path; m2 = c2.modules.os; rc2 = RequestCounter(c2).__enter__()")
        ok(rk, "%rpyc_disconnect c2")
        ok(rk, "rc2.count = 0")
        for code, marker in [("x2", "<netref builtins.list: connection closed>"),
                             ("m2", "<netref os: connection closed>")]:
            res, n = counted(rk, code)
            assert n == 0 and value(rk, "rc2.count") == 0
            assert only(res) == {"text/plain": marker}
            assert res.stderr == ""
        res, n = counted(rk, "[x2, 1]")
        assert n == 0 and only(res)["text/plain"] == "[<netref builtins.list: connection closed>, 1]"
    finally:
        server.stop()


# -- zero cost elsewhere -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "code",
    ["42", "[1, 2, 3]", "{'a': [1, 2], 'b': 'text'}", "ld", "ldf", "y = 5", "print('hello')", "import math; math.pi"],
)
def test_local_objects_cost_nothing(rk, code):
    res, n = counted(rk, code)
    assert n == 0, spent.handlers


# -- unloading ---------------------------------------------------------------------------------
def test_unload_restores_every_hook(shell):
    from IPython.lib import pretty

    def hooks():
        return {
            "format": shell.display_formatter.format,
            "complete": shell.Completer._complete,
            "get_info": shell.inspector._get_info,
            "checkers": [(c, c.check) for c in shell.prefilter_manager.checkers],
            "showtraceback": vars(shell).get("showtraceback"),  # wrapped on the instance while loaded
        }

    def same(a, b):
        return getattr(a, "__func__", a) is getattr(b, "__func__", b) and getattr(a, "__self__", None) is getattr(
            b, "__self__", None
        )

    shell.run_line_magic("unload_ext", "ipyrpyc")
    original, original_pretty = hooks(), pretty.RepresentationPrinter.pretty
    shell.run_line_magic("load_ext", "ipyrpyc")
    loaded = hooks()
    # the prefilter guard: one checker of ours, before the two that would probe a netref's class
    added = [c for c, _ in loaded["checkers"] if not any(c is o for o, _ in original["checkers"])]
    assert [type(c).__name__ for c in added] == ["NetrefChecker"], added
    order = [type(c).__name__ for c, _ in loaded["checkers"]]
    assert order.index("NetrefChecker") < min(order.index("MacroChecker"), order.index("IPyAutocallChecker")), order
    others = [(c, check) for c, check in loaded["checkers"] if c is not added[0]]
    assert len(others) == len(original["checkers"])
    assert all(a is b and same(ca, cb) for (a, ca), (b, cb) in zip(others, original["checkers"]))
    assert not same(loaded["format"], original["format"])
    assert not same(loaded["complete"], original["complete"])
    assert not same(loaded["get_info"], original["get_info"])
    assert loaded["showtraceback"] is not original["showtraceback"]
    assert pretty.RepresentationPrinter.pretty is not original_pretty
    shell.run_line_magic("unload_ext", "ipyrpyc")
    restored = hooks()
    assert same(restored["format"], original["format"])
    assert same(restored["complete"], original["complete"])
    assert same(restored["get_info"], original["get_info"])
    assert restored["showtraceback"] is original["showtraceback"]
    assert len(restored["checkers"]) == len(original["checkers"])
    assert all(a is b and same(ca, cb) for (a, ca), (b, cb) in zip(restored["checkers"], original["checkers"]))
    assert pretty.RepresentationPrinter.pretty is original_pretty
    for obj, name in [(shell.display_formatter, "format"), (shell.Completer, "_complete"),
                      (shell.inspector, "_get_info")]:
        assert name not in vars(obj)
    shell.run_line_magic("load_ext", "ipyrpyc")  # the fixture unloads it


# -- servers without the helper ----------------------------------------------------------------
def test_plain_rpyc_service_falls_back_to_rpyc_repr(rk):
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class Thing:
        def __repr__(self):
            return "Thing(" + "t" * 50_000 + ")"

    class Service(rpyc.Service):
        exposed_thing = Thing()

    server = ThreadedServer(Service, hostname="127.0.0.1", port=0,
                            protocol_config={"allow_public_attrs": True})
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.active, 10)
        ok(rk, f"import rpyc; c3 = rpyc.connect('127.0.0.1', {server.port}); t3 = c3.root.thing")
        ok(rk, "rc3 = RequestCounter(c3).__enter__()")
        res = ok(rk, "t3")
        text = only(res)["text/plain"]
        assert text == "Thing(" + "t" * 19_994 + "… [50,007 characters, first 20,000 shown]"
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and res.stderr.endswith("\n"), res.stderr
        assert lines[0].startswith("ipyrpyc: ") and "cannot run ipyrpyc's helper" in lines[0]
        assert f"127.0.0.1:{server.port}" in lines[0]
        ok(rk, "rc3.count = 0")
        res = ok(rk, "t3")
        assert res.stderr == "" and only(res)["text/plain"] == text
        assert value(rk, "rc3.count") == 1  # rpyc's own repr request
        assert complete(rk, "t3.")["matches"] == []
        content = inspect_(rk, "t3")
        assert "cannot run ipyrpyc's helper" in plain(content)
        ok(rk, "c3.close()")
    finally:
        server.close()
        thread.join(10)
        assert not thread.is_alive()


# -- against plain rpyc ------------------------------------------------------------------------
PLAIN_SETUP = textwrap.dedent(
    """
    import rpyc
    conn = rpyc.classic.connect("127.0.0.1", %d)
    conn.execute("import pandas as pd; df = pd.DataFrame({'alpha': [1, 2], 'beta': [3.5, 4.5]})")
    rsys, ros = conn.modules.sys, conn.modules.os
    p, f, df = rsys.path, ros.path.abspath, conn.namespace["df"]
    received = []
    rc = RequestCounter(conn).__enter__()
    """
)

OURS_SETUP = "\n".join(line for line in PLAIN_SETUP.splitlines()
                       if "classic.connect" not in line and "rsys, ros =" not in line)


def measure(k):
    """Requests for displaying, completing and inspecting netrefs of several kinds."""
    out = {}
    for name in ("p", "f", "df", "rsys"):
        reset(k)
        run(k, name)  # plain rpyc fails to display a DataFrame netref at all
        out[f"display {name}"] = spent(k)
    for code in ("p.app", "rsys.pa", "df.al"):
        reset(k)
        complete(k, code, timeout=60)
        out[f"complete {code}"] = spent(k)
    for name in ("p", "f", "df"):
        reset(k)
        inspect_(k, name)
        out[f"inspect {name}"] = spent(k)
    return out


def test_ipyrpyc_costs_less_than_plain_rpyc():
    server = StockServer()
    kernels = []
    try:
        plain_kernel = Kernel(kernel_name="python3")
        kernels.append(plain_kernel)
        ok(plain_kernel, KERNEL_IMPORT)
        ok(plain_kernel, PLAIN_SETUP % server.port)
        ours = Kernel()
        kernels.append(ours)
        ok(ours, f"%rpyc_connect {server.address}")
        ok(ours, KERNEL_IMPORT)
        ok(ours, OURS_SETUP)
        before, after = measure(plain_kernel), measure(ours)
        print("plain rpyc:", before)
        print("ipyrpyc:   ", after)
        for what, n in after.items():
            assert n == 1, (what, after)
            assert before[what] > n, (what, before)
    finally:
        for k in kernels:
            k.shutdown()
        server.stop()
