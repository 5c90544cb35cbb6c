"""The terminal-style IPython shell the in-process tests share."""

from __future__ import annotations

from typing import Any


def global_shell() -> Any:
    """The process-wide test shell (``start_ipython()`` returns it on its first call only)."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.testing.globalipapp import start_ipython

    return start_ipython() or TerminalInteractiveShell.instance()
