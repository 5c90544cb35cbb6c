"""Remote exceptions as notebook errors, end to end.

Real ipykernels from the ``ipyrpyc`` kernelspec, the embedded server they start and
stock ``rpyc_classic`` servers, all on 127.0.0.1; a terminal ``InteractiveShell`` only
for the custom-handler chain and ``%debug``.  Pure parser checks live in
``test_traceback_model.py``.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import signal
import sys
import time
import uuid

import pytest

from ipyrpyc.tracebacks import CHAIN_MESSAGES
from tests.support.kernels import ANSI, Kernel, ok, run
from tests.support.counting import KERNEL_IMPORT
from tests.support.processes import StockServer, pid_alive, wait_until
from tests.test_server_pythons import server_pythons

PLUMBING = (  # nothing of rpyc's or ipyrpyc's own may reach a user's traceback
    "rpyc/core", "site-packages/rpyc", "ipyrpyc/", "Derived", "_get_exception_class",
    "<ipyrpyc-helper>", "<ipyrpyc-remote", "__ipyrpyc_exec__", "_handle_call", "_dispatch_request",
)
FALLBACK = "Unexpected exception formatting exception"
SERVER_PID = "print(conn.eval(\"__import__('os').getpid()\"))"


# -- helpers ---------------------------------------------------------------------------------
def printed(kernel, code):
    """The value ``code`` prints (a Python literal)."""
    return ast.literal_eval(ok(kernel, code).stdout.strip())


def failed(kernel, code, ename=None, evalue=None):
    """Run a cell that must fail with exactly one iopub error; return (error content, plain text)."""
    res = run(kernel, code)
    assert res.status == "error" and len(res.errors) == 1, res
    err = res.errors[0]
    if ename is not None:
        assert err["ename"] == ename and res.reply["ename"] == ename, res
    if evalue is not None:
        assert err["evalue"] == evalue and res.reply["evalue"] == evalue, res
    assert FALLBACK not in res.stdout + res.stderr, res
    return err, ANSI.sub("", "\n".join(err["traceback"]))


def assert_clean(text):
    for p in PLUMBING:
        assert p not in text, f"{p!r} leaked into:\n{text}"


def assert_in_order(text, *parts):
    pos = -1
    for part in parts:
        found = text.find(part, pos + 1)
        assert found > pos, f"{part!r} missing or out of order in:\n{text}"
        pos = found


def make_package(root, body):
    """``labtools_<random>/errors.py`` under ``root``; returns (package name, its directory)."""
    name = f"labtools_{uuid.uuid4().hex[:8]}"
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text(body)
    return name, pkg


ERRORS_PY = '''\
class CalibrationError(Exception):
    pass


def calibrate():
    step()


def step():
    raise CalibrationError("laser drift 3.2 nm")
'''


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab():
    """One kernel for most checks, connected to its embedded server (``conn``, ``rsys``)."""
    k = Kernel()
    server_pid = None
    try:
        ok(k, "%rpyc_connect")
        server_pid = k.server_pid = printed(k, SERVER_PID)
        k.colors = printed(k, "print(repr(get_ipython().colors))")
        yield k
    finally:
        k.shutdown()
        if server_pid is not None:
            assert wait_until(lambda: not pid_alive(server_pid), 10), "embedded server outlived its kernel"


@pytest.fixture(scope="module")
def stock():
    server = StockServer()
    try:
        yield server
    finally:
        server.stop()


# -- the tutorial's error ----------------------------------------------------------------------
def test_index_error_from_the_tutorial(lab):
    err, text = failed(lab, "rsys.path[300]", "IndexError", "list index out of range")
    assert any("\x1b[" in line for line in err["traceback"]), "default colours have ANSI escapes"
    assert_in_order(
        text,
        f"Remote traceback (embedded server, pid {lab.server_pid})",
        "list.__getitem__",
        "on the server",
        "rsys.path[300]",
        "IndexError: list index out of range",
    )
    assert_clean(text)


def test_stock_server_section_names_address_and_pid(lab, stock):
    ok(lab, f"%rpyc_connect 127.0.0.1:{stock.port} --name st --prefix s_")
    try:
        _, text = failed(lab, "s_sys.path[300]", "IndexError", "list index out of range")
        assert_in_order(text, f"Remote traceback (127.0.0.1:{stock.port}, pid {stock.pid})",
                        "list.__getitem__", "s_sys.path[300]")
        assert_clean(text)
    finally:
        ok(lab, "%rpyc_disconnect st")


def test_plain_rpyc_connection_in_the_same_kernel(lab, stock):
    ok(lab, f"import rpyc\nplain = rpyc.classic.connect('127.0.0.1', {stock.port})")
    try:
        _, text = failed(lab, "plain.modules.sys.path[300]", "IndexError", "list index out of range")
        assert_in_order(text, f"Remote traceback (127.0.0.1:{stock.port}", "list.__getitem__",
                        "plain.modules.sys.path[300]")
        assert_clean(text)
    finally:
        ok(lab, "plain.close()")


# -- remote frames ------------------------------------------------------------------------------
def test_custom_exception_defined_with_conn_execute(lab):
    ok(lab, "conn.execute('class CalibrationError(Exception):\\n    pass\\n\\n"
            "def calibrate():\\n    raise CalibrationError(\"laser drift 3.2 nm\")\\n')")
    _, text = failed(lab, "conn.namespace['calibrate']()", "builtins.CalibrationError", "laser drift 3.2 nm")
    assert_in_order(text, "Remote traceback (embedded server", "in calibrate",
                    'raise CalibrationError("laser drift 3.2 nm")', "conn.namespace['calibrate']()",
                    "builtins.CalibrationError: laser drift 3.2 nm")
    assert_clean(text)

    # an error in the executed code itself: no frame of our exec helper, here or locally
    _, text = failed(lab, "conn.execute('x = 1\\nraise ValueError(\"direct\")')", "ValueError", "direct")
    assert_in_order(text, "Remote traceback", 'raise ValueError("direct")', "conn.execute(")
    assert "session.py" not in text
    assert_clean(text)


def test_custom_exception_from_a_module_file_on_the_server(lab, tmp_path):
    name, _ = make_package(tmp_path, ERRORS_PY)
    ok(lab, f"rsys.path.insert(0, {str(tmp_path)!r})\nlabmod = conn.modules['{name}.errors']")
    try:
        _, text = failed(lab, "labmod.calibrate()", f"{name}.errors.CalibrationError", "laser drift 3.2 nm")
        assert_in_order(text, f"{tmp_path}/{name}/errors.py", "in calibrate", "step()", "in step",
                        'raise CalibrationError("laser drift 3.2 nm")', "labmod.calibrate()",
                        f"{name}.errors.CalibrationError: laser drift 3.2 nm")
        assert_clean(text)
    finally:
        ok(lab, f"rsys.path.remove({str(tmp_path)!r})")


# -- chains -------------------------------------------------------------------------------------
def test_remote_chains_cause_and_context(lab):
    ok(lab, "conn.execute('def chained():\\n    try:\\n        [][1]\\n    except IndexError as e:\\n"
            "        raise ValueError(\"outer\") from e\\n\\n"
            "def handling():\\n    try:\\n        {}[1]\\n    except KeyError:\\n        1/0\\n')")
    _, text = failed(lab, "conn.namespace['chained']()", "ValueError", "outer")
    assert_in_order(text, "Remote traceback", "[][1]", "IndexError: list index out of range", CHAIN_MESSAGES[0],
                    'raise ValueError("outer") from e', "conn.namespace['chained']()", "ValueError: outer")
    assert CHAIN_MESSAGES[1] not in text
    assert_clean(text)

    _, text = failed(lab, "conn.namespace['handling']()", "ZeroDivisionError", "division by zero")
    assert_in_order(text, "Remote traceback", "{}[1]", "KeyError: 1", CHAIN_MESSAGES[1], "1/0",
                    "conn.namespace['handling']()", "ZeroDivisionError: division by zero")
    assert CHAIN_MESSAGES[0] not in text
    assert_clean(text)


def test_remote_error_caught_and_reraised_locally(lab):
    code = "try:\n    rsys.path[300]\nexcept IndexError as e:\n    raise ValueError('wrapped') from e"
    _, text = failed(lab, code, "ValueError", "wrapped")
    assert_in_order(text, "Remote traceback (embedded server", "list.__getitem__",
                    "IndexError: list index out of range", CHAIN_MESSAGES[0],
                    "raise ValueError('wrapped') from e", "ValueError: wrapped")
    assert_clean(text)


def test_error_in_a_local_callback_the_server_called(lab):
    ok(lab, "conn.execute('def with_callback(cb):\\n    return cb(1)\\n')")
    code = "def on_value(x):\n    return 1/0\n\nconn.namespace['with_callback'](on_value)"
    _, text = failed(lab, code, "ZeroDivisionError", "division by zero")
    assert_in_order(text, "Remote traceback (embedded server", "in with_callback", "return cb(1)",
                    "in on_value", "return 1/0", "conn.namespace['with_callback'](on_value)",
                    "ZeroDivisionError: division by zero")
    assert_clean(text)


def test_exception_group(lab):
    """From a server that has ExceptionGroup (Python 3.11+): the embedded one where the kernel's
    Python has it, else a stock server on the newest server Python (the client rebuilds the group)."""
    server = None
    name, where = "conn", "embedded server"
    try:
        if sys.version_info < (3, 11):
            server = StockServer(python=server_pythons()[-1][1])
            name, where = "grp", server.address
            ok(lab, f"%rpyc_connect {server.address} --name grp --no-inject")
        ok(lab, f"{name}.execute('def grouped():\\n"
                "    raise ExceptionGroup(\"grp\", [ValueError(\"a\"), TypeError(\"b\")])\\n')")
        _, text = failed(lab, f"{name}.namespace['grouped']()", "ExceptionGroup", "grp")
        assert_in_order(text, f"Remote traceback ({where}", "raise ExceptionGroup(", "ValueError: a",
                        "TypeError: b", f"{name}.namespace['grouped']()")
        assert "BaseExceptionGroup.__new__" not in text
        assert_clean(text)
    finally:
        if server is not None:
            ok(lab, "%rpyc_disconnect grp")
            server.stop()


# -- round trips --------------------------------------------------------------------------------
def test_rendering_costs_at_most_one_round_trip(lab, tmp_path):
    # Sources the server could not show in its own traceback (the file was deleted after the
    # import) make the renderer ask for them; a file that exists only later is then shown.
    name, pkg = make_package(tmp_path, ERRORS_PY)
    ok(lab, f"rsys.path.insert(0, {str(tmp_path)!r})\ngone = conn.modules['{name}.errors']\n"
            f"{KERNEL_IMPORT}rc = RequestCounter(conn).__enter__()")
    shutil.rmtree(pkg)
    try:
        for op in ("rsys.path[300]", "gone.calibrate()"):
            res = run(lab, f"rc.count = 0\n{op}")
            assert res.status == "error" and "Remote traceback" in ANSI.sub("", "\n".join(res.errors[0]["traceback"]))
            raising = printed(lab, "print(rc.count)")
            ok(lab, f"rc.count = 0\ntry:\n    {op}\nexcept Exception:\n    pass")
            quiet = printed(lab, "print(rc.count)")
            assert raising - quiet <= 1, (op, raising, quiet)
        _, text = failed(lab, "gone.calibrate()")
        assert "in calibrate" in text and "step()" not in text  # nobody can show the deleted source

        # a frame whose file did not exist when the error happened: fetched when it is drawn
        later = tmp_path / f"later_{uuid.uuid4().hex[:8]}.py"
        src = "def late():\n    raise KeyError('late')\n"
        ok(lab, f"conn.execute({f'exec(compile({src!r}, {str(later)!r}, {chr(39)}exec{chr(39)}))'!r})\n"
                "try:\n    conn.namespace['late']()\nexcept KeyError as e:\n    late_error = e")
        later.write_text("def late():\n    raise KeyError('late')  # from the file\n")
        ok(lab, "rc.count = 0")
        _, text = failed(lab, "raise late_error", "KeyError")
        assert_in_order(text, str(later), "in late", "raise KeyError('late')  # from the file", "raise late_error")
        assert printed(lab, "print(rc.count)") <= 1
    finally:
        ok(lab, f"rc.__exit__()\nrsys.path.remove({str(tmp_path)!r})")


def test_dead_connections_render_without_round_trips(kernel, classic_server, tmp_path):
    ok(kernel, "%rpyc_connect")
    ok(kernel, f"%rpyc_connect 127.0.0.1:{classic_server.port} --name st --prefix s_")
    embedded_pid = printed(kernel, SERVER_PID)
    name, pkg = make_package(tmp_path, ERRORS_PY)
    ok(kernel, f"""
