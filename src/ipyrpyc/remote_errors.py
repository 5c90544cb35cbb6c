"""Remote exceptions, and ipyrpyc's own errors about connections, as notebook errors.

:class:`Renderer` draws the model of :mod:`.tracebacks` with IPython's own traceback
classes, so ``%colors`` and ``%xmode`` apply: the server's frames (with source
lines), then the local frames that matter.  :class:`TracebackHook` wraps the
shell's ``showtraceback`` and hands IPython that drawing through a temporary
``_render_traceback_`` (ipyparallel's way), so ``sys.last_value``, ``%debug``,
``%pdb`` and ipykernel's error messages work as usual; every other exception goes
through IPython untouched.
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import _ipython, _rpyc
from .errors import CallInterrupted, GroupError, SessionError
from .patches import Patches
from .records import Record
from .registry import Registry
from .text import inert
from .tracebacks import CHAIN_MESSAGES, RemoteTraceback, parse, set_source_line, split_exception_line

MODES = ("both", "remote", "local", "raw")
TB_LIMIT = 4  # tracebacks drawn in full when several members of a group failed (ipyparallel's choice)
_OUR_DIR = os.path.dirname(os.path.abspath(__file__))
_IPYTHON_CORE = os.path.join("IPython", "core", "interactiveshell.py")


def is_remote(exc: BaseException) -> bool:
    return _rpyc.remote_tb_text(exc) is not None


def is_ours(exc: BaseException) -> bool:
    """ipyrpyc's errors about a connection, and a Ctrl-C that interrupted a remote call."""
    return issubclass(type(exc), (SessionError, CallInterrupted))


def exception_chain(exc: BaseException) -> List[Tuple[BaseException, Optional[str]]]:
    """Oldest first: (exception, message linking it to the next one)."""
    out: List[Tuple[BaseException, Optional[str]]] = []
    seen = set()
    link: Optional[str] = None
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(out) < 100:
        seen.add(id(current))
        out.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, CHAIN_MESSAGES[0]
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, CHAIN_MESSAGES[1]
        else:
            current = None
    out.reverse()  # each link now leads from its exception to the next, newer one
    return out


@contextlib.contextmanager
def _alone(exc: BaseException) -> Iterator[None]:
    """Render one exception without IPython walking its chain; restored afterwards."""
    saved = (exc.__cause__, exc.__context__, exc.__suppress_context__)
    try:
        exc.__cause__ = None
        exc.__context__ = None
        yield
    finally:
        exc.__cause__, exc.__context__, exc.__suppress_context__ = saved


def user_traceback(tb: Optional[types.TracebackType]) -> Optional[types.TracebackType]:
    """The same traceback without IPython's run_code frame and without rpyc's and our frames."""
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith(_IPYTHON_CORE):
        tb = tb.tb_next
    return _without_frames_of(tb, (_rpyc.RPYC_DIR, _OUR_DIR))


