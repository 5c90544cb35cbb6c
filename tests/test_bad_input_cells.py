"""Property: arguments of ``%%rpyc`` (line and cell), ``%rpyc_debug`` and ``%rpyc_info`` never make
our code fail with anything but a ``UsageError``.

With one connection open (a stock ``rpyc_classic`` on 127.0.0.1) each call must end in success,
a one-line ``UsageError``, or, for ``%%rpyc``, an exception of the user's own cell: one that came
from the server with the cell's code on its stack (or a SyntaxError located in the cell), whose
innermost frame is not ours and whose rendered traceback shows none of our frames.  A failed call
leaves the local namespace as it was (identity of every value); a successful one changes only the
names it was asked to ``--pull``, to local copies.  A network guard fails the test on any
non-loopback ``getaddrinfo``/``connect``
(``tests.support.netguard``; a refused name lookup fails it too).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import time
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import ipyrpyc
from ipyrpyc import _rpyc
from ipyrpyc.arguments import parse
from ipyrpyc.errors import CallInterrupted, GroupError, RemoteTimeoutError, SessionError
from tests.support.netguard import NetworkGuard
from tests.support.processes import wait_until

OUR_DIR = os.path.dirname(os.path.abspath(ipyrpyc.__file__))
OUR_FILES = ("<ipyrpyc-helper>", "<ipyrpyc-remote")  # the server program's code objects (old and new names)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"\n]*)", line \d+(?:, in .*)?$', re.M)
_CELL_FILE = re.compile(r"^<conn\.cell-\d+>$")
_GONE = object()


# -- the grammar -------------------------------------------------------------------------------
# Never generated: code that would end the server or the test process, or block (input, sleep).
FORBIDDEN = ("exit", "quit", "abort", "kill", "sleep", "input", "breakpoint", "help", "while", "fork",
             "import", "open", "__", ":=", "exec", "eval", "del ", "globals", "locals", "vars", "setattr")

odd = st.sampled_from(list("\"'\\ =-,.;#$`\t\n\x00é߀٣🙂\u202e\u3000:()[]{}@*%") + ["\ud800"])
text = st.text(alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), odd), max_size=12).filter(
    lambda t: not any(f in t for f in FORBIDDEN))

conn_names = st.one_of(st.just("conn"), st.just("conn"), st.just("conn"),
                       st.sampled_from(["nosuch", "if", "CONN", "rsys", "-", "--", "1x", "ｃｏｎｎ"]), text)
timeouts = st.one_of(
    st.sampled_from(["1", "5", "2.5", "30"]),
    st.sampled_from(["1e6", "1e7", "1e300", "inf", "-inf", "nan", "0", "-0", "-1", "abc",
                     "", "1_0", "0x10", " 3 ", "1e-300", "5e-324", "0.001", "2147484", "9e15"]),
    st.floats().map(repr),
    st.integers(min_value=-10, max_value=10 ** 12).map(str),
)
# Local names, with values of every kind --push meets (see LOCALS); names the cell may define remotely.
LOCAL_NAMES = ["a", "s", "lst", "d", "arr", "fn", "mod", "deep", "rec", "obj", "nr", "big", "fl", "none"]
REMOTE_NAMES = ["a", "b", "m", "f", "gen", "k", "arr", "t", "none", "missing_q"]
odd_names = st.sampled_from(["", " ", "if", "None", "1x", "a-b", "a b", "ünï", "_", "__", "In", "conn", "ros", ",,"])
PLAIN_LOCALS = ["a", "s", "lst", "d", "arr", "big", "fl", "none"]
pushes = st.lists(st.one_of(st.sampled_from(PLAIN_LOCALS), st.sampled_from(PLAIN_LOCALS), st.sampled_from(PLAIN_LOCALS),
                            st.sampled_from(LOCAL_NAMES), st.just("missing_q"), odd_names, text),
                  min_size=1, max_size=3).map(",".join)
pulls = st.lists(st.one_of(st.sampled_from(REMOTE_NAMES), odd_names, text), min_size=1, max_size=2).map(",".join)
stray = st.sampled_from(["--", "-", "--bogus", "--push", "--pull", "--timeout", "-t", "--timeout=", "--push=",
                         "--all", "-h", "--help", "'", '"', "\\", "=", "--pull=,", "-x"])

CELL_LINES = [
    "a = 1", "a = 2.5", "b = [1, 2, {'k': (None, 2.5, b'x')}]", "m = __import__('os')", "def f():\n    return 1",
    "gen = (i for i in range(3))", "k = {1: 'x', (2, 3): [4]}", "t = (1, 'two', 3.0, None)", "none = None",
    "arr = __import__('numpy').arange(6).reshape(2, 3)", "arr = __import__('numpy').array([object()])",
    "print('hi')", "print('\\x1b[2J\\x07 bell')", "raise ValueError('boom')", "1/0", "a", "b", "[][0]",
    "undefined_name_q", "def broken(:", "x = ", "yield 1", "return 2", "await z", "   ", "", "# comment",
    "'''unterminated", "__import__('json').loads('{')", "int('x')", "class K:\n    pass\nK()",
    "__import__('nonexistent_module_q')", "assert False, 'no'", "raise KeyboardInterrupt('mine')",
    "raise SystemExit(3)", "lambda: 1", "b'\\xff'.decode()", "\x00", "a\x00 = 1", "if True:\npass",
    "\tx = 1", "x = 1\n  y = 2", "__import__('sys').path", "[i for i in range(3)]", "(1,) * 3", "...", "None",
    "raise ValueError('line one\\nline two')", "raise Exception()", "t[0]", "{}['missing']", "💥 = 1",
]
cells = st.one_of(
    st.lists(st.sampled_from(CELL_LINES), min_size=1, max_size=3).map("\n".join),
    st.lists(st.sampled_from(CELL_LINES), min_size=1, max_size=3).map("\n".join),
    text,
)

INFO_EXPRESSIONS = [
    "rsys.path", "ros", "conn", "rsys", "ros.getpid", "a", "nr", "undefined_q", "1 +", "rsys.path[10**9]",
    "conn.root", "rsys.modules['os']", "(", "'", "lambda: 1", "rsys.path, ros", "[rsys.path]", "type(rsys.path)",
    "rsys.path.__class__", "conn.namespace", "None", "1", "-h", "--help", "--", "ros.path", "rsys.maxsize",
    "conn.modules", "rsys.path[0]", "1/0", "fn", "mod", "rsys.path.append", "ros.environ",
]
NETREF_EXPRESSIONS = ["rsys.path", "ros", "rsys", "ros.getpid", "nr", "conn.root", "rsys.modules['os']", "ros.path",
                      "ros.environ", "rsys.path.append", "rsys . path", "(rsys.path)", "conn.modules.os"]
info_lines = st.one_of(
    st.sampled_from(NETREF_EXPRESSIONS),
    st.sampled_from(NETREF_EXPRESSIONS),
    st.sampled_from(INFO_EXPRESSIONS),
    st.lists(st.one_of(st.sampled_from(INFO_EXPRESSIONS), stray, text), min_size=0, max_size=3).map(" ".join),
    text,
)
debug_lines = st.one_of(st.lists(st.one_of(conn_names, stray), max_size=3).map(" ".join), text)


@st.composite
def rpyc_lines(draw) -> str:
    """The line of a %%rpyc cell: a name, --timeout, --push, --pull and strays, in any order and quoting."""
    if draw(st.integers(0, 19)) == 0:
        return draw(text)
    parts: List[List[str]] = []
    if draw(st.integers(0, 2)) == 0:
        parts.append([draw(conn_names)])
    if draw(st.integers(0, 3)) == 0:
        parts.append([draw(st.sampled_from(["--timeout", "-t"])), draw(timeouts)])
    if draw(st.integers(0, 2)) == 0:
        parts.append([draw(st.sampled_from(["--push", "--push="])), draw(pushes)])
    if draw(st.integers(0, 3)) == 0:
        parts.append([draw(st.sampled_from(["--pull", "--pull="])), draw(pulls)])
    if draw(st.integers(0, 7)) == 0:
        parts.append([draw(stray)])
    parts = draw(st.permutations(parts))
    tokens = []
    for part in parts:
        if len(part) == 2 and part[0].endswith("="):
            part = [part[0] + part[1]]
        tokens += part
    return " ".join(shlex.quote(t) if draw(st.integers(0, 3)) else t for t in tokens)


# -- the property ------------------------------------------------------------------------------
def _locals(ip) -> Dict[str, Any]:
    """Values of every kind that --push (and %rpyc_info) meet; bound in the user namespace."""
    import numpy

    rec: list = [1]
    rec.append(rec)
    deep: Any = 0
    for _ in range(150):
        deep = [deep]
    return {"a": "the user's own a", "s": "text", "lst": [1, 2.5, None, "x"], "d": {"k": [1, (2, 3)], 5: b"b"},
            "arr": numpy.arange(4.0), "fn": len, "mod": os, "deep": deep, "rec": rec, "obj": object(),
            "nr": ip.user_ns["rsys"].path, "big": list(range(1000)), "fl": float("nan"), "none": None}


def _remote_frames(exc: BaseException) -> List[str]:
    """File names of the remote frames, innermost last, without rpyc's plumbing."""
    text = _rpyc.remote_tb_text(exc) or ""
    text = text.split("\n\n========= Remote Traceback")[0]
    return [m["file"] for m in _FRAME.finditer(text) if f"{os.sep}rpyc{os.sep}" not in m["file"]]


