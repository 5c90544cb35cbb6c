"""Every change ipyrpyc makes to objects it does not own, in one place.

:class:`Patches` records what was there before each change and puts it back on
:meth:`Patches.undo`, but only where the current value is still ours: a wrapper
someone else installed after ours stays, and keeps working, because our wrappers
check :attr:`Patches.active` and pass straight through once undone.
"""

from __future__ import annotations

from typing import Any, Callable, List, MutableMapping, Tuple

_ABSENT = object()


class Patches:
    """Changes to attributes, mapping items, lists and event callbacks, undone in reverse order."""

    def __init__(self) -> None:
        self.active = True
        self._undo: List[Tuple[str, Callable[[], None]]] = []

    def setattr(self, owner: Any, name: str, value: Any) -> Any:
        """``owner.name = value``; returns what ``owner.name`` gave before (for wrappers)."""
        had = vars(owner).get(name, _ABSENT)
        previous = getattr(owner, name, None)
        setattr(owner, name, value)

        def undo() -> None:
            if vars(owner).get(name, _ABSENT) is not value:
                return  # replaced since, by someone else: theirs now
            if had is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, had)

        self._undo.append((f"{_label(owner)}.{name}", undo))
        return previous

    def setitem(self, mapping: MutableMapping[Any, Any], key: Any, value: Any) -> Any:
        """``mapping[key] = value``; returns the previous value (or None)."""
        had = mapping.get(key, _ABSENT)
        mapping[key] = value

        def undo() -> None:
            if mapping.get(key, _ABSENT) is not value:
                return
            if had is _ABSENT:
                del mapping[key]
            else:
                mapping[key] = had

        self._undo.append((f"[{key!r}]", undo))
        return None if had is _ABSENT else had

    def append(self, items: List[Any], value: Any) -> None:
        """``items.append(value)``; undone by removing that very object, wherever it is by then."""
        items.append(value)

        def undo() -> None:
            for i, item in enumerate(items):
                if item is value:
                    del items[i]
                    return

        self._undo.append((f"list item {value!r}", undo))

    def register_event(self, events: Any, name: str, callback: Callable[..., Any]) -> None:
        """``events.register(name, callback)`` on an IPython ``EventManager``."""
        events.register(name, callback)

        def undo() -> None:
            if callback in events.callbacks.get(name, ()):
                events.unregister(name, callback)

        self._undo.append((f"event {name}", undo))

    def on_undo(self, what: str, undo: Callable[[], None]) -> None:
        """Run ``undo`` when the patches are undone (for changes made some other way)."""
        self._undo.append((what, undo))

    def undo(self) -> List[str]:
        """Take back every change, newest first; returns what could not be (never raises)."""
        self.active = False
        failed = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:
                failed.append(f"{what}: {type(e).__name__}: {e}")
        return failed


def _label(owner: Any) -> str:
    return owner.__name__ if isinstance(owner, type) else type(owner).__name__
