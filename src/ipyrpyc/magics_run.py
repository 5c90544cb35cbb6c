"""``%%rpyc`` and ``%rpyc_debug``: code that runs on the server."""

from __future__ import annotations

import sys
from typing import Any, List, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import _rpyc, transfer
from .arguments import check_timeout, names_list, parse
from .errors import TransferError
from .magics import MagicsPart


def checked_cell(args: Any, cell: str) -> Tuple[List[str], List[str]]:
    """The ``--push`` and ``--pull`` names of a ``%%rpyc`` cell, after checking its arguments and its
    source (a ``UsageError`` for anything that cannot be sent)."""
    try:
        push = names_list(args.push, "--push")
        pull = names_list(args.pull, "--pull")
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_timeout(args.timeout)
    if "\0" in cell:
        raise UsageError("the cell contains a null character (\\x00), which Python source cannot contain")
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"the cell contains {cell[e.start]!r}, a lone surrogate, which UTF-8 source cannot "
                         "contain") from None
    return push, pull


@magics_class
class RunMagics(MagicsPart):
    """Run code on the server, and debug it there."""

    @magic_arguments()
    @argument("name", nargs="?", help="connection to run on (default: the only one); a group, or a,b,c: "
                                      "all of them at once")
    @argument("--all", action="store_true", help="run on every open connection at once")
    @argument("--timeout", "-t", type=float, help="seconds this cell may take (default: the connection's)")
    @argument("--push", default="", metavar="a,b", help="local variables to copy to the server first")
    @argument("--pull", default="", metavar="c,d", help="server variables to copy back here afterwards")
    @cell_magic
    def rpyc(self, line: str, cell: str) -> Any:
        """Run the cell on the server, in the connection's remote namespace.

        The last expression is displayed like a normal cell's; what the server prints
        appears here as it happens; errors show the cell's own lines. ``--push`` and
        ``--pull`` copy numpy arrays, pandas DataFrames and Series and plain data
        (numbers, strings, bytes, lists, dicts …) at link speed, without pickle, with a
        progress bar for long copies; on a ``--trust`` connection anything picklable
        can be copied.

        Example::

            %%rpyc lab --push n --pull total
            total = sum(i * i for i in range(n))
            total

        On a group (``%%rpyc GROUP``, ``%%rpyc a,b,c``, ``%%rpyc --all``) the cell runs on every
        member at once: output is labelled ``[stdout:NAME]``, the value is a table member ->
        value (also in ``_rpyc_results``), ``--push`` sends to all, ``--pull`` binds each name
        to a mapping member -> value, ``--timeout`` applies to each member; if a member fails,
        the cell fails with every failing member's traceback under its name (``GroupError``).
        """
        args = parse(self.rpyc, line)
        groups = self.settings.groups
        if groups is not None and groups.wants(args):
            return groups.run_cell(args, cell)
        if args.all:
            raise UsageError("--all runs on every connection; it needs the groups part of the extension")
        session = self.session(args.name)
        if session.conn is None:
            raise UsageError(f"{session.name} is not connected: %rpyc_reconnect {session.name}")
        if session.helper is None:
            raise UsageError(f"{session.address} cannot run ipyrpyc's helper, so %%rpyc is not available there")
        push, pull = checked_cell(args, cell)
        try:
            link = transfer.link_of(session.conn) if push or pull else None
        except TransferError as e:
            raise UsageError(str(e)) from None
        outgoing = {}  # all checked before anything is sent
        for name in push:
            if name not in self.shell.user_ns:
                raise UsageError(f"--push {name}: no such variable here")
            try:
                outgoing[name] = transfer.Outgoing(self.shell.user_ns[name], session.target.trust)
            except (TypeError, ValueError) as e:
                hint = (", so it is not copied" if session.target.trust else
                        "; copying it needs pickle, which only a --trust connection uses")
                raise UsageError(f"--push {name}: {e}{hint}") from None
        conn, helper, record = session.conn, session.helper, session.record
        namespace = conn.namespace
        saved = _rpyc.call_timeout(conn)
        if args.timeout is not None:
            _rpyc.set_call_timeout(conn, args.timeout)
        copy = {"compress": self.settings.compress, "progress": self.settings.progress}
        try:
            for name, value in outgoing.items():
                transfer.push_value(link, namespace, name, value, **copy)
            session.cells += 1
            has_value, value = helper.run_cell(cell, f"<{session.name}.cell-{session.cells}>", namespace)
        except TransferError as e:
            raise UsageError(f"--push {e}") from None
        except BaseException as e:
            if record is not None and _rpyc.remote_tb_text(e) is not None:
                record.last_cell_error = e  # drawn with its remote frames only: they say it all
            raise
        finally:
            _rpyc.set_call_timeout(conn, saved)
        pulled = {}  # all or nothing: a --pull that fails binds none of the names
        if pull:
            try:
                results = transfer.pull_values(link, namespace, pull, **copy)
            except TransferError as e:
                raise UsageError(f"--pull {e}") from None
            for result in results:
                if result.problem == "missing":
                    raise UsageError(f"--pull {result.name}: not defined on the server")
                if result.problem is not None:
                    refusal = result.message if session.target.trust else transfer.pickle_refusal(result.message)
                    raise UsageError(f"--pull {result.name}: {refusal}")
                pulled[result.name] = result.value
        self.shell.user_ns.update(pulled)
        return value if has_value else None

    @magic_arguments()
    @argument("name", nargs="?", help="connection (default: the one that raised the last error)")
    @line_magic
    def rpyc_debug(self, line: str = "") -> None:
        """Post-mortem debugger on the server, at the last remote exception of a connection.

        pdb runs on the server, on the real remote frames; its prompts arrive here as
        input requests (``p x``, ``l``, ``u``/``d``, ``q``). Without NAME: the connection
        that raised the last error, else the only one. Usage: ``%rpyc_debug [NAME]``
        """
        args = parse(self.rpyc_debug, line)
        session = self._raised_last() if args.name is None else None
        session = session or self.session(args.name)
        if session.conn is None or session.helper is None:
            raise UsageError(f"{session.name} is not connected (or cannot run ipyrpyc's helper)")

        def readline(prompt: str) -> str:
            try:
                return input(prompt) + "\n"
            except (EOFError, KeyboardInterrupt):
                return "q\n"

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        conn = session.conn
        saved = _rpyc.call_timeout(conn)
        _rpyc.set_call_timeout(conn, None)  # a debugging session takes as long as it takes
        try:
            what = session.helper.debug(readline, write)
        finally:
            _rpyc.set_call_timeout(conn, saved)
        if what is None:
            print(f"No remote exception on {session.name} to debug.")

    def _raised_last(self) -> Any:
        """The open session whose connection raised the last error shown (``sys.last_value``)."""
        exc = getattr(sys, "last_value", None)
        conn = _rpyc.connection_in_traceback(getattr(exc, "__traceback__", None)) if exc is not None else None
        record = self.registry.record_of(conn) if conn is not None else None
        session = record.owner if record is not None and not record.retired else None
        return session if session is not None and self.registry.sessions.get(session.name) is session else None