def _without_frames_of(tb: Optional[types.TracebackType], dirs: Tuple[str, ...]) -> Optional[types.TracebackType]:
    """``tb`` without the frames of code in ``dirs`` (``tb`` itself when it has none)."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    kept = [t for t in entries if not t.tb_frame.f_code.co_filename.startswith(dirs)]
    if len(kept) == len(entries):
        return entries[0] if entries else None
    new: Optional[types.TracebackType] = None
    for t in reversed(kept):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return new


def _display_exception(name: str, message: str) -> BaseException:
    cls = type(name, (Exception,), {"__module__": "builtins"})
    cls.__qualname__ = name
    return cls(message) if message else cls()


class Renderer:
    """Draws remote exceptions for one shell."""

    def __init__(self, shell: Any, registry: Registry) -> None:
        self.shell = shell
        self.registry = registry

    def record_of(self, exc: BaseException) -> Optional[Record]:
        """The record of the connection ``exc`` came over (found in its local traceback)."""
        return self.registry.record_of(_rpyc.connection_in_traceback(exc.__traceback__))

    def header(self, text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if _ipython.colors_on(self.shell) else text

    def structured_traceback(self, exc: BaseException, mode: str = "both") -> List[str]:
        """The whole chain of ``exc``, oldest first, as IPython's list of strings."""
        itb = self.shell.InteractiveTB
        if getattr(itb, "mode", "") == "Minimal":
            with _alone(exc):
                return itb.structured_traceback(type(exc), exc, None, tb_offset=0)
        out: List[str] = []
        for e, link in exception_chain(exc):
            out.extend(self.one(e, mode, last=e is exc))
            if link:
                out.append(f"\n{link}\n")
        return out

    def one(self, exc: BaseException, mode: str, last: bool = True) -> List[str]:
        itb = self.shell.InteractiveTB
        text = _rpyc.remote_tb_text(exc)
        record = self.record_of(exc) if text is not None else None
        if record is not None and record.last_cell_error is exc and mode == "both":
            mode = "remote"  # a %%rpyc cell: the local side is only the magic's plumbing
        out: List[str] = []
        if text is not None and mode in ("both", "remote"):
            model = parse(text)
            self.fill_sources(model, record)
            out.append(self.header(f"Remote traceback ({record.label() if record else 'server'}):"))
            out.extend(self.remote_section(model, exc))
        if text is None or mode in ("both", "local"):
            if text is not None:
                out.append(self.header("Local traceback:"))
            with _alone(exc):
                local = itb.structured_traceback(type(exc), exc, user_traceback(exc.__traceback__), tb_offset=0)
            out.extend(local)
        else:
            with _alone(exc):
                out.extend(itb.structured_traceback(type(exc), exc, None, tb_offset=0)[-1:])
        return out

    def remote_section(self, model: RemoteTraceback, exc: BaseException, nested: bool = False) -> List[str]:
        ltb = _ipython.list_tb(self.shell)
        out: List[str] = []
        for i, block in enumerate(model.blocks):
            final = i == len(model.blocks) - 1
            if block.raw is not None:
                out.append(block.raw)
            else:
                name, message = split_exception_line(block.exception)
                shown = ltb.structured_traceback(
                    type(_display_exception(name, message)), _display_exception(name, message),
                    list(block.frames), tb_offset=0,
                )
                if final and model.callback is None and not nested:
                    shown = shown[:-1]  # the local section ends with the same exception line
                if final and model.callback is not None:
                    shown = shown[:-1]  # the callback's own traceback says what was raised
                out.extend(shown)
                if final and not block.frames and model.callback is None:
                    out.append(self.operation_line(exc))
            if block.chain:
                out.append(f"\n{block.chain}\n")
        if model.callback is not None:
            out.append(self.header("Traceback of the local callback the server called:"))
            out.extend(self.remote_section(model.callback, exc, nested=True))
        out.extend(model.notes)
        return out

    def group(self, exc: GroupError, mode: str) -> List[str]:
        """Each failing member's error under a heading naming it, as ipyparallel's CompositeError
        draws them: the first TB_LIMIT in full, the others by name; all in ``exc.errors``."""
        out: List[str] = []
        errors = list(exc.errors.items())
        for name, error in errors[:TB_LIMIT]:
            out.append(self.header(f"[{name}:{exc.kind}]:"))
            if mode == "raw":
                out.extend(f"{type(error).__name__}: {error}".splitlines())
            elif is_remote(error):
                out.extend(self.structured_traceback(error, "remote"))
            else:
                out.append(f"{type(error).__name__}: {error}")
            out.append("")
        if len(errors) > TB_LIMIT:
            rest = ", ".join(f"{name} ({type(error).__name__})" for name, error in errors[TB_LIMIT:])
            out.append(f"... {len(errors) - TB_LIMIT} more: {rest}; every error is in _rpyc_results.errors\n")
        out.append(f"{type(exc).__name__}: {exc}")
        return out

    def operation_line(self, exc: BaseException) -> str:
        request = _rpyc.request_in_traceback(exc.__traceback__)
        if request is None:
            return "  (raised on the server outside any Python frame)\n"
        proxy, op, args = request
        cls = _rpyc.netref_class_name(proxy).rpartition(".")[2] if proxy is not None else "object"
        if op == "callattr" and args and isinstance(args[0], str):
            what = f"{cls}.{args[0]}"
        elif op == "call":
            what = f"a call to a {cls.replace('_', ' ')}"
        elif op in ("getattr", "setattr", "delattr") and args and isinstance(args[0], str):
            what = f"{op}({cls}, {args[0]!r})"
        else:
            what = f"{op} on a {cls}"
        return f"  (raised by {inert(what)} on the server, with no Python frame of its own)\n"

    def fill_sources(self, model: RemoteTraceback, record: Optional[Record]) -> None:
        """Fetch missing source lines of remote frames in one round trip (only if alive)."""
        missing = [f for b in model.blocks for f in b.frames if not f.line and not f.filename.startswith("<")]
        conn = record.conn if record is not None else None
        if not missing or conn is None or _rpyc.is_closed(conn) or _rpyc.peer_closed(conn):
            return
        lines = _rpyc.fetch_source_lines(conn, [(f.filename, f.lineno) for f in missing])
        for frame, line in zip(missing, lines or ()):
            if line:
                set_source_line(frame, inert(line.strip()))


