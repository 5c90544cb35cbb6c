"""The sessions of one shell, the record of every connection it has seen, and the names
the sessions bound in the user's namespace."""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _rpyc
from .helper import RemoteHelper
from .patches import Patches
from .records import Record
from .session import Session

_MISSING = object()


def warn(message: str) -> None:
    print(f"ipyrpyc: {message}", file=sys.stderr, flush=True)


class Registry:
    """Open sessions by name, records by connection, and the names sessions own.

    Connections opened by hand with rpyc get a record the first time a hook meets
    one of their netrefs; the server program is installed on them at first need.
    """

    def __init__(self, user_ns: Callable[[], Dict[str, Any]], patches: Optional[Patches] = None) -> None:
        self._user_ns = user_ns
        self.patches = patches or Patches()
        self.sessions: Dict[str, Session] = {}
        self._records: "weakref.WeakKeyDictionary[Any, Record]" = weakref.WeakKeyDictionary()
        self._warned: set = set()
        # name -> [(session, value)]: what open sessions had bound before another took the name
        self._earlier: Dict[str, List[Tuple[Session, Any]]] = {}
        self.on_remote_exception: Optional[Callable[[BaseException], None]] = None
        self.auto_reconnect: Callable[[], bool] = lambda: False  # RpycMagics.auto_reconnect, for error texts

    @property
    def user_ns(self) -> Dict[str, Any]:
        return self._user_ns()

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warn(message)

    # -- records -----------------------------------------------------------------------------
    def record_of(self, conn: Any) -> Optional[Record]:
        """The record of ``conn``: a session's (current or earlier), or one made now for a
        connection opened by hand."""
        if conn is None:
            return None
        record = self._records.get(conn)
        if record is None:
            address = _rpyc.peer_address(conn) or "server"
            record = self._records[conn] = Record(conn, address, address)
            if self.on_remote_exception is not None:
                self.patches.setattr(conn, "_unbox_exc", _rpyc.unbox_exc_with(conn, self.on_remote_exception))
        return record

    def record_of_netref(self, obj: Any) -> Optional[Record]:
        return self.record_of(_rpyc.connection_of(obj))

    def open_records(self) -> List[Record]:
        """The records of every open connection: the sessions' and those opened by hand."""
        out = []
        for record in list(self._records.values()):
            conn = record.conn
            if conn is not None and not record.retired and not _rpyc.is_closed(conn):
                out.append(record)
        return out

    def helper_of(self, record: Optional[Record]) -> Optional[RemoteHelper]:
        """The record's helper, installed on first need for connections opened by hand."""
        if record is None:
            return None
        conn = record.conn
        if record.helper is not None or record.helper_error is not None or record.owner is not None:
            return record.helper
        if conn is None or _rpyc.is_closed(conn):
            return None
        try:
            record.helper, _ = RemoteHelper.install(conn)
        except Exception as e:
            record.helper_error = type(e).__name__
            self.warn_once(f"the server {record.address} cannot run ipyrpyc's helper ({record.helper_error}); "
                           "its objects display the plain rpyc way")
        return record.helper

    # -- names -------------------------------------------------------------------------------
    def owner_of(self, name: str, value: Any) -> Optional[Session]:
        for s in self.sessions.values():
            if s.injected.get(name, _MISSING) is value:
                return s
        return None

    def can_bind(self, name: str) -> bool:
        value = self.user_ns.get(name, _MISSING)
        return value is _MISSING or self.owner_of(name, value) is not None

    def bind(self, session: Session, name: str, value: Any, force: bool) -> bool:
        """Bind ``name``; a user's own variable is only replaced with ``force``."""
        ns = self.user_ns
        current = ns.get(name, _MISSING)
        owner = None if current is _MISSING else self.owner_of(name, current)
        if current is not _MISSING and owner is None and not force:
            return False
        if owner is not None and owner is not session:
            del owner.injected[name]
            self._earlier.setdefault(name, []).append((owner, current))
            warn(f"{name} now belongs to connection {session.name!r} (was {owner.name!r})")
        self._forget_earlier(name, session)
        ns[name] = value
        session.injected[name] = value
        return True

    def _forget_earlier(self, name: str, session: Session) -> None:
        earlier = [(s, v) for s, v in self._earlier.get(name, ()) if s is not session]
        if earlier:
            self._earlier[name] = earlier
        else:
            self._earlier.pop(name, None)

    def _give_back(self, name: str) -> Optional[Session]:
        """Bind ``name`` again to what the latest still open session had bound there, if any."""
        while self._earlier.get(name):
            session, value = self._earlier[name].pop()
            conn = session.conn
            if self.sessions.get(session.name) is not session or conn is None or _rpyc.is_closed(conn):
                continue
            if value is not conn and value is not session.module_values.get(name):
                continue  # bound by an earlier connection of that session: stale
            self._forget_earlier(name, session)
            self.user_ns[name] = value
            session.injected[name] = value
            return session
        self._earlier.pop(name, None)
        return None

    def inject(self, session: Session, force: bool) -> Tuple[List[str], List[str]]:
        """Bind the connection and its modules; returns (bound, skipped) names."""
        bound: List[str] = []
        skipped: List[str] = []
        if self.bind(session, session.name, session.conn, force):
            bound.append(session.name)
        else:
            skipped.append(session.name)
            warn(f"{session.name!r} is your own variable: left it alone (use --force to replace it)")
        for local, module in session.modules:
            if not force and not self.can_bind(local):
                skipped.append(local)
                warn(f"{local!r} is your own variable: left it alone (use --force or --prefix)")
                continue
            value = session.module_values.get(local)
            if value is None or isinstance(value, str):
                skipped.append(local)
                warn(f"cannot import {module} on the server ({(value or '?').partition(':')[0]}): {local} not injected")
                continue
            self.bind(session, local, value, force)
            bound.append(local)
        return bound, skipped

    def uninject(self, session: Session, give_back: bool = True) -> List[str]:
        """Remove the names this session still owns; a reassigned name stays the user's.  A name
        another open session had bound before this one took it is bound to that again (and is
        not in the list of removed names)."""
        ns = self.user_ns
        removed = []
        returned: Dict[str, List[str]] = {}
        for name in list(self._earlier):
            self._forget_earlier(name, session)
        for name, value in list(session.injected.items()):
            if ns.get(name, _MISSING) is value:
                del ns[name]
                earlier = self._give_back(name) if give_back else None
                if earlier is None:
                    removed.append(name)
                else:
                    returned.setdefault(earlier.name, []).append(name)
        session.injected.clear()
        for name, names in returned.items():
            warn(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} connection {name!r}'s again")
        return removed

    def bound_names(self, session: Session) -> List[str]:
        ns = self.user_ns
        return [n for n, v in session.injected.items() if ns.get(n, _MISSING) is v]

    # -- sessions ----------------------------------------------------------------------------
    def add(self, session: Session) -> None:
        """Keep an opened session (replacing none: the caller closed any of the same name)."""
        self.sessions[session.name] = session
        self._adopt(session)

    def reopen(self, session: Session) -> None:
        """A fresh connection for ``session`` (raises ConnectError)."""
        session.reopen()
        self._adopt(session)

    def _adopt(self, session: Session) -> None:
        if session.conn is not None and session.record is not None:
            self._records[session.conn] = session.record
            session.record.auto_reconnect = self.auto_reconnect
        if self.on_remote_exception is not None:
            session.on_remote_exception = self.on_remote_exception
        for message in session.warnings:
            self.warn_once(message)

    def close(self, session: Session, give_back: bool = True) -> List[str]:
        removed = self.uninject(session, give_back)
        session.close()
        self.sessions.pop(session.name, None)
        return removed

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            self.close(session, give_back=False)
