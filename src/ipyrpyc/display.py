"""Netrefs in IPython's display machinery: one round trip per display, bounded output.

IPython would probe a netref for ``_ipython_display_``, ``_repr_mimebundle_``, every
``_repr_*_`` and a canary attribute, each a remote ``getattr``.  Here a local
``isinstance`` check routes netrefs to the server-side helper instead; everything
else goes through IPython unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple

from IPython.lib import pretty

from . import _compat
from .helper import helper_for
from .tracebacks import inert

Bundle = Tuple[Dict[str, Any], Dict[str, Any]]


class Limits:
    """The display budget, read from the magics' traits at each use."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self.get = get

    @property
    def text(self) -> int:
        return int(self.get("display_max_chars"))

    @property
    def data(self) -> int:
        return int(self.get("display_max_bytes"))

    @property
    def timeout(self) -> float:
        return float(self.get("display_timeout"))

    @property
    def rich(self) -> bool:
        return bool(self.get("rich_display"))


def netref_class_repr(cls: type) -> Optional[str]:
    """``<netref class 'builtins.list'>`` for the class of a netref, as the RPyC tutorial shows."""
    name = _compat.netref_class_type_name(cls)
    return None if name is None else f"<netref class '{name}'>"


def placeholder(obj: Any, why: str) -> str:
    return f"<netref {_compat.netref_class_name(obj)}: {why}>"


def remote_bundle(obj: Any, limits: Limits, rich: Optional[bool] = None) -> Bundle:
    """The display data of a netref: one round trip, or a short marker without one."""
    conn = _compat.connection_of(obj)
    if conn is None or _compat.is_closed(conn):
        return {"text/plain": placeholder(obj, "connection closed")}, {}
    helper = helper_for(conn)
    if helper is None:
        return plain_bundle(obj, limits)
    try:
        _, items = helper.display(obj, limits.text, limits.data, limits.rich if rich is None else rich,
                                  limits.timeout)
    except Exception as e:
        return {"text/plain": placeholder(obj, _failure(e, limits.timeout))}, {}
    data: Dict[str, Any] = {}
    notes = []
    for mime, value, size, error in items:
        if error is not None:
            if mime == "text/plain":
                data[mime] = placeholder(obj, f"repr raised {inert(error)}")
            continue
        if value is None:
            notes.append(f"{mime} not shown: {size:,} bytes, over the {limits.data:,}-byte limit")
            continue
        if mime == "text/plain":
            value = inert(value)
            if size > len(value):
                value += f"… [{size:,} characters, first {len(value):,} shown]"
        data.setdefault(mime, value)
    data.setdefault("text/plain", placeholder(obj, "no repr"))
    if notes:
        data["text/plain"] += "\n" + "\n".join(notes)
    return data, {}


def plain_bundle(obj: Any, limits: Limits) -> Bundle:
    """For servers without our helper: rpyc's repr, still bounded in time and size."""
    try:
        text = _compat.timed_repr(obj, limits.timeout)
    except Exception as e:
        return {"text/plain": placeholder(obj, _failure(e, limits.timeout))}, {}
    shown = inert(text[: limits.text])
    if len(text) > limits.text:
        shown += f"… [{len(text):,} characters, first {limits.text:,} shown]"
    return {"text/plain": shown}, {}


def _failure(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, _compat.AsyncResultTimeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, (EOFError, OSError)):
        return "connection lost"
    return f"{type(exc).__name__}"


