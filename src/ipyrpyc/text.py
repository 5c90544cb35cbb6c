"""Text that came from elsewhere, made safe to show."""

from __future__ import annotations

import re

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
