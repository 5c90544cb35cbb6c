"""Unloading leaves the shell exactly as it was, even around other extensions' wrappers.

Every place ipyrpyc changes goes through one ``Patches`` object.  These tests take a
snapshot of each of those places, wrap each one the way another extension would,
before ipyrpyc loads and after, and check what unloading leaves behind.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Tuple

import pytest
import rpyc
from IPython.core.completer import provisionalcompleter
from IPython.lib import pretty

import ipyrpyc
from ipyrpyc import _ipython
from ipyrpyc.patches import Patches
from tests.conftest import global_shell

_ABSENT = "<absent>"


# -- the Patches object itself --------------------------------------------------------------------
class Owner:
    def method(self) -> str:
        return "original"


def test_setattr_is_undone_exactly_and_only_while_ours():
    o = Owner()
    p = Patches()
    previous = p.setattr(o, "method", lambda: "ours")
    assert o.method() == "ours" and previous() == "original"
    p.undo()
    assert "method" not in vars(o) and o.method() == "original"

    o.method = own = lambda: "theirs, before"
    p = Patches()
    p.setattr(o, "method", lambda: "ours")
    p.undo()
    assert vars(o)["method"] is own

    p = Patches()
    p.setattr(o, "method", lambda: "ours")
    o.method = later = lambda: "theirs, after"
    p.undo()
    assert vars(o)["method"] is later and not p.active


def test_class_attribute_item_list_and_event_are_undone():
    class K:
        def f(self) -> int:
            return 1

    original = K.__dict__["f"]
    table = {"a": 1}
    items = [1, 2]
    shell = global_shell()
    p = Patches()
    p.setattr(K, "f", lambda self: 2)
    p.setitem(table, "a", 10)
    p.setitem(table, "b", 20)
    p.append(items, 3)
    callback = lambda *a: None  # noqa: E731
    p.register_event(shell.events, "pre_run_cell", callback)
    assert K().f() == 2 and table == {"a": 10, "b": 20} and items == [1, 2, 3]
    items.insert(0, 0)  # someone else changes the list meanwhile
    assert p.undo() == []
    assert K.__dict__["f"] is original and table == {"a": 1} and items == [0, 1, 2]
    assert callback not in shell.events.callbacks["pre_run_cell"]


# -- the shell ------------------------------------------------------------------------------------
def attribute_places(ip) -> Dict[str, Tuple[Any, str]]:
    """The attributes ipyrpyc changes in a shell: label -> (owner, attribute name)."""
    return {
        "display_formatter.format": (ip.display_formatter, "format"),
        "RepresentationPrinter.pretty": (pretty.RepresentationPrinter, "pretty"),
        "Completer._complete": (ip.Completer, "_complete"),
        "inspector._get_info": (ip.inspector, "_get_info"),
        "shell._ofind": (ip, "_ofind"),
        "shell.showtraceback": (ip, "showtraceback"),
    }


def places(ip) -> Dict[str, Callable[[], Any]]:
    """Every place ipyrpyc changes in a shell, as a way to read its current value."""
    table = _ipython.line_magics(ip)
    out: Dict[str, Callable[[], Any]] = {
        label: (lambda o=owner, n=name: vars(o).get(n, _ABSENT))
        for label, (owner, name) in attribute_places(ip).items()
    }
    out.update({
        "%whos": lambda: table.get("whos", _ABSENT),
        "custom exceptions": lambda: (ip.custom_exceptions, ip.CustomTB),
        "pre_run_cell": lambda: list(ip.events.callbacks["pre_run_cell"]),
        "configurables": lambda: list(ip.configurables),
        "prefilter checkers": lambda: list(ip.prefilter_manager.checkers),
    })
    return out


def restore(ip, saved: Dict[str, Any]) -> None:
    """Put back the attributes of a snapshot (after a test that leaves others' wrappers behind)."""
    for label, (owner, name) in attribute_places(ip).items():
        if saved[label] is _ABSENT:
            if name in vars(owner):
                delattr(owner, name)
        else:
            setattr(owner, name, saved[label])
    _ipython.line_magics(ip)["whos"] = saved["%whos"]


def snapshot(ip) -> Dict[str, Any]:
    return {name: read() for name, read in places(ip).items()}


def assert_same(before: Dict[str, Any], after: Dict[str, Any]) -> None:
    for name in before:
        b, a = before[name], after[name]
        same = a == b if isinstance(b, (list, tuple)) else a is b
        assert same, f"{name}: was {b!r}, now {a!r}"


class Foreign:
    """Another extension: wraps every place ipyrpyc uses, and counts calls through its wrappers."""

    def __init__(self, ip) -> None:
        self.ip = ip
        self.calls: List[str] = []
        self.undo: List[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        had = vars(owner).get(name, _ABSENT)
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return inner(*args, **kwargs)

        setattr(owner, name, wrapper)
        self.undo.append(lambda: delattr(owner, name) if had is _ABSENT else setattr(owner, name, had))

    def install(self) -> None:
        ip = self.ip
        self.wrap(ip.display_formatter, "format", "format")
        self.wrap(pretty.RepresentationPrinter, "pretty", "pretty")
        self.wrap(ip.Completer, "_complete", "complete")
        self.wrap(ip.inspector, "_get_info", "info")
        self.wrap(ip, "_ofind", "ofind")
        self.wrap(ip, "showtraceback", "showtraceback")
        table = _ipython.line_magics(ip)
        whos = _ipython.find_line_magic(ip, "whos")
        table["whos"] = lambda line="": (self.calls.append("whos"), whos(line))[1]
        self.undo.append(lambda: table.__setitem__("whos", whos))
        callback = lambda *a: self.calls.append("event")  # noqa: E731
        ip.events.register("pre_run_cell", callback)
        self.undo.append(lambda: ip.events.unregister("pre_run_cell", callback))

    def uninstall(self) -> None:
        while self.undo:
            self.undo.pop()()


def complete(ip, text: str) -> List[str]:
    """The completions a frontend gets (IPython's provisional API, jedi included)."""
    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(text, len(text))]


def exercise(ip, conn_line: str) -> None:
    """Use every hook: connect, display, pretty-print, complete, inspect, %whos, a remote error."""
    ip.run_line_magic("rpyc_connect", conn_line)
    for cell in ("rsys.path", "[rsys.path, 1]", "ros.path.abspath?", "%whos", "rsys.path[300]", "1/0"):
        ip.run_cell(cell, store_history=False)
    assert "path" in complete(ip, "rsys.pa")
    ip.object_inspect_mime("rsys.path")
    ip.user_ns["local_list"] = [1]
    assert "append" in complete(ip, "local_list.app")  # local objects: IPython's way
    assert "list" in ip.object_inspect_mime("local_list")["text/plain"]


@pytest.fixture
def bare(classic_server):
    """The global test shell without ipyrpyc; ipyrpyc never left loaded."""
    ip = global_shell()
    ip.config.pop("RpycMagics", None)
    if "ipyrpyc" in ip.extension_manager.loaded:
        ip.run_line_magic("unload_ext", "ipyrpyc")
    ip.reset(new_session=False)
    # IPython 9.18+ imports its own magics classes on first use (%load_ext's, and %whos's, which
    # ipyrpyc wraps): once imported they stay, with or without ipyrpyc, so import them first.
    for name in ("load_ext", "unload_ext", "whos"):
        _ipython.find_line_magic(ip, name)
    try:
        yield ip
    finally:
        if "ipyrpyc" in ip.extension_manager.loaded:
            ip.run_line_magic("unload_ext", "ipyrpyc")


def test_load_use_unload_leaves_the_shell_exactly_as_before(bare, classic_server):
    before = snapshot(bare)
    conn = rpyc.classic.connect(classic_server.host, classic_server.port)  # opened by hand
    try:
        bare.user_ns["hand"] = conn.modules.sys
        unbox_before = vars(conn).get("_unbox_exc", _ABSENT)
        bare.run_line_magic("load_ext", "ipyrpyc")
        assert snapshot(bare) != before
        exercise(bare, classic_server.address)
        bare.run_cell("hand", store_history=False)  # a record for a connection opened by hand
        bare.run_line_magic("unload_ext", "ipyrpyc")
        assert_same(before, snapshot(bare))
        assert vars(conn).get("_unbox_exc", _ABSENT) is unbox_before
        assert all(type(v).__name__ != "RemoteExecute" for v in vars(conn).values())
    finally:
        conn.close()


def test_a_wrapper_installed_before_ours_is_ours_to_restore(bare, classic_server):
    pristine = snapshot(bare)
    foreign = Foreign(bare)
    foreign.install()
    wrapped = snapshot(bare)
    bare.run_line_magic("load_ext", "ipyrpyc")
    exercise(bare, classic_server.address)
    assert {"format", "pretty", "complete", "info", "ofind", "showtraceback", "whos", "event"} <= set(foreign.calls)
    bare.run_line_magic("unload_ext", "ipyrpyc")
    assert_same(wrapped, snapshot(bare))
    foreign.uninstall()
    assert_same(pristine, snapshot(bare))


def test_a_wrapper_installed_after_ours_stays_and_keeps_working(bare, classic_server):
    pristine = snapshot(bare)
    try:
        wrapped_after_ours(bare, classic_server)
    finally:
        restore(bare, pristine)  # the other extension put back what it saw: our (inactive) wrappers


def wrapped_after_ours(bare, classic_server) -> None:
    bare.run_line_magic("load_ext", "ipyrpyc")
    foreign = Foreign(bare)
    foreign.install()
    wrapped = {k: v for k, v in snapshot(bare).items() if k not in ("configurables",)}
    ext = ipyrpyc._loaded[id(bare)]
    bare.run_line_magic("unload_ext", "ipyrpyc")
    after = snapshot(bare)
    for name in ("display_formatter.format", "RepresentationPrinter.pretty", "Completer._complete",
                 "inspector._get_info", "shell._ofind", "shell.showtraceback", "%whos"):
        assert after[name] is wrapped[name], name  # theirs, left alone
    assert not ext.patches.active
    foreign.calls.clear()
    conn = rpyc.classic.connect(classic_server.host, classic_server.port)
    try:
        bare.user_ns["hand"] = conn.modules.sys
        result = bare.run_cell("hand.version_info[0]", store_history=False)  # through both wrappers
        assert result.result == 3 and "format" in foreign.calls
        assert complete(bare, "hand.pa")  # ours passes through: IPython completes it
        bare.run_cell("1/0", store_history=False)
        assert "showtraceback" in foreign.calls
        assert bare.object_inspect_mime("hand.path")["text/plain"]
        for cell in ("[hand]", "hand", "hand.path[300]"):
            bare.run_cell(cell, store_history=False)
        bare.run_line_magic("whos", "")
        # nothing of ipyrpyc ran: it would have installed its server program on this connection
        assert not conn.eval("'__ipyrpyc__' in __import__('sys').modules")
    finally:
        conn.close()
        foreign.uninstall()
