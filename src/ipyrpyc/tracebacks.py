"""Remote exceptions as notebook errors.

rpyc gives a remote exception the server's formatted traceback as text
(``exc._remote_tb``).  :func:`parse` turns that text into a plain model once;
:class:`Renderer` draws it with IPython's own traceback classes, so ``%colors``
and ``%xmode`` apply, with rpyc's and ipyrpyc's frames left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import traceback
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import _compat
from .errors import SessionError

CHAIN_MESSAGES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_NESTED = re.compile(r"^={5,} Remote Traceback \(\d+\) ={5,}[ \t]*$", re.M)
_VERSION_WARNING = re.compile(r"^WARNING: Remote is on RPyC .*$", re.M)
_FRAME = re.compile(r'^  File "(?P<file>[^"\n]*)", line (?P<line>\d+), in (?P<name>.*)$')
_PLUMBING = re.compile(r"[\\/]rpyc[\\/](core|utils|lib|cli)[\\/]|^<ipyrpyc-helper>$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_OUR_DIR = os.path.dirname(os.path.abspath(__file__))
_IPYTHON_CORE = os.path.join("IPython", "core", "interactiveshell.py")

MODES = ("both", "remote", "local", "raw")


def inert(text: str) -> str:
    """Remote text as data: control characters (terminal escapes included) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# -- model --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Block:
    """One traceback of a (possibly chained) remote exception."""

    frames: List[traceback.FrameSummary]
    exception: str  # "Type: message" as the server printed it
    raw: Optional[str] = None  # verbatim text where it is not a plain traceback (exception groups)
    chain: Optional[str] = None  # the message that links this block to the next one


@dataclasses.dataclass
class RemoteTraceback:
    blocks: List[Block]
    callback: Optional["RemoteTraceback"] = None  # a local callback's traceback, as the server saw it
    notes: List[str] = dataclasses.field(default_factory=list)


_MAX_NESTING = 32  # callbacks within callbacks; deeper text is kept verbatim (no unbounded recursion)


def parse(text: str, _depth: int = 0) -> RemoteTraceback:
    """Parse rpyc's remote traceback text; never raises."""
    text = inert(text.replace("\r\n", "\n")).replace("\\x0a", "\n").replace("\\x09", "\t")
    notes = [m.group(0) for m in _VERSION_WARNING.finditer(text)]
    text = _VERSION_WARNING.sub("", text)
    m = _NESTED.search(text)
    head, nested = (text[: m.start()], text[m.end():]) if m else (text, "")
    blocks: List[Block] = []
    pieces = re.split("(" + "|".join(map(re.escape, CHAIN_MESSAGES)) + ")", head)
    for i in range(0, len(pieces), 2):
        if not pieces[i].strip():
            continue
        block = _parse_block(pieces[i])
        if i + 1 < len(pieces):
            block.chain = pieces[i + 1]
        blocks.append(block)
    if not nested.strip():
        callback = None
    elif _depth < _MAX_NESTING:
        callback = parse(nested, _depth + 1)
    else:
        callback = RemoteTraceback([Block([], "", raw=nested.strip("\n"))])
    return RemoteTraceback(blocks, callback, notes)


def _parse_block(text: str) -> Block:
    lines = text.strip("\n").splitlines()
    if any(line.lstrip().startswith(("| ", "+-", "+---")) for line in lines):
        return Block([], lines[-1].strip() if lines else "", raw="\n".join(_without_plumbing(lines)))
    i = 1 if lines and lines[0].startswith("Traceback (most recent call last)") else 0
    frames: List[traceback.FrameSummary] = []
    while i < len(lines):
        m = _FRAME.match(lines[i])
        if not m:
            break
        i += 1
        source = ""
        while i < len(lines) and lines[i].startswith("    "):
            stripped = lines[i].strip()
            if not source and stripped and not set(stripped) <= set("^~ "):
                source = stripped
            i += 1
        if not _PLUMBING.search(m["file"]):
            # line="" (not None): never look a server's file name up in the local linecache
            frames.append(traceback.FrameSummary(m["file"], int(m["line"]), m["name"], line=source,
                                                 lookup_line=False))
    return Block(frames, "\n".join(lines[i:]).strip())


