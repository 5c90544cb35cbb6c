"""The server program (``ipyrpyc.remote``) as ordinary modules, tested in this process.

No server process: the pure functions are called directly, and what needs an rpyc
connection being served gets one over a socket pair, with rpyc's ``SlaveService``
(what a stock ``rpyc_classic`` serves) on a thread of this process.
"""

from __future__ import annotations

import glob
import io
import linecache
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rpyc

from ipyrpyc import remote
from ipyrpyc.helper import OutputSink, RemoteHelper
from ipyrpyc.remote import codec, objects, output, running, serving

REMOTE_DIR = Path(remote.__file__).parent


def pyenv_python(version: str) -> str:
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")))
    assert found, f"no CPython {version} under pyenv: the server program must be checked on it"
    return found[-1]


def test_every_server_module_is_valid_python_3_8():
    """rpyc runs on Python 3.8; the program is compiled by that interpreter, not just linted."""
    sources = {name: text for name, text in remote.sources()}
    assert set(sources) == set(remote.MODULES)
    script = "import sys\nfor p in sys.argv[1:]:\n    compile(open(p).read(), p, 'exec')\nprint('ok')"
    files = [str(REMOTE_DIR / f"{name}.py") for name in remote.MODULES]
    out = subprocess.run([pyenv_python("3.8"), "-c", script, *files], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_server_modules_import_nothing_of_ours():
    """On the server they are exec'd from source: an import of ipyrpyc would fail there."""
    for name, source in remote.sources():
        assert "ipyrpyc" not in "".join(
            line for line in source.splitlines() if line.lstrip().startswith(("import ", "from "))), name


# -- objects --------------------------------------------------------------------------------------
class Rich:
    def __repr__(self):
        return "R" * 50

    def _repr_html_(self):
        return "<b>rich</b>"

    def _repr_png_(self):
        return b"\x89PNG" + b"x" * 5000


class Raises:
    def __repr__(self):
        raise ValueError("no repr\nat all")


class Anything:
    """Answers every attribute, as IPython's canary check expects some objects to do."""

    def __getattr__(self, name):
        return lambda *a: "<i>fake</i>"


def test_display_cuts_text_and_data_and_reports_true_sizes():
    kind, items = objects.display(Rich(), 10, 100, True)
    assert kind == f"{__name__}.Rich"
    assert items[0] == ("text/plain", "R" * 10, 50, None)
    assert ("text/html", "<b>rich</b>", 11, None) in items
    png = [i for i in items if i[0] == "image/png"][0]
    assert png[1] is None and png[2] == 5004  # over the limit: only its true size travels


def test_display_reports_a_raising_repr_and_ignores_objects_that_answer_everything():
    assert objects.display(Raises(), 10, 10, True)[1] == (("text/plain", None, 0, "ValueError: no repr at all"),)
    items = objects.display(Anything(), 100, 100, True)[1]
    assert [i[0] for i in items] == ["text/plain"]


class Tricky:
    hits = 0

    @property
    def prop(self):
        Tricky.hits += 1
        return 1

    data = 7

    def __getattr__(self, name):
        Tricky.hits += 1
        return name


def test_complete_follows_attributes_without_running_anything():
    t = Tricky()
    _, names, keys = objects.complete(t, (), 100)
    assert {"prop", "data"} <= set(names) and keys == ()
    assert objects.complete(t, ("prop",), 100) == (None, (), ())
    assert objects.complete(t, ("missing",), 100) == (None, (), ())
    assert "bit_length" in objects.complete(t, ("data",), 100)[1]
    assert objects.complete({"alpha": 1, 2: 3}, (), 100)[2] == ("alpha",)
    assert Tricky.hits == 0


def documented(a, b=2):
    """Adds."""
    return a + b


def test_describe_and_lookup():
    fields = dict(objects.describe(documented, 1, 1000))
    assert fields["type"] == "builtins.function" and fields["signature"] == "(a, b=2)"
    assert fields["docstring"] == "Adds." and "return a + b" in fields["source"]
    assert "source" not in dict(objects.describe(documented, 0, 1000))
    found, obj, fields = objects.lookup(os, ("path", "abspath"), 1000)
    assert found and obj is os.path.abspath and dict(fields)["type"] == "builtins.function"
    found, obj, fields = objects.lookup(Tricky(), ("prop",), 1000)  # a property is shown, not run
    assert found and isinstance(obj, property) and Tricky.hits == 0
    assert objects.lookup(os, ("nope",), 10) == (False, None, ())


class Watched:
    """Counts every use of its own code: %rpyc_who must not run any of it."""

    calls = 0

    def __repr__(self):
        Watched.calls += 1
        return "W"

    def __len__(self):
        Watched.calls += 1
        return 1

    @property
    def __class__(self):
        Watched.calls += 1
        return int

    def __getattr__(self, name):
        Watched.calls += 1
        raise AttributeError(name)


def test_who_summarises_cheaply_hides_underscores_and_matches_globs():
    np = pytest.importorskip("numpy")
    ns = {"n": 42, "text": "hello", "items": [1, 2, 3], "arr": np.zeros((10, 3)), "mod": os, "f": documented,
          "w": Watched(), "_hidden": 1, "__builtins__": {}, 7: "not a name"}
    names, matching, rows = objects.who(ns, None, 100, 60)
    assert (names, matching) == (7, 7) and [r[0] for r in rows] == sorted(r[0] for r in rows)
    table = {name: (kind, summary) for name, kind, summary in rows}
    assert table["n"] == ("builtins.int", "42")
    assert table["text"] == ("builtins.str", f"len 5, {sys.getsizeof('hello')} bytes: 'hello'")
    assert table["items"] == ("builtins.list", "len 3")
    assert table["arr"] == ("numpy.ndarray", "shape (10, 3), float64, 240 bytes")
    assert table["mod"] == ("builtins.module", "os") and table["f"] == ("builtins.function", "documented")
    assert table["w"] == (f"{__name__}.Watched", "") and Watched.calls == 0
    assert objects.who(ns, "_*", 100, 60)[1:] == (2, (("__builtins__", "builtins.dict", "len 0"),
                                                      ("_hidden", "builtins.int", "1")))
    assert objects.who(ns, "[at]*", 100, 60)[1] == 2 and objects.who(ns, "zz*", 100, 60) == (7, 0, ())


def test_who_stays_within_its_caps_for_10000_names_and_a_100_mb_object():
    ns = {f"name_{i:05d}": i for i in range(10_000)}
    ns["big"] = b"\0" * 100_000_000
    ns["long_" + "x" * 500] = "y" * 1000
    names, matching, rows = objects.who(ns, None, 100, 80)
    assert (names, matching, len(rows)) == (10_002, 10_002, 100)
    assert rows[0][:2] == ("big", "builtins.bytes") and len(rows[0][2]) == 80
    assert rows[0][2].startswith("len 100,000,000, 95.4 MB: b'\\x00\\x00") and rows[0][2].endswith("…")
    assert all(len(text) <= 80 for row in rows for text in row)
    assert len(repr(rows)) < 20_000  # what travels back, whatever the namespace holds
    assert objects.who(ns, "long_*", 100, 80)[2][0][0] == "long_" + "x" * 74 + "…"


# -- codec ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 1, 2.5, 3j, "s", b"b", True, [1, (2, {3: "x"})], {"a": [frozenset({1})]},
                                   {1, 2}, (), []])