mods = {{}}
for key, c, remote_sys in (("emb", conn, rsys), ("st", st, s_sys)):
    remote_sys.path.insert(0, {str(tmp_path)!r})
    mods[key] = c.modules["{name}.errors"]
""")
    shutil.rmtree(pkg)  # the servers' tracebacks now lack source lines the renderer would like to fetch
    ok(kernel, f"""
saved = {{}}
for key, c, remote_sys in (("emb", conn, rsys), ("st", st, s_sys)):
    mod = mods[key]
    try:
        remote_sys.path[300]
    except Exception as e:
        saved[key + "-index"] = e
    try:
        mod.calibrate()
    except Exception as e:
        saved[key + "-module"] = e
{KERNEL_IMPORT}rc = {{"emb": RequestCounter(conn).__enter__(), "st": RequestCounter(st).__enter__()}}
""")
    os.kill(embedded_pid, signal.SIGKILL)
    classic_server.stop()
    assert wait_until(lambda: not pid_alive(embedded_pid), 10)

    labels = {"emb": f"embedded server, pid {embedded_pid}",
              "st": f"127.0.0.1:{classic_server.port}, pid {classic_server.pid}"}
    for key in ("emb-index", "emb-module", "st-index", "st-module"):
        start = time.monotonic()
        if key.endswith("index"):
            _, text = failed(kernel, f"raise saved[{key!r}]", "IndexError", "list index out of range")
            assert_in_order(text, f"Remote traceback ({labels[key[:-6]]})", "list.__getitem__", "raise saved")
        else:
            _, text = failed(kernel, f"raise saved[{key!r}]", f"{name}.errors.CalibrationError", "laser drift 3.2 nm")
            assert_in_order(text, f"Remote traceback ({labels[key[:-7]]})", "in calibrate", "in step", "raise saved")
        assert time.monotonic() - start < 1.4, key  # a fetch attempt would wait 1.5 s for a silent peer
        assert_clean(text)
        assert printed(kernel, "print((rc['emb'].count, rc['st'].count))") == (0, 0), key


# -- display settings -----------------------------------------------------------------------------
def test_xmodes_and_colors(lab):
    ok(lab, "conn.execute('def deep():\\n    deeper()\\n\\n"
            "def deeper():\\n    raise LookupError(\"nothing here\")\\n')")
    try:
        for mode in ("Plain", "Context", "Verbose"):
            ok(lab, f"%xmode {mode}")
            _, text = failed(lab, "conn.namespace['deep']()", "LookupError", "nothing here")
            assert_in_order(text, "Remote traceback (embedded server", "in deep", "deeper()", "in deeper",
                            'raise LookupError("nothing here")', "conn.namespace['deep']()",
                            "LookupError: nothing here")
            assert_clean(text)
        ok(lab, "%xmode Minimal")
        for code, line in (("conn.namespace['deep']()", "LookupError: nothing here"),
                           ("rsys.path[300]", "IndexError: list index out of range")):
            _, text = failed(lab, code)
            assert [t for t in text.splitlines() if t.strip()] == [line]

        ok(lab, "%xmode Context\n%colors nocolor")
        for code in ("conn.namespace['deep']()", "rsys.path[300]"):
            err, text = failed(lab, code)
            assert not any("\x1b" in line for line in err["traceback"]), err["traceback"]
            assert "Remote traceback (embedded server" in text
    finally:
        ok(lab, f"%xmode Context\n%colors {lab.colors}")
    err, _ = failed(lab, "rsys.path[300]")
    assert any("\x1b[" in line for line in err["traceback"])


def test_traceback_trait(lab):
    header = f"Remote traceback (embedded server, pid {lab.server_pid})"
    try:
        ok(lab, "%config RpycMagics.traceback = 'remote'")
        _, text = failed(lab, "rsys.path[300]", "IndexError", "list index out of range")
        assert_in_order(text, header, "list.__getitem__", "IndexError: list index out of range")
        assert "rsys.path[300]" not in text and "Local traceback" not in text
        assert_clean(text)

        ok(lab, "%config RpycMagics.traceback = 'local'")
        _, text = failed(lab, "rsys.path[300]", "IndexError", "list index out of range")
        assert_in_order(text, "rsys.path[300]", "IndexError: list index out of range")
        assert "Remote traceback" not in text and "list.__getitem__" not in text
        assert_clean(text)

        ok(lab, "%config RpycMagics.traceback = 'raw'")
        err, text = failed(lab, "rsys.path[300]", "IndexError")
        assert err["evalue"].startswith("list index out of range\n")
        assert "Remote Traceback (1)" in err["evalue"] and "_handle_call" in err["evalue"]
        assert "Remote traceback (" not in text and "rsys.path[300]" in text
    finally:
        ok(lab, "%config RpycMagics.traceback = 'both'")
    _, text = failed(lab, "rsys.path[300]", "IndexError", "list index out of range")
    assert_in_order(text, header, "rsys.path[300]")


def test_hostile_text_from_the_server_stays_inert(lab):
    ok(lab, r'''conn.execute("""
