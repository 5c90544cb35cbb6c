"""The model of a remote traceback.

rpyc gives a remote exception the server's formatted traceback as text
(``exc._remote_tb``).  :func:`parse` turns that text into a plain model once (chained
exceptions, tracebacks of local callbacks the server called, exception groups, rpyc's
version notes), with rpyc's and ipyrpyc's frames left out.  Drawing it is
:mod:`.remote_errors`' job.
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from typing import List, Optional, Tuple

from .text import inert

CHAIN_MESSAGES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_NESTED = re.compile(r"^={5,} Remote Traceback \(\d+\) ={5,}[ \t]*$", re.M)
_VERSION_WARNING = re.compile(r"^WARNING: Remote is on RPyC .*$", re.M)
_FRAME = re.compile(r'^  File "(?P<file>[^"\n]*)", line (?P<line>\d+), in (?P<name>.*)$')
# rpyc's own frames, and the loader of ipyrpyc's server program (which leaves its own frames out)
_PLUMBING = re.compile(r"[\\/]rpyc[\\/](core|utils|lib|cli)[\\/]|^<ipyrpyc-remote\b")


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


def set_source_line(frame: traceback.FrameSummary, text: str) -> None:
    """Give a frame the source line fetched for it.  FrameSummary has no public setter: Python
    3.13 keeps the text in ``_lines`` (with its dedented copy), earlier Pythons in ``_line``."""
    if "_lines" in getattr(traceback.FrameSummary, "__slots__", ()):
        frame._lines = text + "\n"  # type: ignore[attr-defined]
        frame._lines_dedented = None  # type: ignore[attr-defined]
    else:
        frame._line = text  # type: ignore[attr-defined]


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
            filename = body[len('File "'):].partition('"')[0]  # the pattern anchors <ipyrpyc-remote…>
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