def test_codec_round_trips_plain_data(value):
    assert codec.rebuild(codec.export(value)) == value


def test_codec_round_trips_numeric_arrays_and_refuses_object_arrays_both_ways():
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    b = codec.rebuild(codec.export(a))
    assert b.dtype == a.dtype and (b == a).all() and b.flags.writeable
    with pytest.raises(TypeError, match="not plain data"):
        codec.export(np.array([object()]))
    forged = ("ndarray", "|O", (1,), b"\0" * 8)  # what a hostile peer could send
    with pytest.raises(TypeError, match="not plain data"):
        codec.rebuild(forged)
    with pytest.raises(TypeError, match="decimal.Decimal is not plain data"):
        codec.export([__import__("decimal").Decimal(1)])


# -- running --------------------------------------------------------------------------------------
def test_runner_keeps_source_lines_until_forgotten():
    r = running.Runner()
    ns: dict = {}
    assert r.run_cell("x = 6\nx * 7", "<t.cell-1>", ns) == (True, 42)
    assert r.run_cell("y = 1", "<t.cell-2>", ns) == (False, None)
    with pytest.raises(ZeroDivisionError) as info:
        r.execute("1 / 0", "<t.execute-1>", ns)
    assert linecache.getline("<t.execute-1>", 1) == "1 / 0"
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_filename == "<t.execute-1>"
    r.forget()
    assert not any(k.startswith("<t.") for k in linecache.cache)


def test_runner_calls_a_function_it_defines_or_finds():
    r = running.Runner()
    ns: dict = {}
    source = "def f(x, k=1):\n    return x * k\n"
    assert r.call(source, "<t.apply-1>", "f", ns, (3,), {"k": 2}, None) == 6
    assert r.call(None, "<t.apply-2>", "f", ns, (), {"k": 10}, (1, 2, 3)) == (10, 20, 30)  # defined before
    assert r.call(None, "<t.apply-3>", "len", ns, ("abc",), {}, None) == 3  # a builtin
    assert r.call(None, "<t.apply-4>", "os.path.basename", {"os": os}, ("/a/b",), {}, None) == "b"
    with pytest.raises(NameError):
        r.call(None, "<t.apply-5>", "nothing_here", ns, (), {}, None)
    assert linecache.getline("<t.apply-1>", 2) == "    return x * k\n"
    r.forget()