E = chr(27)
HOSTILE = "<script>alert(1)</script> " + E + "[2J " + E + "]8;;http://x" + E + "\\\\link" + E + "]8;;" + E + "\\\\ end"
exec(compile("def inner():\\n    raise LookupError(HOSTILE)\\n", "/tmp/evil" + E + "[2J.py", "exec"), globals())
def hostile():
    try:
        inner()
    except LookupError:
        raise ValueError(HOSTILE)
""")''')
    shown = r"<script>alert(1)</script> \x1b[2J \x1b]8;;http://x\x1b\link\x1b]8;;\x1b\ end"
    assert printed(lab, "print(repr(conn.eval('HOSTILE')))") == shown.replace(r"\x1b", "\x1b")
    try:
        ok(lab, "%colors nocolor")
        for mode in ("both", "remote"):
            ok(lab, f"%config RpycMagics.traceback = {mode!r}")
            err, text = failed(lab, "conn.namespace['hostile']()", "ValueError", shown)
            everything = err["evalue"] + "".join(err["traceback"])
            assert "\x1b" not in everything and "\x9b" not in everything
            assert_in_order(text, "/tmp/evil\\x1b[2J.py", "in inner", f"LookupError: {shown}",
                            CHAIN_MESSAGES[1], "in hostile", f"ValueError: {shown}")
    finally:
        ok(lab, f"%config RpycMagics.traceback = 'both'\n%colors {lab.colors}")


# -- the exception itself ------------------------------------------------------------------------
def test_exception_keeps_its_type_and_state(lab):
    caught = printed(lab, """
