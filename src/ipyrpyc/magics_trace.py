"""``%%rpyc_trace`` and ``%rpyc_trace on|off``: every request a cell sends, and what it cost.

The requests are recorded by :class:`~.wire.Trace` (instance-level wrappers of a
connection's own message methods, present only while tracing) and shown here: a table
of requests, totals per connection, and the hot spots folded together with a hint.
"""

from __future__ import annotations

import html
from typing import Any, List, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from . import _ipython, _rpyc
from .arguments import parse
from .magics import DEFAULT_NAME, MagicsPart
from .text import inert
from .wire import Totals, Trace, Traced

HOT_SPOTS = 5  # groups shown
HOT_FROM = 3  # requests of one kind before they are a hot spot
HINT_FROM = 10  # requests of one kind in one cell before a hint applies
ITEM_WORDS = ("next item", "iterate", "get item", "len", "in", "iterate (buffered)", "slice")


def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _count(totals: Totals) -> str:
    """``12 requests + 3 del, 1 callback``."""
    out = f"{totals.requests:,} request{'s' if totals.requests != 1 else ''}"
    if totals.deletes:
        out += f" + {totals.deletes:,} del"
    if totals.callbacks:
        out += f", {totals.callbacks:,} callback{'s' if totals.callbacks != 1 else ''}"
    return out


def hint(words: str, origin: str, callback: bool, count: int) -> Optional[str]:
    """What to do about many requests of one kind, where something can be done."""
    if count < HINT_FROM:
        return None
    if callback:
        return "each print on the server is a message to this kernel" if origin == "live output" else None
    if origin == "rpyc: netref released":
        return "every netref the loop made is released with a message of its own"
    if origin:
        return None
    if words in ITEM_WORDS:
        return ("one round trip per item: copy the data once with %%rpyc --pull NAME, "
                "or run the loop on the server with %%rpyc")
    return "one round trip each time: move the loop into %%rpyc (the whole cell is one round trip)"


class TraceReport:
    """What ``%%rpyc_trace`` shows: HTML in notebooks, text in terminals."""

    columns = ("#", "connection", "request", "on", "name", "by", "sent", "received", "ms")

    def __init__(self, trace: Trace, max_rows: int, untraced: Tuple[str, ...] = ()) -> None:
        self.trace = trace
        self.max_rows = max_rows
        self.untraced = untraced

    # -- the parts ---------------------------------------------------------------------------
    def headline(self) -> str:
        t = self.trace
        if not t.count:
            names = ", ".join(t.labels)
            return f"rpyc trace: no requests{' on ' + names if names else ''} ({_ms(t.seconds)} ms)"
        total = Totals()
        for totals in t.totals.values():
            total.requests += totals.requests
            total.deletes += totals.deletes
            total.callbacks += totals.callbacks
        return f"rpyc trace: {_count(total)} in {_ms(t.seconds)} ms"

    def connection_rows(self) -> List[Tuple[str, ...]]:
        totals = self.trace.totals
        names = self.trace.labels + [n for n in totals if n not in self.trace.labels]
        return [(name, _count(tot), _size(tot.sent), _size(tot.received), _ms(tot.seconds))
                for name, tot in ((n, totals.get(n, Totals())) for n in names)]

    def hot_spots(self) -> List[Tuple[str, Optional[str]]]:
        """("1,000 × get attribute `append` on list (conn): 412 ms", hint), slowest first."""
        groups = [(key, tot) for key, tot in self.trace.groups.items()
                  if tot.requests + tot.deletes + tot.callbacks >= HOT_FROM]
        groups.sort(key=lambda kv: (-(kv[1].seconds + kv[1].serving),
                                    -(kv[1].requests + kv[1].deletes + kv[1].callbacks)))
        out = []
        for (connection, callback, words, on, name, origin), tot in groups[:HOT_SPOTS]:
            n = tot.requests + tot.deletes + tot.callbacks
            what = f"{n:,} × {'callback: ' if callback else ''}{words}"
            if name:
                what += f" `{inert(name)}`"
            if on:
                what += f" on {inert(on)}"
            by = f", {origin}" if origin and origin not in ("callback",) else ""
            out.append((f"{what} ({connection}{by}): {_ms(tot.seconds + tot.serving)} ms",
                        hint(words, origin, callback, n)))
        return out

    def rows(self) -> List[Tuple[str, ...]]:
        return [self._row(r) for r in self.trace.requests[: self.max_rows]]

    @staticmethod
    def _row(r: Traced) -> Tuple[str, ...]:
        words = ("← " if r.callback else "") + r.words + (" (raised)" if r.failed else "")
        by = r.origin or "your code"
        return (str(r.n), r.connection, words, inert(r.request.on), inert(r.request.name or ""), by,
                f"{r.sent:,}", f"{r.received:,}", _ms(r.seconds))

    def more(self) -> Optional[str]:
        shown = min(self.max_rows, len(self.trace.requests))
        if self.trace.count <= shown:
            return None
        return (f"… {self.trace.count - shown:,} more not shown (the first {shown:,} of {self.trace.count:,}; "
                "RpycMagics.trace_max_rows); the totals count every one")

    def note(self) -> Optional[str]:
        if not self.untraced:
            return None
        names = ", ".join(self.untraced)
        return f"not traced: {names} (%%rpyc_trace NAME … names them; %rpyc_trace on traces every connection)"

    # -- text ----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        lines = [self.headline()]
        if self.trace.count:
            lines += ["", "per connection:"]
            lines += _text_table(("connection", "requests", "sent", "received", "ms waiting"),
                                 self.connection_rows(), indent="  ")
            spots = self.hot_spots()
            if spots:
                lines += ["", "hot spots:"]
                for text, advice in spots:
                    lines.append(f"  {text}")
                    if advice:
                        lines.append(f"    → {advice}")
            lines += ["", "requests:"]
            lines += _text_table(self.columns, self.rows(), indent="  ", right=(0, 6, 7, 8))
            if self.more():
                lines.append(f"  {self.more()}")
        if self.note():
            lines += ["", self.note() or ""]
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    # -- HTML ----------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        e = html.escape
        parts = [f'<div class="ipyrpyc-trace"><p><b>{e(self.headline())}</b></p>']
        if self.trace.count:
            parts.append(_html_table(("connection", "requests", "sent", "received", "ms waiting"),
                                     self.connection_rows(), "ipyrpyc-trace-totals"))
            spots = self.hot_spots()
            if spots:
                items = "".join(
                    f"<li>{_html_code(text)}" + (f"<br><i>→ {e(advice)}</i>" if advice else "") + "</li>"
                    for text, advice in spots)
                parts.append(f"<p>Hot spots:</p><ul class=\"ipyrpyc-trace-hot\">{items}</ul>")
            parts.append(_html_table(self.columns, self.rows(), "ipyrpyc-trace-requests"))
            if self.more():
                parts.append(f"<p>{e(self.more() or '')}</p>")
        if self.note():
            parts.append(f"<p>{e(self.note() or '')}</p>")
        parts.append("</div>")
        return "".join(parts)