def _without_plumbing(lines: List[str]) -> List[str]:
    """Drop rpyc's frames (and their source lines) from an exception-group drawing."""
    out: List[str] = []
    skip_deeper_than: Optional[int] = None
    for line in lines:
        body = line.lstrip(" |")
        indent = len(line) - len(body)
        if body.startswith('File "'):
            filename = body[len('File "'):].partition('"')[0]  # the pattern anchors <ipyrpyc-helper>
            skip_deeper_than = indent if _PLUMBING.search(filename) else None
            if skip_deeper_than is not None:
                continue
        elif skip_deeper_than is not None and indent > skip_deeper_than:
            continue
        else:
            skip_deeper_than = None
        out.append(line)
    return out


def split_exception_line(text: str) -> Tuple[str, str]:
    first, _, rest = text.partition("\n")
    name, sep, message = first.partition(": ")
    if not sep or " " in name:
        return (first.rstrip(":"), rest) if " " not in first else ("Exception", text)
    return name, message + ("\n" + rest if rest else "")


@dataclasses.dataclass
class Origin:
    """Where a remote exception came from, recorded when it arrived."""

    address: Optional[str] = None
    pid: Optional[int] = None
    conn_ref: Any = None  # weakref to the connection

    @property
    def conn(self) -> Any:
        return self.conn_ref() if self.conn_ref is not None else None

    def label(self) -> str:
        parts = [p for p in (self.address, f"pid {self.pid}" if self.pid else None) if p]
        return ", ".join(parts) if parts else "server"


# -- rendering ------------------------------------------------------------------------------------
def is_remote(exc: BaseException) -> bool:
    return _compat.remote_tb_text(exc) is not None


def came_from_a_call(exc: BaseException) -> bool:
    """ipyrpyc's errors about a connection, and a Ctrl-C that interrupted a remote call."""
    return isinstance(exc, SessionError) or getattr(exc, "_ipyrpyc_call", False) is True


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
    kept = []
    leading = True
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if leading and filename.endswith(_IPYTHON_CORE):
            tb = tb.tb_next
            continue
        leading = False
        if not (filename.startswith(_compat.RPYC_DIR) or filename.startswith(_OUR_DIR)):
            kept.append(tb)
        tb = tb.tb_next
    new: Optional[types.TracebackType] = None
    for t in reversed(kept):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return new


def _colors_on(shell: Any) -> bool:
    return str(getattr(shell, "colors", "nocolor")).lower() != "nocolor"


def _list_tb(shell: Any) -> Any:
    """An IPython ListTB coloured like the shell's tracebacks (IPython 8 and 9)."""
    from IPython.core.ultratb import ListTB

    tb = ListTB()
    itb = shell.InteractiveTB
    if hasattr(tb, "set_theme_name") and hasattr(itb, "_theme_name"):
        tb.set_theme_name(itb._theme_name)
    elif hasattr(itb, "color_scheme_table"):
        tb.set_colors(itb.color_scheme_table.active_scheme_name)
    return tb


def _display_exception(name: str, message: str) -> BaseException:
    cls = type(name, (Exception,), {"__module__": "builtins"})
    cls.__qualname__ = name
    return cls(message) if message else cls()