class Harness:
    def __init__(self, ip, server, guard: NetworkGuard) -> None:
        self.ip = ip
        self.guard = guard
        self.cases = 0
        self.outcomes: Dict[str, int] = {}
        quiet(ip.run_line_magic, "rpyc_connect", server.address)
        self.conn = ip.user_ns["conn"]
        self.session = ip.magics_manager.registry["RpycMagics"].registry.sessions["conn"]
        ip.user_ns.update(_locals(ip))
        self.remote_before = set(self.conn.namespace.keys())
        self.ext = ipyrpyc._loaded[id(ip)]

    def check(self, magic: str, line: str, cell: Optional[str] = None) -> None:
        ip = self.ip
        ns = ip.user_ns
        before = dict(ns)
        sessions = dict(self.session_registry())
        self.cases += 1
        stdin = io.StringIO("q\n" * 50)  # the user's answers to %rpyc_debug's pdb prompts
        outcome = "ok"
        error: Optional[BaseException] = None
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                saved_stdin, sys.stdin = sys.stdin, stdin
                try:
                    if cell is None:
                        ip.run_line_magic(magic, line)
                    else:
                        ip.run_cell_magic(magic, line, cell)
                finally:
                    sys.stdin = saved_stdin
        except UsageError as e:
            outcome, error = "UsageError", e
            assert str(e).strip() and "\n" not in str(e).strip(), (magic, line, cell, str(e))
        except BaseException as e:  # noqa: B036 - judged below
            outcome, error = type(e).__name__, e
            self.judge(e, magic, line, cell)
        try:
            assert self.guard.violations == [] and self.guard.blocked == [], (
                magic, line, cell, self.guard.violations, self.guard.blocked)
            assert self.session_registry() == sessions, (magic, line, cell)
            assert self.session.conn is self.conn and not _rpyc.is_closed(self.conn), (magic, line, cell)
            changed = {k for k in set(ns) | set(before) if ns.get(k, _GONE) is not before.get(k, _GONE)}
            if magic == "rpyc" and self.grouped(line):
                changed.discard("_rpyc_results")  # a group's cell (here --all) binds its results, like `_`
            if error is not None:
                assert not changed, (magic, line, cell, outcome, changed)
            else:
                pulled = self.pulled(line)
                assert changed <= pulled, (magic, line, cell, changed - pulled)
                for name in changed:
                    assert not _rpyc.is_netref(ns[name]), (line, name)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        finally:
            self.restore(before)

    def grouped(self, line: str) -> bool:
        """Whether ``%%rpyc LINE`` runs as a group's cell (``--all``, ``a,b``)."""
        try:
            args = parse(self.ip.magics_manager.registry["RunMagics"].rpyc, line)
        except (UsageError, SystemExit):
            return False
        return self.ext.groups.wants(args)

    def judge(self, e: BaseException, magic: str, line: str, cell: Optional[str]) -> None:
        """A failure that is not a UsageError must be the user's own cell's, not ours."""
        where = (magic, line, cell, repr(e)[:300])
        if isinstance(e, GroupError):  # a group's cell: one line, and each member's error judged alike
            assert magic == "rpyc" and str(e) and "\n" not in str(e) and self.grouped(line), where
            for error in e.errors.values():
                if isinstance(error, SessionError) and str(error).startswith("--pull "):
                    continue  # a pulled name missing or not plain data on that member: one line
                self.judge(error, magic, line, cell)
            return
        if isinstance(e, RemoteTimeoutError):
            # the user's --timeout was shorter than the cell took: one line naming the setting
            assert magic == "rpyc" and "%%rpyc --timeout" in str(e) and "\n" not in str(e), where
            return
        assert magic == "rpyc" and cell is not None, where  # %rpyc_debug, %rpyc_info: UsageError only
        assert _rpyc.remote_tb_text(e) is not None, where  # raised on the server, not here
        assert not isinstance(e, CallInterrupted), where  # and not one of our call errors
        frames = _remote_frames(e)
        assert frames, where
        assert not frames[-1].startswith((*OUR_FILES, OUR_DIR)), (where, frames)
        located_in_cell = isinstance(e, SyntaxError) and _CELL_FILE.match(getattr(e, "filename", None) or "")
        in_cell = any(_CELL_FILE.match(f) for f in frames) or located_in_cell or (
            "SyntaxError" in type(e).__name__ and re.search(r'File "<conn\.cell-\d+>", line', _rpyc.remote_tb_text(e)))
        assert in_cell, (where, frames)
        shown = "\n".join(self.ext.traceback_hook.renderer.structured_traceback(e))
        assert not any(ours in shown for ours in (*OUR_FILES, OUR_DIR)), (where, shown)

    def pulled(self, line: str) -> set:
        try:
            tokens = shlex.split(line)
        except ValueError:
            return set()
        names = set()
        for i, t in enumerate(tokens):
            value = (tokens[i + 1] if t == "--pull" and i + 1 < len(tokens)
                     else t[7:] if t.startswith("--pull=") else None)
            if value is not None:
                names |= {n.strip() for n in value.split(",") if n.strip()}
        return names

    def session_registry(self) -> Dict[str, Any]:
        return dict(self.ip.magics_manager.registry["RpycMagics"].registry.sessions)

    def restore(self, before: Dict[str, Any]) -> None:
        ns = self.ip.user_ns
        ns.clear()
        ns.update(before)
        # a --timeout shorter than the cell leaves the server busy for a moment
        assert wait_until(lambda: self.session.state(2.0)[0] == "alive", 10), "the connection stayed busy"
        # the server's namespace back to where it was (cells and pushes define names there)
        for name in set(self.conn.namespace.keys()) - self.remote_before:
            del self.conn.namespace[name]


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