def _text_table(head: Tuple[str, ...], rows: List[Tuple[str, ...]], indent: str = "",
                right: Tuple[int, ...] = ()) -> List[str]:
    table = [head, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]

    def line(r: Tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return (indent + "  ".join(cells)).rstrip()

    return [line(head), indent + "  ".join("-" * w for w in widths), *[line(r) for r in rows]]


def _html_table(head: Tuple[str, ...], rows: List[Tuple[str, ...]], css: str) -> str:
    e = html.escape
    th = "".join(f"<th>{e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _html_code(text: str) -> str:
    """Escaped text with its `backquoted` parts as <code>."""
    pieces = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(pieces))


@magics_class
class TraceMagics(MagicsPart):
    """See the wire: every request a cell sends to the server."""

    def __init__(self, shell: Any, settings: Any) -> None:
        super().__init__(shell, settings)
        self.live: Optional[Trace] = None  # %rpyc_trace on
        self.last: Optional[Trace] = None  # the last trace shown
        self._depth = 0

    @magic_arguments()
    @argument("names", nargs="*", metavar="NAME",
              help="cell: the connections to trace (default: conn, else every open one); line: on or off")
    @line_cell_magic
    def rpyc_trace(self, line: str = "", cell: Optional[str] = None) -> None:
        """Show every request sent over ipyrpyc's connections, and what it cost.

        As a cell magic, runs the cell (its output and errors are its own, as without
        the magic) and then shows a table: each request in plain words (get attribute,
        call, next item, delete reference …) with the remote type, the attribute or
        method, the bytes sent and received and the milliseconds until the answer;
        totals per connection; and the hot spots folded together, with a hint where one
        applies. ipyrpyc's own requests (display, completion, ``%%rpyc``) are labelled
        as such, requests the server sends back (callbacks, live output) are marked ←.

        ``%rpyc_trace on`` shows the same after every cell, for every connection,
        until ``%rpyc_trace off``; off, nothing of the trace is left on any connection.

        Examples::

            %%rpyc_trace
            total = 0
            for x in rsys.path:
                total += len(x)

            %rpyc_trace on
        """
        args = parse(self.rpyc_trace, line)
        if cell is None:
            self._switch(args.names)
            return
        if self.live is not None:  # every cell is traced already: its report follows the cell
            _ipython.run_nested_cell(self.shell, cell)
            return
        targets, untraced = self._targets(args.names)
        trace = Trace()
        try:
            for label, conn, helper in targets:
                trace.attach(conn, label, helper)
            _ipython.run_nested_cell(self.shell, cell)
        finally:
            for _, conn, _ in targets:  # what the server sent by the end of the cell belongs to it
                _rpyc.serve_arrived(conn)
            trace.close()
        self.last = trace
        display(TraceReport(trace, self.settings.trace_max_rows, untraced))

    # -- which connections -------------------------------------------------------------------------
    def _targets(self, names: List[str]) -> Tuple[List[Tuple[str, Any, Any]], Tuple[str, ...]]:
        """(label, connection, helper) to trace, and the open connections left untraced."""
        sessions = self.registry.sessions
        if any(n in ("on", "off") for n in names) and not all(n in sessions for n in names):
            raise UsageError("%%rpyc_trace takes connection names; %rpyc_trace on|off (one %) traces every cell")
        if names:
            chosen = [self.session(n) for n in dict.fromkeys(names)]
        elif DEFAULT_NAME in sessions:
            chosen = [sessions[DEFAULT_NAME]]
        else:
            chosen = list(sessions.values())
        if not chosen:
            raise UsageError("no rpyc connection is open; open one with %rpyc_connect")
        for s in chosen:
            if s.conn is None or _rpyc.is_closed(s.conn):
                raise UsageError(f"{s.name} is not connected: %rpyc_reconnect {s.name}")
        untraced = tuple(n for n, s in sessions.items() if s not in chosen)
        return [(s.name, s.conn, s.helper) for s in chosen], untraced

    def _open_connections(self) -> List[Tuple[str, Any, Any]]:
        return [(r.name, r.conn, r.helper) for r in self.registry.open_records()]

    # -- line mode ---------------------------------------------------------------------------------
    def _switch(self, words: List[str]) -> None:
        if len(words) > 1 or (words and words[0] not in ("on", "off")):
            given = " ".join(words)
            raise UsageError(f"%rpyc_trace takes on or off, not {given!r} "
                             "(%%rpyc_trace NAME … as a cell magic traces one cell)")
        if not words:
            if self.live is None:
                print("rpyc tracing is off (%rpyc_trace on traces every cell; %%rpyc_trace one cell)")
            else:
                traced = ", ".join(tap.label for tap in self.live.taps if tap.active) or "none open"
                print(f"rpyc tracing is on: every cell shows its requests (connections: {traced}); "
                      "%rpyc_trace off stops")
            return
        if words[0] == "on":
            self.on()
            traced = ", ".join(tap.label for tap in self.live.taps) if self.live else ""
            print(f"rpyc tracing on: each cell shows its requests on every connection "
                  f"({traced or 'none open yet'}); %rpyc_trace off stops")
        else:
            was = self.live is not None
            self.off()
            print("rpyc tracing off: nothing of it is left on any connection" if was else "rpyc tracing was off")

    def on(self) -> None:
        if self.live is not None:
            return
        self.live = Trace()
        self._depth = 0
        self._follow()
        self.shell.events.register("pre_run_cell", self._pre_run_cell)
        self.shell.events.register("post_run_cell", self._post_run_cell)

    def off(self) -> None:
        live, self.live = self.live, None
        for name, callback in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            if callback in self.shell.events.callbacks.get(name, ()):
                self.shell.events.unregister(name, callback)
        if live is not None:
            live.close()

    def _follow(self) -> None:
        """Tap the connections opened since, let go of the closed ones."""
        live = self.live
        if live is None:
            return
        for tap in list(live.taps):
            if tap.conn is None or _rpyc.is_closed(tap.conn):
                live.detach(tap)
        for label, conn, helper in self._open_connections():
            if not live.traces(conn):
                live.attach(conn, label, helper)

    def _pre_run_cell(self, *args: Any) -> None:
        self._depth += 1
        if self._depth == 1:
            self._follow()

    def _post_run_cell(self, *args: Any) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._depth or self.live is None:
            return
        done = self.live.take()
        self._follow()
        if done.count:
            self.last = done
            display(TraceReport(done, self.settings.trace_max_rows))
