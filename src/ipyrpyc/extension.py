"""What loading the extension installs into a shell, and how unloading takes it back."""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import Any

from . import _compat
from .completion import CompletionHook, InspectHook
from .display import DisplayHook, Limits, WhosHook
from .magics import RpycMagics
from .tracebacks import ExceptionHook, Origin, ShortMessages


class Extension:
    """The magics and every hook of ipyrpyc in one shell."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.magics = _magics_with_valid_config(shell)
        self.short_messages = ShortMessages(lambda: self.magics.traceback != "raw")
        self.unbox_hook = _compat.UnboxHook(self._on_remote_exception)
        self.exception_hook = ExceptionHook(shell, self._origin_of, lambda: self.magics.traceback)
        traits = self.magics
        limits = Limits(lambda name: getattr(traits, name))
        self.display_hook = DisplayHook(shell, limits)
        self.whos_hook = WhosHook(shell, limits)
        self.completion_hook = CompletionHook(shell, lambda: traits.completion_timeout)
        self.inspect_hook = InspectHook(shell, lambda: traits.display_max_chars, lambda: traits.display_timeout)
        self.hooks = (self.unbox_hook, self.exception_hook, self.display_hook, self.whos_hook,
                      self.completion_hook, self.inspect_hook)

    def install(self) -> None:
        self.shell.register_magics(self.magics)
        if not any(c is self.magics for c in self.shell.configurables):  # Magics.__init__ adds itself
            self.shell.configurables.append(self.magics)
        for hook in self.hooks:
            hook.install()
        self.shell.events.register("pre_run_cell", self._pre_run_cell)
        atexit.register(self.magics.registry.close_all)

    def uninstall(self) -> None:
        self.magics.registry.close_all()
        atexit.unregister(self.magics.registry.close_all)
        self.shell.events.unregister("pre_run_cell", self._pre_run_cell)
        for hook in reversed(self.hooks):
            hook.uninstall()
        self.short_messages.restore()
        manager = self.shell.magics_manager
        manager.registry.pop(type(self.magics).__name__, None)
        for kind, table in self.magics.magics.items():
            for name in table:
                manager.magics[kind].pop(name, None)
        self.shell.configurables[:] = [c for c in self.shell.configurables if c is not self.magics]

    def _pre_run_cell(self, *args: Any) -> None:
        if self.magics.auto_reconnect:
            self.magics.reconnect_lost()

    def _on_remote_exception(self, exc: BaseException, conn: Any) -> None:
        """Called by the unbox hook for every exception that arrives over any rpyc connection."""
        self.short_messages.patch(exc)
        session = self.magics.registry.session_of(conn)
        if session is not None:
            origin = Origin(session.address, session.remote_pid, weakref.ref(conn))
        else:
            origin = Origin(_compat.peer_address(conn), None, weakref.ref(conn))
        exc._ipyrpyc_origin = origin  # type: ignore[attr-defined]

    def _origin_of(self, exc: BaseException) -> Origin:
        origin = getattr(exc, "_ipyrpyc_origin", None)
        if isinstance(origin, Origin):
            return origin
        self.short_messages.patch(exc)  # arrived before the extension was loaded
        return Origin()


def _magics_with_valid_config(shell: Any) -> RpycMagics:
    """RpycMagics from the shell's config; a bad value (``%config`` stores it even when it
    refuses it) is dropped with a one-line warning instead of making the extension unloadable."""
    from traitlets import TraitError
    from traitlets.config import Config

    try:
        return RpycMagics(shell=shell, config=shell.config)
    except TraitError:  # the half-made instance already added itself to the configurables
        shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, RpycMagics)]
    section = shell.config.get("RpycMagics", {})
    probe = RpycMagics(shell=None, config=Config())
    for name in list(section):
        try:
            setattr(probe, name, section[name])
        except Exception as e:
            print(f"ipyrpyc: ignoring RpycMagics.{name} = {section[name]!r}: {e}", file=sys.stderr)
            del section[name]
    return RpycMagics(shell=shell, config=shell.config)
