"""The client's handle of the program ipyrpyc runs on the server (see :mod:`.remote`)."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import rpyc

from . import _rpyc, remote


class RemoteHelper:
    """Netrefs to the functions of the server program on one connection.

    Each call is one round trip.  Bounded calls (display, completion, inspection)
    give up after their timeout and tell ``on_give_up`` so that the connection's
    next call says it is busy instead of waiting silently behind them.
    """

    def __init__(self, facts: Sequence[Any], functions: Dict[str, Any],
                 on_give_up: Optional[Callable[[Any, str], None]] = None) -> None:
        self.python, self.pid, self.host, self.connection_id = facts
        self.functions = functions
        self.on_give_up = on_give_up
        self._begin: Any = None

    @classmethod
    def install(cls, conn: Any, module_names: Sequence[str] = (),
                sink: Optional[Callable[[str, str], None]] = None) -> Tuple["RemoteHelper", Dict[str, Any]]:
        """Send the server program and start it.  Returns the helper and the requested modules
        (a netref, or the text of the error importing it).

        One request; two with modules or a ``sink`` for live output (``write(name, text)``):
        the first also describes the modules' netref classes, so that their netrefs cost no
        inspect request each, the second starts the program with the sink in place.
        """
        if not module_names and sink is None:
            facts, imported, functions = conn.eval(remote.bootstrap())
            return cls(tuple(facts), dict(functions)), dict(imported)
        classes, begin = conn.eval(remote.bootstrap(module_names, staged=True))
        with _rpyc.known_netref_classes(conn, classes):
            facts, imported, functions = begin(sink)
        helper = cls(tuple(facts), dict(functions))
        helper._begin = begin  # kept: dropping it now would cost a message
        return helper, dict(imported)

    def call(self, name: str, *args: Any, timeout: Optional[float], what: str = "a helper call") -> Any:
        return self.finish(self.start(name, *args, timeout=timeout), what)

    def start(self, name: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Send a call without waiting for it: rpyc's ``AsyncResult`` (expiring after ``timeout``)."""
        result = rpyc.async_(self.functions[name])(*args)
        if timeout is not None:
            result.set_expiry(timeout)
        return result

    def finish(self, result: Any, what: str = "a helper call") -> Any:
        """The value of a call :meth:`start` sent (waits for it)."""
        try:
            return result.value
        except BaseException:
            if not _rpyc.result_arrived(result) and self.on_give_up is not None:
                self.on_give_up(result, f"{what} that ran out of time")
            raise

    def display(self, obj: Any, text_limit: int, data_limit: int, rich: bool, timeout: float) -> Any:
        return self.call("display", obj, text_limit, data_limit, rich, timeout=timeout, what="a display")

    def complete(self, obj: Any, chain: Tuple[str, ...], limit: int, timeout: float) -> Any:
        return self.call("complete", obj, chain, limit, timeout=timeout, what="a completion")

    def describe(self, obj: Any, detail: int, text_limit: int, timeout: float) -> Any:
        return self.call("describe", obj, detail, text_limit, timeout=timeout, what="an inspection")

    def lookup(self, obj: Any, chain: Tuple[str, ...], text_limit: int, timeout: float) -> Any:
        return self.call("lookup", obj, chain, text_limit, timeout=timeout, what="an inspection")

    def who(self, namespace: Any, pattern: Optional[str], limit: int, text_limit: int, timeout: float) -> Any:
        """``%whos`` of the server's ``namespace``: (visible names, matching names, rows of
        (name, type, summary)), at most ``limit`` rows."""
        return self.call("who", namespace, pattern, limit, text_limit, timeout=timeout, what="%rpyc_who")

    def execute(self, source: str, filename: str, namespace: Any) -> None:
        self.functions["execute"](source, filename, namespace)

    def run_cell(self, source: str, filename: str, namespace: Any) -> Tuple[bool, Any]:
        return self.functions["run_cell"](source, filename, namespace)

    def send(self, name: str, *args: Any) -> Any:
        """An asynchronous call of the server function ``name``: its ``AsyncResult`` (the
        pipelined chunks of a transfer, see :mod:`.transfer`)."""
        return rpyc.async_(self.functions[name])(*args)

    def pull(self, tid: str, target: Any, names: Optional[Tuple[str, ...]], compress: bool,
             allow_pickle: bool) -> Tuple[Any, Tuple[int, ...]]:
        """Codec trees of ``target`` (or of ``target[name]`` for each name) and the sizes of the
        buffers left on the server for transfer ``tid`` (see :mod:`.remote.bulk`)."""
        return self.functions["pull"](tid, target, names, compress, allow_pickle)

    def push(self, tid: str, tree: Any, sizes: Tuple[int, ...], namespace: Any, name: str, compress: bool,
             allow_pickle: bool) -> bool:
        """Bind ``namespace[name]`` to the value of ``tree``; False when its buffers are still to come."""
        return self.functions["push"](tid, tree, sizes, namespace, name, compress, allow_pickle)

    def stat(self, path: str) -> Tuple[Any, ...]:
        """``(kind, size, mtime_ns, mode, absolute path)`` of a server path (kind ``missing``)."""
        return tuple(self.functions["stat"](path))

    def walk(self, path: str) -> Tuple[Any, ...]:
        """Every directory and file under a server directory: ``((parts, kind, size, mtime_ns, mode), ...)``."""
        return tuple(self.functions["walk"](path))

    def debug(self, readline: Callable[[str], str], write: Callable[[str], None]) -> Optional[str]:
        """Post-mortem pdb on the server for this connection's last failed call (None: none)."""
        return self.functions["debug"](readline, write)

    def interrupt(self, connection_id: int, timeout: float) -> int:
        """Raise KeyboardInterrupt in the server threads serving ``connection_id`` (another connection)."""
        return self.call("interrupt", connection_id, timeout=timeout)

    def route(self, write: Any, timeout: Optional[float] = None) -> int:
        """Send this connection's remote stdout/stderr to ``write(name, text)``; None stops."""
        return self.call("route", write, timeout=timeout)


class RemoteExecute:
    """``conn.execute`` that names each piece of code and gives its lines to the server's
    ``linecache``, so remote tracebacks show the source (a stock server compiles it as
    ``<string>``, with no source anywhere). One round trip, like the original."""

    def __init__(self, namespace: Any, name: str, helper: RemoteHelper, stock: Any = None) -> None:
        self.stock = stock  # rpyc's own execute, kept: dropping its netref would send a message
        self.namespace = namespace
        self.name = name
        self.helper = helper
        self.count = 0

    def __call__(self, text: str) -> None:
        """Execute ``text`` in the connection's remote namespace."""
        self.count += 1
        self.helper.execute(text, f"<{self.name}.execute-{self.count}>", self.namespace)


class OutputSink:
    """Where the server sends this connection's stdout and stderr: the calling cell
    (through ``redirect`` while set: a group's cell labels each member's output)."""

    def __init__(self) -> None:
        self.redirect: Optional[Callable[[str, str], None]] = None

    def write(self, name: str, text: str) -> None:
        if self.redirect is not None:
            return self.redirect(name, text)
        stream = sys.stderr if name == "stderr" else sys.stdout
        stream.write(text)
        stream.flush()
