"""``%rpyc_info``: what a netref is made of; ``%rpyc_who``: the server's namespace."""

from __future__ import annotations

import html
import textwrap
from typing import Any, List, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import _rpyc
from .arguments import parse
from .magics import MagicsPart
from .text import inert

WRAP = 79  # columns of the dir() listing: a notebook would otherwise wrap inside names
WHO_TEXT = 80  # longest name, type or summary %rpyc_who shows


class WhoTable:
    """What ``%rpyc_who`` shows: HTML in notebooks, text in terminals."""

    columns = ("name", "type", "summary")

    def __init__(self, title: str, rows: List[Tuple[str, str, str]], footer: Optional[str] = None) -> None:
        self.title = title
        self.rows = [tuple(inert(str(v)) for v in row) for row in rows]
        self.footer = footer

    def __repr__(self) -> str:
        table = [self.columns, *self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(3)]
        lines = [self.title, ""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        lines.insert(3, "  ".join("-" * w for w in widths))
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        footer = f"<p>{e(self.footer)}</p>" if self.footer else ""
        return (f'<div class="ipyrpyc-who"><p>{e(self.title)}</p><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>{footer}</div>")


@magics_class
class LookMagics(MagicsPart):
    """Look at netrefs and at the server."""

    @magic_arguments()
    @argument("expression", nargs="+", help="an expression whose value is a netref, e.g. rsys.path")
    @line_magic
    def rpyc_info(self, line: str = "") -> None:
        """Show the plumbing of a netref: its own slots, connection, remote id, type and refcount.

        This is what ``dir()`` showed in the RPyC tutorial (``____conn__``, ``____oid__``,
        called ``____id_pack__`` since rpyc 4); the remote ``dir()`` follows, one round trip.
        Usage: ``%rpyc_info rsys.path``
        """
        args = parse(self.rpyc_info, line)
        expression = " ".join(args.expression)
        try:
            obj = self.shell.ev(expression)
        except Exception as e:
            raise UsageError(f"cannot evaluate {expression!r}: {type(e).__name__}: {e}") from None
        if not _rpyc.is_netref(obj):
            raise UsageError(f"{expression} is a local {type(obj).__name__}, not a netref")
        conn = _rpyc.connection_of(obj)
        type_name, type_id, obj_id = _rpyc.id_pack(obj)
        record = self.registry.record_of(conn)
        where = f"{record.name} ({record.address})" if record is not None and record.owner else (
            _rpyc.peer_address(conn) or "?")
        print(f"{expression}: netref to a remote {type_name}")
        closed = " (closed)" if conn is None or _rpyc.is_closed(conn) else ""
        print(f"  ____conn__      the connection: {where}{closed}")
        print(f"  ____id_pack__   ({type_name!r}, {type_id}, {obj_id}): remote type, id of the type, "
              "id of the object (the tutorial's ____oid__)")
        print(f"  ____refcount__  {_rpyc.refcount(obj)}: references this client holds to the remote object")
        print(f"  netref slots    {', '.join(_rpyc.netref_slots())}")
        helper = self.registry.helper_of(record)
        names: Any = ()
        if helper is not None:
            try:
                names = helper.complete(obj, (), 5000, self.settings.display_timeout)[1]
            except Exception as e:
                names = f"<no answer: {type(e).__name__}>"
        if isinstance(names, tuple):
            listing = textwrap.fill(", ".join(repr(str(n)) for n in names), WRAP, initial_indent="    ",
                                    subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
            print(f"  dir() on the server ({len(names)} names):\n{listing}")
        else:
            print(f"  dir() on the server: {names}")

    @magic_arguments()
    @argument("words", nargs="*", metavar="[NAME] [PATTERN]",
              help="a connection (default: conn, else the only one) and a glob of names (default: all)")
    @line_magic
    def rpyc_who(self, line: str = "") -> Optional[WhoTable]:
        """The server-side namespace of a connection, as ``%whos`` shows the local one.

        Lists what ``%%rpyc`` cells and ``conn.execute`` defined in ``conn.namespace``:
        each name with its type and a short summary (length, shape and dtype, size in
        bytes where that is cheap to know), in one round trip. Names starting with ``_``
        are left out unless PATTERN starts with ``_``; at most ``RpycMagics.who_max_rows``
        rows. Usage: ``%rpyc_who``, ``%rpyc_who lab``, ``%rpyc_who df*``, ``%rpyc_who lab arr_?``
        """
        words = parse(self.rpyc_who, line).words
        if len(words) > 2:
            raise UsageError(f"%rpyc_who takes a connection name and a pattern, not {len(words)} words")
        sessions = self.registry.sessions
        name = pattern = None
        if len(words) == 2:
            name, pattern = words
        elif words and words[0] in sessions:
            name = words[0]
        elif words:
            pattern = words[0]
        session = self.default_session(name)
        helper = session.helper
        if session.conn is None or _rpyc.is_closed(session.conn):
            raise UsageError(f"{session.name} is not connected: %rpyc_reconnect {session.name}")
        if helper is None:
            raise UsageError(f"{session.address} cannot run ipyrpyc's helper, so %rpyc_who is not available there")
        limit = self.settings.who_max_rows
        try:
            names, matching, rows = helper.who(session.conn.namespace, pattern, limit, WHO_TEXT,
                                               self.settings.display_timeout)
        except Exception as e:
            raise UsageError(f"%rpyc_who {session.name}: no answer from the server ({_failure(e)})") from None
        where = f"{session.name} ({session.address})"
        if pattern is not None and not matching:
            other = "" if len(words) == 2 or not pattern.isidentifier() else (  # a mistyped connection name?
                f"; no connection is named {pattern!r} either (open: {', '.join(sessions)})")
            raise UsageError(f"no name in {session.name}'s server namespace matches {pattern!r} "
                             f"(of {names:,} names){other}")
        if not names:
            print(f"{where}: the server namespace is empty (%%rpyc cells and {session.name}.execute fill it)")
            return None
        title = f"{where}: {matching:,} of {names:,} names" + (f" matching {pattern!r}" if pattern else "")
        footer = None
        if matching > len(rows):
            footer = f"… {matching - len(rows):,} more not shown (RpycMagics.who_max_rows = {limit})"
        return WhoTable(title, list(rows), footer)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, _rpyc.AsyncResultTimeout):
        return "no answer in time"
    return type(exc).__name__