class DisplayHook:
    """Routes netrefs (and netref classes) around IPython's probing formatters."""

    def __init__(self, shell: Any, limits: Limits) -> None:
        self.shell = shell
        self.limits = limits
        self.original_format: Any = None
        self.original_pretty: Any = None
        self.checkers: Any = []

    def install(self) -> None:
        if self.original_format is not None:
            return
        formatter = self.shell.display_formatter
        self.original_format = formatter.format
        formatter.format = self.format
        self.install_prefilter_guard()
        self.original_pretty = pretty.RepresentationPrinter.pretty
        hook = self

        def pretty_netrefs(printer: Any, obj: Any) -> Any:
            if _compat.is_netref(obj):
                return printer.text(remote_bundle(obj, hook.limits, rich=False)[0]["text/plain"])
            text = netref_class_repr(obj) if isinstance(obj, type) else None
            if text is not None:
                return printer.text(text)
            return hook.original_pretty(printer, obj)

        pretty.RepresentationPrinter.pretty = pretty_netrefs  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self.original_format is None:
            return
        formatter = self.shell.display_formatter
        if formatter.__dict__.get("format") == self.format:
            del formatter.format
        pretty.RepresentationPrinter.pretty = self.original_pretty  # type: ignore[method-assign]
        self.original_format = self.original_pretty = None
        for checker, guard in self.checkers:
            if checker.__dict__.get("check") is guard:
                del checker.check
        self.checkers = []

    def install_prefilter_guard(self) -> None:
        """A one-line cell ``df`` makes IPython's prefilter ask ``isinstance(df, Macro)`` and
        ``isinstance(df, IPyAutocall)`` (twice per cell in ipykernel): for a netref of a
        non-builtin type each is a remote ``__class__`` lookup.  A netref is never an
        instance of those local classes, so those checks skip netrefs."""
        from IPython.core.prefilter import IPyAutocallChecker, MacroChecker

        shell = self.shell
        for checker in getattr(shell.prefilter_manager, "checkers", ()):
            if not isinstance(checker, (MacroChecker, IPyAutocallChecker)) or "check" in checker.__dict__:
                continue

            def guard(line_info: Any, original: Any = checker.check) -> Any:
                if _compat.is_netref(shell.user_ns.get(line_info.ifun)):
                    return None
                return original(line_info)

            checker.check = guard
            self.checkers.append((checker, guard))

    def format(self, obj: Any, include: Any = None, exclude: Any = None) -> Bundle:
        if _compat.is_netref(obj):
            data, md = remote_bundle(obj, self.limits)
        elif isinstance(obj, type) and netref_class_repr(obj) is not None:
            data, md = {"text/plain": netref_class_repr(obj)}, {}
        else:
            return self.original_format(obj, include=include, exclude=exclude)
        if include:
            data = {k: v for k, v in data.items() if k in include}
        if exclude:
            data = {k: v for k, v in data.items() if k not in exclude}
        return data, md




class WhosHook:
    """``%whos`` prints ``str()`` of each variable: for a netref, a remote ``str`` of any size.

    While ``%whos`` runs, netrefs in the namespace are shown through the bounded display
    path instead (one round trip each, cut at ``display_max_chars``).
    """

    def __init__(self, shell: Any, limits: Limits) -> None:
        self.shell = shell
        self.limits = limits
        self.original: Any = None

    def install(self) -> None:
        manager = self.shell.magics_manager
        if self.original is not None:
            return
        find = getattr(manager, "find", None)  # IPython 9.18+ loads core magics lazily
        original = find("line", "whos") if find else manager.magics["line"].get("whos")
        if original is None:
            return
        table = manager.magics["line"]
        self.previous_entry = table.get("whos")
        self.original = original

        @functools.wraps(self.original)
        def whos(parameter_s: str = "") -> Any:
            return self.whos(parameter_s)

        self.wrapped = table["whos"] = whos

    def uninstall(self) -> None:
        if self.original is None:
            return
        table = self.shell.magics_manager.magics["line"]
        if table.get("whos") is self.wrapped:
            table["whos"] = self.previous_entry
        self.original = None

    def whos(self, parameter_s: str = "") -> Any:
        ns = self.shell.user_ns
        swapped = {name: value for name, value in ns.items() if _compat.is_netref(value)}
        stand_ins = {name: _bounded(value, self.limits) for name, value in swapped.items()}
        ns.update(stand_ins)
        try:
            return self.original(parameter_s)
        finally:
            for name, value in swapped.items():
                if ns.get(name) is stand_ins[name]:
                    ns[name] = value


def _bounded(obj: Any, limits: Limits) -> Any:
    text = remote_bundle(obj, limits, rich=False)[0]["text/plain"]
    cls = type(_compat.netref_class_name(obj), (), {"__str__": lambda self: text, "__repr__": lambda self: text})
    return cls()