out = []
try:
    rsys.path[300]
except IndexError as e:
    out.append(("IndexError", type(e).__name__, isinstance(e, LookupError)))
try:
    rsys.modules["no_such_module_xyz"]
except KeyError as e:
    out.append(("KeyError", type(e).__name__, str(e)))
conn.execute("class MyKeyError(KeyError):\\n    pass\\n\\ndef my_key_error():\\n    raise MyKeyError('k')\\n")
try:
    conn.namespace["my_key_error"]()
except KeyError:
    out.append("caught as KeyError")
except Exception as e:
    from rpyc.core.vinegar import GenericException
    out.append(("other", type(e).__name__, isinstance(e, GenericException)))
print(out)
""")
    # builtins keep their type; rpyc turns a server-defined subclass into a GenericException
    assert caught == [("IndexError", "IndexError", True), ("KeyError", "KeyError", "'no_such_module_xyz'"),
                      ("other", "builtins.MyKeyError", True)]
    _, text = failed(lab, "conn.namespace['my_key_error']()", "builtins.MyKeyError", "k")
    assert "raise MyKeyError('k')" in text

    failed(lab, "rsys.path[300]", "IndexError")
    state = printed(lab, """
import sys
v, tb = sys.last_value, sys.last_traceback
names = []
while tb is not None:
    names.append(tb.tb_frame.f_code.co_name)
    tb = tb.tb_next