# -- output ---------------------------------------------------------------------------------------
def test_router_routes_only_registered_threads_and_leaves_the_streams_as_they_were():
    state = serving.shared_state(create=False) or type("S", (), {})()
    state.lock, state.routes, state.routers = threading.RLock(), {}, {}
    served = serving.Served(None)
    before = sys.stdout, sys.stderr
    got = []
    try:
        output.route(state, served, lambda name, text: got.append((name, text)))
        assert isinstance(sys.stdout, output.Router)
        print("mine")
        other = io.StringIO()
        sys.stdout.original, saved = other, sys.stdout.original
        t = threading.Thread(target=lambda: print("theirs"))
        t.start()
        t.join()
        sys.stdout.original = saved
        assert got == [("stdout", "mine"), ("stdout", "\n")] and other.getvalue() == "theirs\n"
    finally:
        output.unroute(state, served)
    assert (sys.stdout, sys.stderr) == before


# -- on a served connection -------------------------------------------------------------------------
def test_started_program_leaves_nothing_once_its_connection_closes(pair):
    helper, modules = RemoteHelper.install(pair, ["os", "no_such_module"])
    assert modules["os"].getpid() == os.getpid()
    assert modules["no_such_module"].startswith("ModuleNotFoundError")
    assert serving.SHARED in sys.modules and helper.connection_id in sys.modules[serving.SHARED].connections
    assert helper.route(OutputSink().write) == 1 and type(sys.stdout).__name__ == "Router"
    helper.execute("z = 1", "<pair.execute-1>", pair.namespace)
    assert "__ipyrpyc_build__" not in pair.namespace and set(pair.eval("list(globals())")) <= {"z", "__builtins__"}
    pair.close()
    assert wait(lambda: serving.SHARED not in sys.modules)
    assert type(sys.stdout).__name__ != "Router" and "<pair.execute-1>" not in linecache.cache


def test_failed_requests_carry_no_frame_of_ours_and_are_kept_for_the_debugger(pair):
    helper, _ = RemoteHelper.install(pair)
    with pytest.raises(ZeroDivisionError) as info:
        helper.execute("def f():\n    return 1 / 0\nf()", "<pair.execute-1>", pair.namespace)
    text = info.value._remote_tb
    assert '"<pair.execute-1>", line 2, in f' in text and "ipyrpyc" not in text, text
    said = []
    answers = iter(["p 6 * 7", "q"])
    assert helper.debug(lambda prompt: next(answers) + "\n", said.append) == "ZeroDivisionError: division by zero"
    assert "42" in "".join(said)


def test_who_is_one_call_of_the_helper_on_the_connections_namespace(pair):
    helper, _ = RemoteHelper.install(pair)
    pair.execute("import sys\nvalues = list(range(5))\nlabel = 'hi'")
    names, matching, rows = helper.who(pair.namespace, "[lv]*", 10, 80, 5.0)
    assert (names, matching) == (3, 2)
    label = ("label", "builtins.str", f"len 2, {sys.getsizeof('hi')} bytes: 'hi'")
    assert rows == (label, ("values", "builtins.list", "len 5"))


def test_an_interrupt_stops_a_running_request_and_the_connection_answers_after(pair):
    helper, _ = RemoteHelper.install(pair)
    result = rpyc.async_(pair.eval)("[0 for _ in iter(int, 1)]")  # runs until interrupted
    assert wait(lambda: serving.interrupt(helper.connection_id) == 1)
    with pytest.raises(KeyboardInterrupt):
        _ = result.value
    assert pair.eval("6 * 7") == 42


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_starting_with_modules_and_live_output_costs_two_requests_and_no_inspect(pair):
    """The first request describes the modules' netref classes (what rpyc's inspect request would
    answer), the second starts the program with the sink in place: no request per module."""
    from ipyrpyc.wire import RequestCounter

    said = []
    with RequestCounter(pair) as rc:
        helper, modules = RemoteHelper.install(pair, ["os", "sys", "no_such_module"],
                                               lambda name, text: said.append((name, text)))
    assert rc.handlers == ["call", "call"], rc.handlers
    assert modules["no_such_module"].startswith("ModuleNotFoundError")
    # the classes are the ones rpyc builds from its own inspect request
    id_pack = object.__getattribute__(modules["os"], "____id_pack__")
    inspected = dict(pair.sync_request(rpyc.core.consts.HANDLE_INSPECT, id_pack))
    assert inspected and set(inspected) <= set(vars(type(modules["os"])))
    assert modules["os"].getpid() == os.getpid() and modules["sys"].maxsize == sys.maxsize
    # live output is routed from the start: a print made while serving this connection comes here
    helper.execute("print('hello')", "<pair.execute-1>", pair.namespace)
    assert wait(lambda: ("stdout", "hello") in said), said
