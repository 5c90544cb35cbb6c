"""The one place that knows IPython's internals and the differences between its versions
(IPython 8.15 and newer; the differences that matter are marked with the version)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from IPython.core.completer import SimpleCompletion
from IPython.core.prefilter import PrefilterChecker
from traitlets import Integer


def find_line_magic(shell: Any, name: str) -> Optional[Callable[..., Any]]:
    """The callable of line magic ``name`` (IPython 9.18+ loads core magics lazily)."""
    manager = shell.magics_manager
    find = getattr(manager, "find", None)
    return find("line", name) if find else manager.magics["line"].get(name)


def line_magics(shell: Any) -> Dict[str, Any]:
    """The shell's table of line magics, where an entry can be replaced."""
    return shell.magics_manager.magics["line"]


def completion_result(origin: str, fragment: str, matches: Iterable[str], kind: str) -> Dict[str, Any]:
    """What ``IPCompleter._complete`` returns (IPython 8.6+): the only answer, others suppressed."""
    return {
        origin: {
            "completions": [SimpleCompletion(text=m, type=kind) for m in matches],
            "matched_fragment": fragment,
            "suppress": True,
        }
    }


def oinfo(found: bool, obj: Any, namespace: Optional[str]) -> Any:
    """What ``InteractiveShell._ofind`` returns (an ``OInfo``)."""
    from IPython.core.oinspect import OInfo

    return OInfo(ismagic=False, isalias=False, found=found, obj=obj, namespace=namespace, parent=None)


def find_parts(shell: Any, oname: str) -> Tuple[bool, List[str]]:
    """``_ofind``'s split of ``a.b[0].c``."""
    return shell._find_parts(oname)


def namespaces(shell: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """Where ``_ofind`` looks for a name, in its order."""
    import builtins

    return [("Interactive", shell.user_ns), ("Interactive (global)", shell.user_global_ns),
            ("Python builtin", builtins.__dict__)]


def list_tb(shell: Any) -> Any:
    """An IPython ListTB coloured like the shell's tracebacks (themes: IPython 9; schemes: 8)."""
    from IPython.core.ultratb import ListTB

    tb = ListTB()
    itb = shell.InteractiveTB
    if hasattr(tb, "set_theme_name") and hasattr(itb, "_theme_name"):
        tb.set_theme_name(itb._theme_name)
    elif hasattr(itb, "color_scheme_table"):
        tb.set_colors(itb.color_scheme_table.active_scheme_name)
    return tb


def run_nested_cell(shell: Any, cell: str) -> Any:
    """Run ``cell`` from a cell magic as the cell itself would run: its output, its last
    expression as ``Out[n]``, its error drawn once; an error also fails the enclosing cell
    (the execute reply says so, as without the magic).  Returns IPython's ExecutionResult."""
    outer = getattr(shell.displayhook, "exec_result", None)
    result = shell.run_cell(cell, store_history=False)
    shell.displayhook.exec_result = outer  # run_cell resets it when it ends
    error = result.error_before_exec if result.error_before_exec is not None else result.error_in_exec
    if error is not None and outer is not None and outer.error_in_exec is None:
        outer.error_in_exec = error
    return result


def colors_on(shell: Any) -> bool:
    return str(getattr(shell, "colors", "nocolor")).lower() != "nocolor"


def exc_info(shell: Any, exc_tuple: Any) -> Optional[Tuple[type, BaseException, Any]]:
    """``(type, exception, traceback)`` that ``showtraceback(exc_tuple)`` is about to show, or None."""
    try:
        return shell._get_exc_info(exc_tuple)
    except Exception:
        return None


class NetrefChecker(PrefilterChecker):
    """A one-name cell ``df`` makes IPython's prefilter ask ``isinstance(df, Macro)`` and
    ``isinstance(df, IPyAutocall)`` (twice per cell in ipykernel): for a netref of a
    non-builtin type each is a remote ``__class__`` lookup.  Checked before those two,
    this checker ends the search for a netref with the handler IPython would have
    chosen anyway, unless autocall is on (then IPython decides, as without ipyrpyc).
    For every other name it answers None and is not on the stack when IPython's own
    checkers run."""

    priority = Integer(200)  # after EmacsChecker (100), before MacroChecker (250)

    def check(self, line_info: Any) -> Any:
        from ._rpyc import is_netref

        if self.enabled and not self.shell.autocall and is_netref(self.shell.user_ns.get(line_info.ifun)):
            return self.prefilter_manager.get_handler_by_name("normal")
        return None