class Renderer:
    """Draws remote exceptions for one shell."""

    def __init__(self, shell: Any, origin_of: Callable[[BaseException], Origin]) -> None:
        self.shell = shell
        self.origin_of = origin_of

    def header(self, text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if _colors_on(self.shell) else text

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
        text = _compat.remote_tb_text(exc)
        if text is not None and getattr(exc, "_ipyrpyc_cell", False) and mode == "both":
            mode = "remote"  # a %%rpyc cell: the local side is only the magic's plumbing
        out: List[str] = []
        if text is not None and mode in ("both", "remote"):
            origin = self.origin_of(exc)
            model = parse(text)
            self.fill_sources(model, origin)
            out.append(self.header(f"Remote traceback ({origin.label()}):"))
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
        ltb = _list_tb(self.shell)
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

    def operation_line(self, exc: BaseException) -> str:
        request = _compat.request_in_traceback(exc.__traceback__)
        if request is None:
            return "  (raised on the server outside any Python frame)\n"
        proxy, op, args = request
        cls = _compat.netref_class_name(proxy).rpartition(".")[2] if proxy is not None else "object"
        if op == "callattr" and args and isinstance(args[0], str):
            what = f"{cls}.{args[0]}"
        elif op == "call":
            what = f"a call to a {cls.replace('_', ' ')}"
        elif op in ("getattr", "setattr", "delattr") and args and isinstance(args[0], str):
            what = f"{op}({cls}, {args[0]!r})"
        else:
            what = f"{op} on a {cls}"
        return f"  (raised by {inert(what)} on the server, with no Python frame of its own)\n"

    def fill_sources(self, model: RemoteTraceback, origin: Origin) -> None:
        """Fetch missing source lines of remote frames in one round trip (only if alive)."""
        missing = [f for b in model.blocks for f in b.frames if not f.line and not f.filename.startswith("<")]
        conn = origin.conn
        if not missing or conn is None or getattr(conn, "closed", True) or _compat.peer_closed(conn):
            return
        lines = _compat.fetch_source_lines(conn, [(f.filename, f.lineno) for f in missing])
        for frame, line in zip(missing, lines or ()):
            if line:
                frame._line = inert(line.strip())  # FrameSummary keeps its text in _line


class ExceptionHook:
    """The shell's custom exception handler for everything that came over an rpyc connection.

    It chains to a handler that was installed before it, never raises (any failure falls
    back to IPython's own rendering) and renders through ``shell.showtraceback`` so that
    ``sys.last_value``, ``%debug``, ``%pdb`` and ipykernel's error messages work as usual.
    """

    def __init__(self, shell: Any, origin_of: Callable[[BaseException], Origin],
                 mode: Callable[[], str]) -> None:
        self.shell = shell
        self.renderer = Renderer(shell, origin_of)
        self.mode = mode
        self.previous: Optional[Tuple[tuple, Any]] = None

    def install(self) -> None:
        if self.previous is not None:
            return
        shell = self.shell
        self.previous = (shell.custom_exceptions, shell.CustomTB)
        shell.set_custom_exc((BaseException,), self.handle)

    def uninstall(self) -> None:
        if self.previous is None:
            return
        self.shell.custom_exceptions, self.shell.CustomTB = self.previous
        self.previous = None

    def handle(self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> Any:
        previous_types, previous_handler = self.previous or ((), None)
        if previous_types and issubclass(etype, previous_types):
            return previous_handler(etype, value, tb, tb_offset)
        stb = None
        try:
            chain = [e for e, _ in exception_chain(value)]
            if self.mode() != "raw" and any(is_remote(e) or came_from_a_call(e) for e in chain):
                stb = self.renderer.structured_traceback(value, self.mode())
        except Exception:
            stb = None
        set_attr = False
        if stb is not None:
            try:
                value._render_traceback_ = lambda: stb  # type: ignore[attr-defined]
                set_attr = True
            except Exception:
                pass
        try:
            shell.showtraceback((etype, value, tb), running_compiled_code=True)
        finally:
            if set_attr:
                with contextlib.suppress(Exception):
                    del value._render_traceback_  # type: ignore[attr-defined]
        return None


class ShortMessages:
    """While installed, ``str()`` of rpyc's remote exceptions is the message alone.

    rpyc appends the whole server traceback to ``str(exc)``; a notebook's error value
    should be the message, with the traceback drawn by :class:`ExceptionHook`.
    ``_remote_tb`` keeps the text.
    """

    def __init__(self, enabled: Callable[[], bool]) -> None:
        self.enabled = enabled
        self.patched: Dict[type, Tuple[Any, Any]] = {}

    def patch(self, exc: BaseException) -> None:
        cls = type(exc)
        if cls in self.patched or not _compat.is_rpyc_exception_class(cls):
            return
        original_str, original_repr = cls.__dict__.get("__str__"), cls.__dict__.get("__repr__")
        base = cls.__mro__[1]
        enabled = self.enabled

        def __str__(self: BaseException) -> str:
            if not enabled():
                return original_str(self)
            try:
                if isinstance(self, OSError) and self.filename is not None and self.filename2 is None:
                    return inert(f"[Errno {self.errno}] {self.strerror}: {self.filename!r}")
                return inert(base.__str__(self))
            except Exception:
                return "<unprintable exception>"

        def __repr__(self: BaseException) -> str:
            if not enabled():
                return original_repr(self)
            try:
                return inert(base.__repr__(self))
            except Exception:
                return f"<{base.__name__}>"

        cls.__str__, cls.__repr__ = __str__, __repr__  # type: ignore[method-assign]
        self.patched[cls] = (original_str, original_repr)

    def restore(self) -> None:
        for cls, (original_str, original_repr) in self.patched.items():
            cls.__str__, cls.__repr__ = original_str, original_repr  # type: ignore[method-assign]
        self.patched.clear()
