"""What loading the extension installs into a shell, and how unloading takes it back."""

from __future__ import annotations

import atexit
import sys
from typing import Any

from .completion import CompletionHook
from .display import DisplayHook, Limits, WhosHook
from .inspection import InspectHook
from .magics import RpycMagics
from .magics_groups import GroupMagics
from .magics_look import LookMagics
from .magics_run import RunMagics
from .magics_trace import TraceMagics
from .magics_transfer import TransferMagics
from .patches import Patches
from .registry import Registry
from .remote_errors import TracebackHook


class Extension:
    """The magics and every hook of ipyrpyc in one shell; every change goes through
    :attr:`patches`, so that :meth:`uninstall` leaves the shell as it was."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.patches = Patches()
        self.registry = Registry(lambda: shell.user_ns, self.patches)
        self.magics = _magics_with_valid_config(shell, self.registry)
        self.groups = GroupMagics(shell, self.magics)
        self.trace = TraceMagics(shell, self.magics)
        self.parts = (RunMagics(shell, self.magics), LookMagics(shell, self.magics), self.trace, self.groups,
                      TransferMagics(shell, self.magics))
        traits = self.magics
        limits = Limits(lambda name: getattr(traits, name))
        self.traceback_hook = TracebackHook(shell, self.registry, lambda: traits.traceback, self.patches)
        self.registry.on_remote_exception = self.traceback_hook.short_messages.patch
        self.registry.auto_reconnect = lambda: traits.auto_reconnect
        self._checked: list = []  # sessions found alive before the running cell
        self.hooks = (
            self.traceback_hook,
            DisplayHook(shell, self.registry, limits, self.patches),
            WhosHook(shell, self.registry, limits, self.patches),
            CompletionHook(shell, self.registry, lambda: traits.completion_timeout, self.patches),
            InspectHook(shell, self.registry, lambda: traits.display_max_chars, lambda: traits.display_timeout,
                        self.patches),
        )

    def install(self) -> None:
        shell, patches = self.shell, self.patches
        for magics in (self.magics, *self.parts):
            shell.register_magics(magics)
            if not any(c is magics for c in shell.configurables):  # Magics.__init__ adds itself
                patches.append(shell.configurables, magics)
        for hook in self.hooks:
            hook.install()
        patches.register_event(shell.events, "pre_run_cell", self._pre_run_cell)
        patches.register_event(shell.events, "post_run_cell", self._post_run_cell)
        patches.on_undo("%rpyc_trace on", self.trace.off)
        atexit.register(self.registry.close_all)
        patches.on_undo("atexit", lambda: atexit.unregister(self.registry.close_all))

    def uninstall(self) -> None:
        self.groups.forget_all()
        self.registry.close_all()
        manager = self.shell.magics_manager
        for magics in (self.magics, *self.parts):
            manager.registry.pop(type(magics).__name__, None)
            for kind, table in magics.magics.items():
                for name in table:
                    if manager.magics[kind].get(name) == table[name]:
                        manager.magics[kind].pop(name, None)
        ours = (self.magics, *self.parts)
        self.shell.configurables[:] = [c for c in self.shell.configurables if not any(c is m for m in ours)]
        for failure in self.patches.undo():
            print(f"ipyrpyc: could not take back {failure}", file=sys.stderr)

    def _pre_run_cell(self, *args: Any) -> None:
        self._checked = []
        if self.magics.auto_reconnect:
            self.magics.reconnect_lost()
            self._checked = [s for s in self.registry.sessions.values() if not s.lost()]

    def _post_run_cell(self, *args: Any) -> None:
        """A connection the cell lost is reopened right after it (the cell is not run again);
        one that was already lost before it is left to the next cell's check."""
        checked, self._checked = self._checked, []
        if self.magics.auto_reconnect and checked:
            self.magics.reconnect_lost(checked)


def _magics_with_valid_config(shell: Any, registry: Registry) -> RpycMagics:
    """RpycMagics from the shell's config; a bad value (``%config`` stores it even when it
    refuses it) is dropped with a one-line warning instead of making the extension unloadable."""
    from traitlets import TraitError
    from traitlets.config import Config

    try:
        return RpycMagics(shell=shell, registry=registry, config=shell.config)
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
    return RpycMagics(shell=shell, registry=registry, config=shell.config)