class TracebackHook:
    """Wraps ``shell.showtraceback``: an error with a remote exception or one of ipyrpyc's own
    in its chain is drawn by :class:`Renderer`; everything else is passed on exactly as it came."""

    def __init__(self, shell: Any, registry: Registry, mode: Callable[[], str], patches: Patches) -> None:
        self.shell = shell
        self.renderer = Renderer(shell, registry)
        self.mode = mode
        self.patches = patches
        self.short_messages = ShortMessages(lambda: mode() != "raw", patches)

    def install(self) -> None:
        original = self.shell.showtraceback
        patches = self.patches

        def showtraceback(*args: Any, **kwargs: Any) -> Any:
            exc_tuple = args[0] if args else kwargs.get("exc_tuple")
            stb = self.drawing(exc_tuple) if patches.active else None
            if stb is None:
                if patches.active:
                    args, kwargs = self.without_our_frames(exc_tuple, args, kwargs)
                return original(*args, **kwargs)
            value = stb[0]
            try:
                value._render_traceback_ = lambda: stb[1]  # type: ignore[attr-defined]
            except Exception:
                return original(*args, **kwargs)
            try:
                return original(*args, **kwargs)
            finally:
                with contextlib.suppress(Exception):
                    del value._render_traceback_  # type: ignore[attr-defined]

        patches.setattr(self.shell, "showtraceback", showtraceback)

    def without_our_frames(self, exc_tuple: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """The same call, with a traceback that leaves out ipyrpyc's wrappers where an error of
        someone else's passed through one (a ``__repr__`` that raises inside a list IPython is
        printing): shown exactly as without the extension.  Anything else is left as it is."""
        info = _ipython.exc_info(self.shell, exc_tuple)
        if info is None:
            return args, kwargs
        etype, value, tb = info
        kept = _without_frames_of(tb, (_OUR_DIR,))
        if kept is tb:
            return args, kwargs
        if args:
            return ((etype, value, kept), *args[1:]), kwargs
        return args, {**kwargs, "exc_tuple": (etype, value, kept)}

    def drawing(self, exc_tuple: Any) -> Optional[Tuple[BaseException, List[str]]]:
        """(exception, IPython's list of strings) for a remote exception or one of ours, else None."""
        info = _ipython.exc_info(self.shell, exc_tuple)
        if info is not None and issubclass(type(info[1]), GroupError):  # type(): a local object is asked nothing
            try:
                for error in info[1].errors.values():
                    for e, _ in exception_chain(error):
                        self.short_messages.patch(e)
                return info[1], self.renderer.group(info[1], self.mode())
            except Exception:
                return None
        if info is None or self.mode() == "raw":
            return None
        value = info[1]
        try:
            chain = [e for e, _ in exception_chain(value)]
            if not any(is_remote(e) or is_ours(e) for e in chain):
                return None
            for e in chain:
                self.short_messages.patch(e)
            return value, self.renderer.structured_traceback(value, self.mode())
        except Exception:
            return None  # never in the way: IPython draws it as it would have


class ShortMessages:
    """While installed, ``str()`` of rpyc's remote exceptions is the message alone.

    rpyc appends the whole server traceback to ``str(exc)``; a notebook's error value
    should be the message, with the traceback drawn by :class:`TracebackHook`.
    ``_remote_tb`` keeps the text.  The classes are rpyc's own, made for remote errors.
    """

    def __init__(self, enabled: Callable[[], bool], patches: Patches) -> None:
        self.enabled = enabled
        self.patches = patches
        self.patched: set = set()
        patches.on_undo("short messages", self.patched.clear)

    def patch(self, exc: BaseException) -> None:
        cls = type(exc)
        if cls in self.patched or not _rpyc.is_rpyc_exception_class(cls) or not self.patches.active:
            return
        self.patched.add(cls)
        base = cls.__mro__[1]
        enabled, patches = self.enabled, self.patches
        original_str, original_repr = cls.__str__, cls.__repr__

        def __str__(self: BaseException) -> str:
            if not (patches.active and enabled()):
                return original_str(self)
            try:
                if isinstance(self, OSError) and self.filename is not None and self.filename2 is None:
                    return inert(f"[Errno {self.errno}] {self.strerror}: {self.filename!r}")
                return inert(base.__str__(self))
            except Exception:
                return "<unprintable exception>"

        def __repr__(self: BaseException) -> str:
            if not (patches.active and enabled()):
                return original_repr(self)
            try:
                return inert(base.__repr__(self))
            except Exception:
                return f"<{base.__name__}>"

        patches.setattr(cls, "__str__", __str__)
        patches.setattr(cls, "__repr__", __repr__)