@pytest.fixture(scope="module")
def report():
    totals: Dict[str, Dict[str, int]] = {}
    yield totals
    print("\nfuzz cases by magic and outcome:", totals)


@pytest.fixture
def harness(shell, classic_server, report, request, network_guard):
    """The guard (conftest's, installed after the server started) fails the test on any violation;
    here a refused name lookup fails it too: no cell should look up a name that is not loopback."""
    h = Harness(shell, classic_server, network_guard)
    start = time.monotonic()
    yield h
    report[request.node.name] = dict(h.outcomes, cases=h.cases, seconds=round(time.monotonic() - start, 1))
    assert network_guard.blocked == []


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)


@settings(max_examples=800, **SETTINGS)
@given(line=rpyc_lines(), cell=cells)
@example(line="--timeout 1e300", cell="1")
@example(line="--pull a,missing_q", cell="a = 1")
@example(line="--pull b,m", cell="b = [1]\nm = __import__('os')")
@example(line="", cell="\x00")
@example(line="--push rec,deep", cell="1")
@example(line="", cell="raise KeyboardInterrupt('mine')")
@example(line="nosuch", cell="1")
@example(line="--all", cell="raise ValueError('boom')")  # a group's cell: GroupError, _rpyc_results
@example(line="--all --pull a,missing_q", cell="a = 1")
@example(line="conn,conn", cell="a = 1\na")
@example(line="", cell="+-")
def test_rpyc_cell(harness, line, cell):
    harness.check("rpyc", line, cell)


@settings(max_examples=300, **SETTINGS)
@given(line=info_lines)
@example(line="rsys.path")
@example(line="rsys.path[10**9]")
@example(line="undefined_q")
def test_rpyc_info(harness, line):
    harness.check("rpyc_info", line)


@settings(max_examples=150, **SETTINGS)
@given(line=debug_lines, fail_first=st.booleans())
@example(line="conn", fail_first=True)
@example(line="nosuch", fail_first=False)
def test_rpyc_debug(harness, line, fail_first):
    if fail_first:  # a remote exception to debug: pdb runs on the server and reads our "q"
        harness.check("rpyc", "", "raise ValueError('to debug')")
    harness.check("rpyc_debug", line)
