"""Tab completion and ``?``/``??`` for netrefs: one round trip each, no side effects.

Completion follows the typed attribute chain on the server with
``inspect.getattr_static`` (no property, no ``__getattr__``, no call, no indexing)
and answers from that object's ``dir()``; answers are cached per remote object and
chain until the next cell runs.  Inspection asks the server for type, repr, length,
signature, file, docstring and (``??``) source in one call.
"""

from __future__ import annotations

import html
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _compat
from .helper import helper_for
from .tracebacks import inert

_ATTR = re.compile(r"(?P<expr>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\.\s*(?P<prefix>\w*)$")
_KEY = re.compile(r"(?P<expr>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\[\s*(?P<quote>['\"])(?P<prefix>[^'\"\]]*)$")
_NAME_LIMIT = 5000


class CompletionHook:
    """Answers completions on netref expressions itself, before IPython and jedi probe them."""

    def __init__(self, shell: Any, timeout: Callable[[], float]) -> None:
        self.shell = shell
        self.timeout = timeout
        self.cache: Dict[Tuple[Any, ...], Tuple[Tuple[str, ...], Tuple[str, ...]]] = {}
        self.original: Any = None

    def install(self) -> None:
        if self.original is not None:
            return
        completer = self.shell.Completer
        self.original = completer._complete
        completer._complete = self._complete
        self.shell.events.register("pre_run_cell", self.clear)

    def uninstall(self) -> None:
        if self.original is None:
            return
        completer = self.shell.Completer
        if completer.__dict__.get("_complete") == self._complete:
            del completer._complete
        self.shell.events.unregister("pre_run_cell", self.clear)
        self.original = None
        self.cache.clear()

    def clear(self, *args: Any) -> None:
        self.cache.clear()

    def _complete(self, **kwargs: Any) -> Any:
        try:
            answer = self.netref_completions(**kwargs)
        except Exception:
            answer = None
        if answer is None:
            return self.original(**kwargs)
        fragment, matches = answer
        from IPython.core.completer import SimpleCompletion

        return {
            "ipyrpyc": {
                "completions": [SimpleCompletion(text=m, type="attribute") for m in matches],
                "matched_fragment": fragment,
                "suppress": True,
            }
        }

    def netref_completions(self, *, cursor_line: int = 0, cursor_pos: Optional[int] = None,
                           line_buffer: Optional[str] = None, text: Optional[str] = None,
                           full_text: Optional[str] = None, **_: Any) -> Optional[Tuple[str, List[str]]]:
        """(fragment, matches) when the cursor follows a netref expression, else None."""
        if full_text:
            lines = full_text.split("\n")
            line = lines[cursor_line] if cursor_line < len(lines) else ""
        else:
            line = line_buffer if line_buffer is not None else (text or "")
        before = line[: len(line) if cursor_pos is None else cursor_pos]
        m = _KEY.search(before)
        want_keys = m is not None
        m = m or _ATTR.search(before)
        if m is None:
            return None
        names = [part.strip() for part in m["expr"].split(".")]
        root = self.shell.user_ns.get(names[0], _MISSING)
        if root is _MISSING or not _compat.is_netref(root):
            return None
        attrs, keys = self.lookup(root, tuple(names[1:]))
        prefix = m["prefix"]
        pool = keys if want_keys else attrs
        matches = sorted(n for n in pool if n.startswith(prefix))
        if not prefix.startswith("_"):
            matches = [n for n in matches if not n.startswith("_")] or matches
        return prefix, matches

    def lookup(self, root: Any, chain: Tuple[str, ...]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """Remote dir() and string keys of root.<chain>: one round trip, then cached until the next cell."""
        conn = _compat.connection_of(root)
        key = (id(conn), _compat.id_pack(root), chain)
        if key in self.cache:
            return self.cache[key]
        helper = helper_for(conn)
        if helper is None:
            return (), ()
        try:
            _, attrs, keys = helper.complete(root, chain, _NAME_LIMIT, self.timeout())
        except Exception:
            return (), ()  # out of time or connection trouble: no completions, never a hang
        answer = (tuple(attrs), tuple(keys))
        self.cache[key] = answer
        return answer


_MISSING = object()

_FIELDS = (
    ("type", "Type"),
    ("repr", "String form"),
    ("length", "Length"),
    ("signature", "Signature"),
    ("file", "File"),
    ("docstring", "Docstring"),
    ("source", "Source"),
)


class InspectHook:
    """``obj?`` and ``obj??`` for netrefs, from one remote call."""

    def __init__(self, shell: Any, text_limit: Callable[[], int], timeout: Callable[[], float]) -> None:
        self.shell = shell
        self.text_limit = text_limit
        self.timeout = timeout
        self.original: Any = None

    def install(self) -> None:
        if self.original is not None:
            return
        inspector = self.shell.inspector
        self.original = inspector._get_info
        inspector._get_info = self._get_info

    def uninstall(self) -> None:
        if self.original is None:
            return
        inspector = self.shell.inspector
        if inspector.__dict__.get("_get_info") == self._get_info:
            del inspector._get_info
        self.original = None

    def _get_info(self, obj: Any, oname: str = "", formatter: Any = None, info: Any = None,
                  detail_level: int = 0, omit_sections: Any = ()) -> Dict[str, str]:
        if not _compat.is_netref(obj):
            return self.original(obj, oname, formatter=formatter, info=info, detail_level=detail_level,
                                 omit_sections=omit_sections)
        return self.bundle(obj, detail_level, omit_sections)

    def fields(self, obj: Any, detail_level: int) -> List[Tuple[str, str]]:
        conn = _compat.connection_of(obj)
        helper = helper_for(conn)
        remote_type = _compat.netref_class_name(obj)
        if helper is None:
            return [("Type", f"netref to {remote_type}"), ("Note", "the server cannot run ipyrpyc's helper")]
        try:
            raw = dict(helper.describe(obj, int(bool(detail_level)), self.text_limit(), self.timeout()))
        except Exception as e:
            why = "no answer in time" if isinstance(e, _compat.AsyncResultTimeout) else type(e).__name__
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
        colors = str(getattr(self.shell, "colors", "nocolor")).lower() != "nocolor"
        width = max(len(t) for t, _ in fields) + 2
        lines = []
        for title, value in fields:
            head = f"{title}:".ljust(width)
            if colors:
                head = f"\x1b[31m{head}\x1b[0m"
            if "\n" in value:
                lines.append(head.rstrip() + "\n" + value)
            else:
                lines.append(head + value)
        text = "\n".join(lines)
        rows = "".join(
            f"<tr><th style='text-align:left;vertical-align:top'>{html.escape(t)}</th>"
            f"<td><pre style='margin:0'>{html.escape(v)}</pre></td></tr>"
            for t, v in fields
        )
        return {"text/plain": text, "text/html": f"<table>{rows}</table>"}
