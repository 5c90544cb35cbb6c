"""``obj?`` and ``obj??`` for netrefs, from one remote call.

``InteractiveShell._ofind`` would walk a dotted name (``ros.path.abspath``) one remote
``getattr`` at a time before the inspector sees the object; for a name whose head is
a netref the walk and the description are one round trip here.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _ipython, _rpyc
from .patches import Patches
from .registry import Registry
from .text import inert

_FIELDS = (
    ("type", "Type"),
    ("repr", "String form"),
    ("length", "Length"),
    ("signature", "Signature"),
    ("file", "File"),
    ("docstring", "Docstring"),
    ("source", "Source"),
)
_MISSING = object()


class InspectHook:
    """Netrefs in the inspector (``_get_info``) and in the name lookup before it (``_ofind``)."""

    def __init__(self, shell: Any, registry: Registry, text_limit: Callable[[], int],
                 timeout: Callable[[], float], patches: Patches) -> None:
        self.shell = shell
        self.registry = registry
        self.text_limit = text_limit
        self.timeout = timeout
        self.patches = patches
        self.found: Optional[Tuple[Any, Dict[str, Any]]] = None  # (netref, description) from _ofind

    def install(self) -> None:
        patches, inspector = self.patches, self.shell.inspector
        original_info = inspector._get_info
        original_ofind = self.shell._ofind

        def _get_info(obj: Any, *args: Any, **kwargs: Any) -> Dict[str, str]:
            if patches.active and _rpyc.is_netref(obj):
                return self.bundle(obj, kwargs.get("detail_level", args[3] if len(args) > 3 else 0),
                                   kwargs.get("omit_sections", args[4] if len(args) > 4 else ()))
            return original_info(obj, *args, **kwargs)

        def _ofind(oname: str, namespaces: Any = None) -> Any:
            if patches.active:
                found = self.ofind(oname, namespaces)
                if found is not None:
                    return found
            return original_ofind(oname, namespaces)

        patches.setattr(inspector, "_get_info", _get_info)
        patches.setattr(self.shell, "_ofind", _ofind)

    def ofind(self, oname: str, namespaces: Any) -> Any:
        """``_ofind``'s answer for ``netref.a.b``: one round trip; None for every other name."""
        self.found = None
        ok, parts = _ipython.find_parts(self.shell, oname.strip())
        if not ok or len(parts) < 2 or not all(p.isidentifier() for p in parts):
            return None
        for space, ns in namespaces if namespaces is not None else _ipython.namespaces(self.shell):
            head = ns.get(parts[0], _MISSING) if isinstance(ns, dict) else _MISSING
            if head is _MISSING:
                continue
            if not _rpyc.is_netref(head):
                return None
            helper = self.registry.helper_of(self.registry.record_of_netref(head))
            if helper is None:
                return None
            try:
                found, obj, fields = helper.lookup(head, tuple(parts[1:]), self.text_limit(), self.timeout())
            except Exception:
                return _ipython.oinfo(False, None, None)
            if not found:
                return _ipython.oinfo(False, None, None)
            if _rpyc.is_netref(obj):
                self.found = (obj, dict(fields))
            return _ipython.oinfo(True, obj, space)
        return None

    def fields(self, obj: Any, detail_level: int) -> List[Tuple[str, str]]:
        found, self.found = self.found, None
        remote_type = _rpyc.netref_class_name(obj)
        if found is not None and found[0] is obj:
            raw = found[1]
            if not detail_level:
                raw.pop("source", None)
        else:
            helper = self.registry.helper_of(self.registry.record_of_netref(obj))
            if helper is None:
                return [("Type", f"netref to {remote_type}"), ("Note", "the server cannot run ipyrpyc's helper")]
            try:
                raw = dict(helper.describe(obj, int(bool(detail_level)), self.text_limit(), self.timeout()))
            except Exception as e:
                why = "no answer in time" if isinstance(e, _rpyc.AsyncResultTimeout) else type(e).__name__
                return [("Type", f"netref to {remote_type}"), ("Note", f"the server could not describe it: {why}")]
        out = []
        for key, title in _FIELDS:
            if key in raw and raw[key] is not None:
                value = inert(str(raw[key]))
                if key == "type":
                    value = f"{value} (remote, via rpyc)"
                elif key == "file":
                    value = f"{value} (on the server)"
                out.append((title, value))
        return out

    def bundle(self, obj: Any, detail_level: int, omit_sections: Any = ()) -> Dict[str, str]:
        fields = [(t, v) for t, v in self.fields(obj, detail_level) if t not in (omit_sections or ())]
        colors = _ipython.colors_on(self.shell)
        width = max(len(t) for t, _ in fields) + 2
        lines = []
        for title, value in fields:
            head = f"{title}:".ljust(width)
            if colors:
                head = f"\x1b[31m{head}\x1b[0m"
            lines.append(head.rstrip() + "\n" + value if "\n" in value else head + value)
        rows = "".join(
            f"<tr><th style='text-align:left;vertical-align:top'>{html.escape(t)}</th>"
            f"<td><pre style='margin:0'>{html.escape(v)}</pre></td></tr>"
            for t, v in fields
        )
        return {"text/plain": "\n".join(lines), "text/html": f"<table>{rows}</table>"}
