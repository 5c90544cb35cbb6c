"""``%rpyc_info``: what a netref is made of."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import _rpyc
from .arguments import parse
from .magics import MagicsPart


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
        print(f"  dir() on the server ({len(names) if isinstance(names, tuple) else '?'} names): {names}")
