"""Netrefs in IPython's display machinery: one round trip per display, bounded output.

IPython would probe a netref for ``_ipython_display_``, ``_repr_mimebundle_``, every
``_repr_*_`` and a canary attribute, each a remote ``getattr``.  Here a local type
check routes netrefs to the server program instead; every other object goes
through IPython exactly as without the extension.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from IPython.lib import pretty

from . import _ipython, _rpyc
from .patches import Patches
from .registry import Registry
from .text import inert

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


def netref_class_repr(cls: Any) -> Optional[str]:
    """``<netref class 'builtins.list'>`` for the class of a netref, as the RPyC tutorial shows."""
    name = _rpyc.netref_class_type_name(cls)
    return None if name is None else f"<netref class '{name}'>"


def placeholder(obj: Any, why: str) -> str:
    return f"<netref {_rpyc.netref_class_name(obj)}: {why}>"


def remote_bundle(obj: Any, registry: Registry, limits: Limits, rich: Optional[bool] = None) -> Bundle:
    """The display data of a netref: one round trip, or a short marker without one."""
    conn = _rpyc.connection_of(obj)
    if conn is None or _rpyc.is_closed(conn):
        return {"text/plain": placeholder(obj, "connection closed")}, {}
    helper = registry.helper_of(registry.record_of(conn))
    if helper is None:
        return plain_bundle(obj, limits)
    try:
        _, items = helper.display(obj, limits.text, limits.data, limits.rich if rich is None else rich,
                                  limits.timeout)
    except Exception as e:
        return {"text/plain": placeholder(obj, _failure(e, limits.timeout))}, {}
    return _bundle_of(obj, items, limits)


def remote_bundles(objs: Sequence[Any], registry: Registry, limits: Limits,
                   rich: Optional[bool] = None) -> List[Bundle]:
    """:func:`remote_bundle` of several netrefs (of one or many connections) at once: every
    request is sent before any answer is awaited, so the wait is that of the slowest."""
    rich = limits.rich if rich is None else rich
    sent: List[Any] = []
    for obj in objs:
        conn = _rpyc.connection_of(obj)
        helper = None if conn is None or _rpyc.is_closed(conn) else registry.helper_of(registry.record_of(conn))
        job: Any = None
        if helper is not None:
            try:
                job = helper.start("display", obj, limits.text, limits.data, rich, timeout=limits.timeout)
            except Exception as e:
                job = e
        sent.append((helper, job))
    out: List[Bundle] = []
    for obj, (helper, job) in zip(objs, sent):
        if helper is None:
            out.append(remote_bundle(obj, registry, limits, rich))  # closed, or no helper: the usual way
            continue
        try:
            if isinstance(job, Exception):
                raise job
            out.append(_bundle_of(obj, helper.finish(job, "a display")[1], limits))
        except Exception as e:
            out.append(({"text/plain": placeholder(obj, _failure(e, limits.timeout))}, {}))
    return out


def _bundle_of(obj: Any, items: Any, limits: Limits) -> Bundle:
    """The display data from the server program's answer for ``obj``."""
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
        text = _rpyc.timed_repr(obj, limits.timeout)
    except Exception as e:
        return {"text/plain": placeholder(obj, _failure(e, limits.timeout))}, {}
    shown = inert(text[: limits.text])
    if len(text) > limits.text:
        shown += f"… [{len(text):,} characters, first {limits.text:,} shown]"
    return {"text/plain": shown}, {}


def _failure(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, _rpyc.AsyncResultTimeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, (EOFError, OSError)):
        return "connection lost"
    return f"{type(exc).__name__}"


class DisplayHook:
    """Routes netrefs (and netref classes) around IPython's probing formatters, also inside
    local containers, and keeps IPython's prefilter from probing a one-name line's netref
    (see :class:`~._ipython.NetrefChecker`)."""

    def __init__(self, shell: Any, registry: Registry, limits: Limits, patches: Patches) -> None:
        self.shell = shell
        self.registry = registry
        self.limits = limits
        self.patches = patches

    def install(self) -> None:
        patches = self.patches
        original_format = self.shell.display_formatter.format
        hook = self

        def format(obj: Any, *args: Any, **kwargs: Any) -> Bundle:
            if patches.active:
                bundle = hook.bundle(obj)
                if bundle is not None:
                    return _filtered(bundle, *args, **kwargs)
            return original_format(obj, *args, **kwargs)

        patches.setattr(self.shell.display_formatter, "format", format)
        original_pretty = pretty.RepresentationPrinter.pretty

        def pretty_netrefs(printer: Any, obj: Any) -> Any:
            if patches.active:
                if _rpyc.is_netref(obj):
                    return printer.text(remote_bundle(obj, hook.registry, hook.limits, rich=False)[0]["text/plain"])
                text = netref_class_repr(obj)
                if text is not None:
                    return printer.text(text)
            return original_pretty(printer, obj)

        patches.setattr(pretty.RepresentationPrinter, "pretty", functools.wraps(original_pretty)(pretty_netrefs))
        checker = _ipython.NetrefChecker(shell=self.shell, prefilter_manager=self.shell.prefilter_manager)
        patches.on_undo("prefilter checker", lambda: self.shell.prefilter_manager.unregister_checker(checker))

    def bundle(self, obj: Any) -> Optional[Bundle]:
        """Our display data for a netref or a netref class; None for everything else."""
        if _rpyc.is_netref(obj):
            return remote_bundle(obj, self.registry, self.limits)
        text = netref_class_repr(obj)
        return None if text is None else ({"text/plain": text}, {})


def _filtered(bundle: Bundle, include: Any = None, exclude: Any = None) -> Bundle:
    data, md = bundle
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

    def __init__(self, shell: Any, registry: Registry, limits: Limits, patches: Patches) -> None:
        self.shell = shell
        self.registry = registry
        self.limits = limits
        self.patches = patches

    def install(self) -> None:
        original = _ipython.find_line_magic(self.shell, "whos")  # IPython 9.18+: loads it if still lazy
        if original is None:
            return
        patches = self.patches

        @functools.wraps(original)
        def whos(parameter_s: str = "") -> Any:
            if not patches.active:
                return original(parameter_s)
            return self.whos(original, parameter_s)

        patches.setitem(_ipython.line_magics(self.shell), "whos", whos)

    def whos(self, original: Callable[[str], Any], parameter_s: str) -> Any:
        ns = self.shell.user_ns
        swapped = {name: value for name, value in ns.items() if _rpyc.is_netref(value)}
        stand_ins = {name: self._bounded(value) for name, value in swapped.items()}
        ns.update(stand_ins)
        try:
            return original(parameter_s)
        finally:
            for name, value in swapped.items():
                if ns.get(name) is stand_ins[name]:
                    ns[name] = value

    def _bounded(self, obj: Any) -> Any:
        text = remote_bundle(obj, self.registry, self.limits, rich=False)[0]["text/plain"]
        cls = type(_rpyc.netref_class_name(obj), (), {"__str__": lambda self: text, "__repr__": lambda self: text})
        return cls()
