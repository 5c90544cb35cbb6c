"""Tab completion for netrefs: one round trip, no side effects.

Completion follows the typed attribute chain on the server with
``inspect.getattr_static`` (no property, no ``__getattr__``, no call, no indexing)
and answers from that object's ``dir()`` (and string keys for ``x['``); answers are
cached per remote object and chain until the next cell runs.

Why ``IPCompleter._complete`` is wrapped rather than a matcher added to
``custom_matchers``: a matcher can suppress IPython's other matchers (jedi, the
Python matcher) only when it has completions, and for ``tricky.prop.`` with no
completions those matchers would evaluate the netref remotely, running properties.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _ipython, _rpyc
from .patches import Patches
from .registry import Registry

_ATTR = re.compile(r"(?P<expr>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\.\s*(?P<prefix>\w*)$")
_KEY = re.compile(r"(?P<expr>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\[\s*(?P<quote>['\"])(?P<prefix>[^'\"\]]*)$")
NAME_LIMIT = 5000
_MISSING = object()


class CompletionHook:
    """Answers completions on netref expressions itself, before IPython and jedi probe them."""

    def __init__(self, shell: Any, registry: Registry, timeout: Callable[[], float], patches: Patches) -> None:
        self.shell = shell
        self.registry = registry
        self.timeout = timeout
        self.patches = patches
        self.cache: Dict[Tuple[Any, ...], Tuple[Tuple[str, ...], Tuple[str, ...]]] = {}

    def install(self) -> None:
        completer = self.shell.Completer
        original = completer._complete
        patches = self.patches

        def _complete(**kwargs: Any) -> Any:
            if patches.active:
                try:
                    answer = self.netref_completions(**kwargs)
                except Exception:
                    answer = None
                if answer is not None:
                    fragment, matches = answer
                    return _ipython.completion_result("ipyrpyc", fragment, matches, "attribute")
            return original(**kwargs)

        patches.setattr(completer, "_complete", _complete)
        patches.register_event(self.shell.events, "pre_run_cell", self.clear)
        patches.on_undo("completion cache", self.cache.clear)

    def clear(self, *args: Any) -> None:
        self.cache.clear()

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
        if root is _MISSING or not _rpyc.is_netref(root):
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
        conn = _rpyc.connection_of(root)
        key = (id(conn), _rpyc.id_pack(root), chain)
        if key in self.cache:
            return self.cache[key]
        helper = self.registry.helper_of(self.registry.record_of(conn))
        if helper is None:
            return (), ()
        try:
            _, attrs, keys = helper.complete(root, chain, NAME_LIMIT, self.timeout())
        except Exception:
            return (), ()  # out of time or connection trouble: no completions, never a hang
        answer = (tuple(attrs), tuple(keys))
        self.cache[key] = answer
        return answer
