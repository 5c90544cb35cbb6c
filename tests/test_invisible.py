"""For local objects, IPython with ipyrpyc loaded behaves exactly as IPython without it.

Each hostile object below records every attribute IPython (or anything else) looks up
on it.  Every operation (display, pretty-printing, a one-name cell and its prefilter,
completion with and without jedi, inspection, ``%whos``, errors) runs three times:
without ipyrpyc, with it loaded, and after unloading it; what the user sees and
every attribute lookup must be the same each time.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Tuple

import pytest
from IPython.core.completer import provisionalcompleter
from IPython.lib import pretty
from IPython.utils.capture import capture_output

from tests.test_patches import bare  # noqa: F401  (fixture)

LOG: List[str] = []


class Spy:
    """Logs every attribute lookup."""

    def __getattribute__(self, name: str) -> Any:
        LOG.append(f"{type(self).__name__}.{name}")
        return object.__getattribute__(self, name)


class ClassRaises(Spy):
    @property
    def __class__(self):  # noqa: PLE0101
        raise RuntimeError("no class for you")


class Everything(Spy):
    """Answers every attribute, with something callable."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: f"<{name}>"


class ReprRaises(Spy):
    def __repr__(self) -> str:
        raise ValueError("no repr")

    def _repr_html_(self) -> str:
        raise ValueError("no html")


class DirRaises(Spy):
    def __dir__(self):
        raise OSError("no dir")


class Meta(type):
    def __getattribute__(cls, name: str) -> Any:
        LOG.append(f"class.{name}")
        return super().__getattribute__(name)


class SpiedClass(metaclass=Meta):
    attribute = 1


class HostileError(Exception):
    @property
    def __class__(self):  # noqa: PLE0101
        LOG.append("HostileError.__class__")
        return HostileError

    def __str__(self) -> str:
        LOG.append("HostileError.__str__")
        return "hostile"


OBJECTS: Dict[str, Any] = {
    "class_raises": ClassRaises(),
    "everything": Everything(),
    "repr_raises": ReprRaises(),
    "dir_raises": DirRaises(),
    "spied_class": SpiedClass,
    "plain": [1, {"a": (2, 3)}],
}


def _normalized(text: str) -> str:
    return re.sub(r"\b(Out|In)\[\d+\]", r"\1[N]", text)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as e:  # the same failure with and without the extension
        return ("raised", type(e).__name__, str(e))


def _captured(fn: Callable[[], Any]) -> Tuple[Any, str, str, List[Any]]:
    with capture_output() as cap:
        result = _outcome(fn)
    return result, _normalized(cap.stdout), _normalized(cap.stderr), [o.data for o in cap.outputs]


def _completions(ip, text: str, jedi: bool) -> List[Tuple[str, str]]:
    ip.Completer.use_jedi = jedi
    # jedi types completions only for this long (400 ms by default), then says <unknown>:
    # on a busy machine that would differ between two runs for reasons of its own
    timeout, ip.Completer.jedi_compute_type_timeout = ip.Completer.jedi_compute_type_timeout, 60_000
    try:
        with provisionalcompleter():
            return sorted((c.text, c.type) for c in ip.Completer.completions(text, len(text)))
    finally:
        ip.Completer.use_jedi = True
        ip.Completer.jedi_compute_type_timeout = timeout


def _cell(ip, code: str) -> Any:
    result = ip.run_cell(code, store_history=False)
    err = result.error_in_exec
    return (type(err).__name__ if err is not None else None, result.result is not None)


def observe(ip) -> Dict[str, Any]:
    """Every operation on every object: what the user sees, and the attribute lookups it made."""
    ip.user_ns.update(OBJECTS, HostileError=HostileError)
    seen: Dict[str, Any] = {}

    def record(key: str, fn: Callable[[], Any]) -> None:
        LOG.clear()
        seen[key] = (_captured(fn), tuple(LOG))

    for name, obj in OBJECTS.items():
        record(f"{name}: format", lambda o=obj: ip.display_formatter.format(o))
        record(f"{name}: pretty", lambda o=obj: pretty.pretty([o, {"k": o}]))
        record(f"{name}: cell", lambda n=name: _cell(ip, n))
        record(f"{name}: cell in a list", lambda n=name: _cell(ip, f"[{n}]"))
        for jedi in (False, True):
            record(f"{name}: complete jedi={jedi}", lambda n=name, j=jedi: _completions(ip, f"{n}.", j))
        record(f"{name}: inspect", lambda n=name: ip.object_inspect_mime(n))
        record(f"{name}: inspect attribute", lambda n=name: ip.object_inspect_mime(f"{n}.attribute"))
        record(f"{name}: inspect??", lambda n=name: ip.object_inspect_mime(n, detail_level=1))
    record("whos", lambda: ip.run_line_magic("whos", ""))
    record("hostile error", lambda: _cell(ip, "raise HostileError()"))
    record("chained error", lambda: _cell(ip, "try:\n    1/0\nexcept Exception as e:\n    raise KeyError('k') from e"))
    record("syntax error", lambda: _cell(ip, "1 +"))
    return seen


def broken_showtraceback(ip) -> Any:
    """A showtraceback that itself fails, as some tools' hooks do: how does the cell end?"""
    saved = ip.__dict__.get("showtraceback")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("broken showtraceback")

    ip.showtraceback = broken
    try:
        with capture_output():
            result = ip.run_cell("1/0", store_history=False)
        return type(result.error_in_exec).__name__
    except Exception as e:  # older IPython (8.6 here) lets the hook's error out of run_cell
        return f"run_cell raised {type(e).__name__}: {e}"
    finally:
        if saved is None:
            del ip.showtraceback
        else:
            ip.showtraceback = saved


def test_local_objects_behave_exactly_as_without_the_extension(bare):  # noqa: F811
    ip = bare
    without = observe(ip)
    ip.run_line_magic("load_ext", "ipyrpyc")
    try:
        loaded = observe(ip)
    finally:
        ip.run_line_magic("unload_ext", "ipyrpyc")
    after = observe(ip)
    assert without.keys() == loaded.keys() == after.keys()
    for key in without:
        assert loaded[key] == without[key], key
        assert after[key] == without[key], key


def test_a_broken_showtraceback_ends_the_cell_as_it_would_without_the_extension(bare):  # noqa: F811
    ip = bare
    expected = broken_showtraceback(ip)
    ip.run_line_magic("load_ext", "ipyrpyc")
    try:
        assert broken_showtraceback(ip) == expected
        assert "showtraceback" in ip.__dict__  # ours, back in place
    finally:
        ip.run_line_magic("unload_ext", "ipyrpyc")


@pytest.mark.parametrize("jedi", [False, True])
def test_completion_of_hostile_objects_still_works(bare, jedi):  # noqa: F811
    """A sanity check that the comparison above compares something."""
    bare.user_ns.update(OBJECTS)
    assert any(text.endswith("attribute") for text, _ in _completions(bare, "spied_class.", jedi))
