"""Text that came from elsewhere, made safe to show."""

from __future__ import annotations

import html
import re
from typing import Any, List, Tuple

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def inert(text: str) -> str:
    """Remote text as data: control characters (terminal escapes included) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def first_line(exc: BaseException) -> str:
    """A one-line reason for an exception (OS errors by their strerror, lower-cased)."""
    import socket

    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, (socket.timeout, TimeoutError)):  # rpyc's AsyncResultTimeout is TimeoutError
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    lines = str(exc).strip().splitlines()
    return lines[0] if lines and lines[0] else type(exc).__name__


class Table:
    """Rows of text under column names: HTML in notebooks, aligned text in terminals."""

    columns: Tuple[str, ...] = ()
    empty = "Nothing to show."
    css_class = "ipyrpyc-table"

    def __init__(self, rows: List[Tuple[str, ...]]) -> None:
        self.rows = rows

    def __repr__(self) -> str:
        if not self.rows:
            return self.empty
        table = [self.columns, *self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        return f'<table class="{self.css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