print((type(v).__name__, isinstance(v, IndexError), str(v), v._remote_tb.rstrip().splitlines()[-1],
       hasattr(v, "_render_traceback_"), "<module>" in names))
""")
    assert state == ("IndexError", True, "list index out of range", "IndexError: list index out of range",
                     False, True)


def test_the_hook_never_raises(lab):
    # Only rpyc's own exception classes carry a remote traceback (a local exception's ``_remote_tb``
    # is never looked at): garbage goes into instances of the class rpyc makes for remote errors.
    ok(lab, "from rpyc.core.vinegar import _get_exception_class as remote_class")
    _, text = failed(lab, "e = remote_class(ValueError)('x'); e._remote_tb = '\\x00garbage' * 1000; raise e",
                     "ValueError", "x")
    assert "Remote traceback (" in text and "\x00" not in text
    deep = "'Traceback (most recent call last):\\n  File \"x.py\", line 1, in f\\nValueError: a\\n\\n" \
           "========= Remote Traceback (1) =========\\n' * 3000"
    _, text = failed(lab, f"e = remote_class(ValueError)('y'); e._remote_tb = {deep}; raise e", "ValueError", "y")
    assert "Remote traceback (" in text and "in f" in text
    failed(lab, "class Weird(Exception):\n    @property\n    def _remote_tb(self):\n"
                "        raise RuntimeError('boom')\nraise Weird('w')", "Weird", "w")
    assert ok(lab, "1 + 1").text == "2"
    _, text = failed(lab, "rsys.path[300]", "IndexError", "list index out of range")
    assert f"Remote traceback (embedded server, pid {lab.server_pid})" in text
    # still installed: IPython's own showtraceback, wrapped on the instance; no custom handler
    assert printed(lab, "print(('showtraceback' in vars(get_ipython()), get_ipython().custom_exceptions))") == (
        True, ())


# -- nbclient ---------------------------------------------------------------------------------
def test_nbclient_cell_execution_error():
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("%rpyc_connect\nrsys.path[300]"))
    client = NotebookClient(nb, kernel_name="ipyrpyc", timeout=60)
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "IndexError"
    assert info.value.evalue == "list index out of range"
    assert "Remote traceback (embedded server" in ANSI.sub("", str(info.value))
    out = "".join(o.get("text", "") for o in nb.cells[0].outputs if o["output_type"] == "stream")
    pid = int(re.search(r"pid (\d+)", out).group(1))
    assert wait_until(lambda: not pid_alive(pid), 10)


# -- terminal shell ------------------------------------------------------------------------------
def test_chains_to_a_previous_custom_handler_and_unload_restores_it(shell, capsys):
    seen = []

    def my_handler(self, etype, value, tb, tb_offset=None):
        seen.append(etype)
        print("MY HANDLER")

    shell.run_line_magic("unload_ext", "ipyrpyc")
    shell.set_custom_exc((ZeroDivisionError,), my_handler)
    mine = shell.CustomTB
    own_showtraceback = vars(shell).get("showtraceback")  # what unloading must leave
    try:
        shell.run_line_magic("load_ext", "ipyrpyc")
        shell.run_line_magic("rpyc_connect", "")
        capsys.readouterr()
        shell.run_cell("1/0")
        out, _ = capsys.readouterr()
        assert seen == [ZeroDivisionError] and "MY HANDLER" in out

        shell.run_cell("try:\n    rsys.path[300]\nexcept IndexError as e:\n    saved = e")
        saved = shell.user_ns["saved"]
        assert str(saved) == "list index out of range"
        shell.run_cell("rsys.path[300]")
        out, _ = capsys.readouterr()
        assert_in_order(out, "Remote traceback (embedded server", "list.__getitem__", "rsys.path[300]")
        assert "MY HANDLER" not in out and len(seen) == 1

        shell.run_line_magic("unload_ext", "ipyrpyc")
        assert shell.custom_exceptions == (ZeroDivisionError,) and shell.CustomTB is mine
        assert vars(shell).get("showtraceback") is own_showtraceback
        shell.run_cell("1/0")
        assert seen == [ZeroDivisionError, ZeroDivisionError]
        assert str(saved).startswith("list index out of range\n") and "Remote Traceback (1)" in str(saved)
        assert "_handle_call" in str(saved)
    finally:
        shell.set_custom_exc((), None)
        shell.run_line_magic("load_ext", "ipyrpyc")  # the fixture unloads it


def test_debug_after_a_remote_error(shell, capsys, monkeypatch):
    shell.run_line_magic("rpyc_connect", "")
    shell.run_cell("rsys.path[300]")
    out, _ = capsys.readouterr()
    assert "Remote traceback (embedded server" in out
    assert isinstance(sys.last_value, IndexError) and sys.last_value._remote_tb
    monkeypatch.setattr(sys, "stdin", io.StringIO("p 6*7\nw\nq\n"))
    shell.run_line_magic("debug", "")
    out, _ = capsys.readouterr()
    assert "ipdb>" in out and "42" in out
    assert "rsys.path[300]" in out  # `w` shows the cell's frame
