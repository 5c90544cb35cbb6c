"""What a connection sends: naming, counting and tracing the requests a piece of code makes.

Every request is a round trip to the server.  One way of naming them serves everything
that looks at the wire: :func:`name_request` reads a request as rpyc's ``Connection._send``
gets it, which is also what the proxy (:mod:`.proxy`) decodes from the bytes between client
and server, so a trace and the proxy agree request for request.

``RequestCounter`` counts, ``Trace`` records every message (``%%rpyc_trace`` shows one),
on any rpyc connection, ours or one opened by hand with ``rpyc.classic.connect``::

    with RequestCounter(conn) as rc:
        rsys.path[0]
    rc.count, rc.handlers      # (2, ['getattr', 'callattr'])

    with Trace(conn) as trace:
        rsys.path[0]
    [r.words for r in trace.requests]     # ['get attribute', 'get item']

Both are instance-level wrappers of the connection's own methods, installed while active
and taken back afterwards: a connection that is not being counted or traced runs rpyc's
code untouched.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import _rpyc
from ._rpyc import HANDLE_DEL, HANDLER_NAMES, MSG_EXCEPTION, MSG_REQUEST
from .patches import Patches

# rpyc's request handlers in plain words
KIND_WORDS = {
    "getattr": "get attribute", "setattr": "set attribute", "delattr": "delete attribute",
    "call": "call", "callattr": "call method", "repr": "repr", "str": "str", "cmp": "compare",
    "hash": "hash", "dir": "dir", "pickle": "pickle (copy)", "del": "delete reference",
    "inspect": "inspect type", "buffiter": "iterate (buffered)", "oldslicing": "slice",
    "ctxexit": "leave with-block", "instancecheck": "isinstance", "ping": "ping", "close": "close",
    "getroot": "get root",
}
# the special methods rpyc sends as "callattr" for Python's operations on a netref
METHOD_WORDS = {
    "__getitem__": "get item", "__setitem__": "set item", "__delitem__": "delete item", "__len__": "len",
    "__iter__": "iterate", "__next__": "next item", "__contains__": "in", "__call__": "call",
    "__bool__": "truth test", "__enter__": "enter with-block", "__exit__": "leave with-block",
    "__format__": "format", "__index__": "index", "__int__": "int", "__float__": "float",
    "__reversed__": "reversed", "__neg__": "operator -", "__abs__": "abs",
}
OPERATORS = {
    "add": "+", "sub": "-", "mul": "*", "matmul": "@", "truediv": "/", "floordiv": "//", "mod": "%",
    "pow": "**", "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>",
}
COMPARISONS = {"__eq__": "==", "__ne__": "!=", "__lt__": "<", "__le__": "<=", "__gt__": ">", "__ge__": ">="}
# the server program's functions (helper.RemoteHelper) by what calls them
HELPER_ORIGINS = {
    "display": "ipyrpyc display", "complete": "ipyrpyc completion", "describe": "ipyrpyc inspection",
    "lookup": "ipyrpyc inspection", "execute": "conn.execute", "run_cell": "%%rpyc", "pull": "%%rpyc --pull",
    "push": "%%rpyc --push", "route": "ipyrpyc live output", "interrupt": "ipyrpyc interrupt",
    "debug": "%rpyc_debug", "who": "%rpyc_who",
}


def _method_words(name: str) -> Optional[str]:
    words = METHOD_WORDS.get(name)
    if words is None and name.startswith("__") and name.endswith("__"):
        op = name[2:-2]
        for prefix in ("i", "r", ""):
            if op.startswith(prefix) and op[len(prefix):] in OPERATORS:
                symbol = OPERATORS[op[len(prefix):]]
                return f"operator {symbol}=" if prefix == "i" else f"operator {symbol}"
    return words


@dataclass(frozen=True)
class RequestName:
    """What a request is: rpyc's handler, the remote type of the object it is about and the
    attribute, method or operator it names."""

    handler: str  # getattr, callattr, del …
    type_name: Optional[str] = None  # 'builtins.list'; a module's netref is named after the module: 'sys'
    name: Optional[str] = None  # attribute or method name; the operator of a comparison

    @property
    def detail(self) -> str:
        """The proxy's one-word-and-object form: ``getattr builtins.list.append``."""
        if self.handler in ("getattr", "setattr", "delattr", "callattr") and self.name is not None:
            return f"{self.handler} {self.type_name or '?'}.{self.name}"
        return f"{self.handler} {self.type_name}" if self.type_name else self.handler

    @property
    def words(self) -> str:
        """In plain words: ``get attribute``, ``next item``, ``compare ==``, ``delete reference`` …"""
        if self.handler == "callattr" and self.name:
            return _method_words(self.name) or "call method"
        if self.handler == "cmp" and self.name in COMPARISONS:
            return f"compare {COMPARISONS[self.name]}"
        return KIND_WORDS.get(self.handler, self.handler)

    @property
    def on(self) -> str:
        """The remote type, short: ``list``, ``module sys``, ``numpy.ndarray``."""
        name = self.type_name
        if not name:
            return ""
        if "." not in name:
            return f"module {name}"
        return name[len("builtins."):] if name.startswith("builtins.") else name


def name_request(handler: Any, boxed_args: Any) -> RequestName:
    """Name a request from rpyc's handler number and its boxed arguments (never raises)."""
    kind = HANDLER_NAMES.get(handler, str(handler))
    try:
        target, values = _rpyc.request_parts(boxed_args)
    except Exception:
        return RequestName(kind)
    type_name = str(target[0]) if target is not None else None
    if kind == "inspect" and target is None:  # rpyc asks for a remote type's methods by its id_pack
        try:
            type_name = str(boxed_args[1][0][1][0])
        except Exception:
            type_name = None
    name = values[0] if values else None
    if kind == "cmp":
        name = values[1] if len(values) > 1 else None  # (obj, other, op)
    return RequestName(kind, type_name, name if isinstance(name, str) else None)


class RequestCounter:
    """Counts the requests this side sends on ``conn`` while active.

    ``count`` leaves out rpyc's fire-and-forget ``del`` messages (garbage collection of
    netrefs); ``handlers`` names every request, those included.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.count = 0
        self.handlers: List[str] = []

    def __enter__(self) -> "RequestCounter":
        original = self.conn._send

        def _send(msg: int, seq: int, args: Any) -> Any:
            if msg == MSG_REQUEST:
                handler = args[0] if isinstance(args, tuple) and args else None
                self.handlers.append(HANDLER_NAMES.get(handler, "?"))
                if handler != HANDLE_DEL:
                    self.count += 1
            return original(msg, seq, args)

        self._original = original
        self._own = "_send" in vars(self.conn)  # a wrapper of someone else's, to put back
        self.conn._send = _send
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._own:
            self.conn._send = self._original
        else:
            vars(self.conn).pop("_send", None)


# -- tracing -----------------------------------------------------------------------------------
@dataclass
class Traced:
    """One request a trace saw: sent by this side, or by the server (a callback)."""

    n: int  # order in the trace, from 1
    connection: str
    request: RequestName
    origin: str  # "" for the traced code itself; "ipyrpyc display", "live output", "callback" …
    callback: bool  # the server's request to this side
    sent: int = 0  # bytes on the wire (a callback: our reply)
    received: int = 0  # bytes on the wire (the reply; a callback: the server's request)
    seconds: Optional[float] = None  # until the reply arrived (a callback: until ours was sent)
    failed: bool = False  # the answer was an exception
    t0: float = field(default=0.0, repr=False)

    @property
    def words(self) -> str:
        return self.request.words


@dataclass
class Totals:
    """Sums over some requests of a trace."""

    requests: int = 0  # round trips this side waited for (``del`` left out)
    deletes: int = 0  # rpyc's fire-and-forget ``del`` messages
    callbacks: int = 0  # requests of the server to this side
    sent: int = 0
    received: int = 0
    seconds: float = 0.0  # time spent waiting for replies
    serving: float = 0.0  # time spent serving the server's requests (while waiting for a reply)

    def add(self, r: Traced) -> None:
        if r.callback:
            self.callbacks += 1
            self.serving += r.seconds or 0.0
        else:
            if r.request.handler == "del":
                self.deletes += 1
            else:
                self.requests += 1
            self.seconds += r.seconds or 0.0
        self.sent += r.sent
        self.received += r.received


class Trace:
    """Every message of the connections it is attached to, while attached.

    ``requests`` keeps the first ``keep`` of them in order; the sums (``totals`` per
    connection, ``groups`` per kind of request) count every one.  Attach with
    :meth:`attach` (or use it as a context manager on connections); :meth:`close` takes
    every wrapper back.
    """

    def __init__(self, *conns: Any, keep: int = 100_000) -> None:
        self.keep = keep
        self.lock = threading.Lock()
        self.requests: List[Traced] = []
        self.count = 0  # every request seen
        self.totals: Dict[str, Totals] = {}
        self.groups: Dict[Tuple[str, bool, str, str, str, str], Totals] = {}
        self.taps: List[Tap] = []
        self.labels: List[str] = []  # every connection it was attached to
        self.started = time.perf_counter()
        self.ended: Optional[float] = None
        self._open: Dict[int, Traced] = {}  # id -> a request still waiting for its answer
        for conn in conns:
            self.attach(conn)

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def attach(self, conn: Any, label: Optional[str] = None, helper: Any = None) -> "Tap":
        """Trace ``conn`` (labelled ``label``; ``helper``: its :class:`~.helper.RemoteHelper`,
        whose calls are labelled by what they serve)."""
        tap = Tap(conn, self, label or _rpyc.peer_address(conn) or "connection", helper)
        tap.install()
        self.taps.append(tap)
        if tap.label not in self.labels:
            self.labels.append(tap.label)
        return tap

    def traces(self, conn: Any) -> bool:
        return any(t.conn is conn and t.active for t in self.taps)

    def detach(self, tap: "Tap") -> None:
        tap.remove()
        if tap in self.taps:
            self.taps.remove(tap)

    def close(self) -> None:
        """Take every wrapper back; requests still without an answer are counted as they are."""
        for tap in list(self.taps):
            self.detach(tap)
        with self.lock:
            left, self._open = list(self._open.values()), {}
            for r in left:
                self._sum(r)
            if self.ended is None:
                self.ended = time.perf_counter()

    def take(self) -> "Trace":
        """What was recorded so far, as a closed trace of its own; this one goes on, empty."""
        done = Trace(keep=self.keep)
        with self.lock:
            done.requests, done.count, done.totals, done.groups = self.requests, self.count, self.totals, self.groups
            done.started, done.ended, done.labels = self.started, time.perf_counter(), list(self.labels)
            self.requests, self.count, self.totals, self.groups = [], 0, {}, {}
            self.started = done.ended
            for key, r in list(self._open.items()):  # answered later: they count where they began
                if r.request.handler == "del" or r.callback:
                    done._sum(r)
                    del self._open[key]
        return done

    # -- called by the taps (any thread) ------------------------------------------------------------
    def _new(self, connection: str, request: RequestName, origin: str, callback: bool) -> Traced:
        with self.lock:
            self.count += 1
            r = Traced(self.count, connection, request, origin, callback)
            if len(self.requests) < self.keep:
                self.requests.append(r)
            self._open[id(r)] = r
        return r

    def _done(self, r: Traced) -> None:
        with self.lock:
            if self._open.pop(id(r), None) is not None:
                self._sum(r)

    def _sum(self, r: Traced) -> None:
        self.totals.setdefault(r.connection, Totals()).add(r)
        key = (r.connection, r.callback, r.request.words, r.request.on, r.request.name or "", r.origin)
        self.groups.setdefault(key, Totals()).add(r)


class Tap:
    """Instance-level wrappers of one connection's message methods that tell a :class:`Trace`
    about every message sent and received; :meth:`remove` takes them back (where someone
    wrapped them after us, ours stay in place as pass-throughs)."""

    def __init__(self, conn: Any, trace: Trace, label: str, helper: Any = None) -> None:
        self.conn_ref = weakref.ref(conn)
        self.trace = trace
        self.label = label
        self.patches = Patches()
        self.local = threading.local()
        self.waiting: Dict[int, Traced] = {}  # our requests by sequence number
        self.serving: Dict[int, Traced] = {}  # the server's requests by its sequence number
        self.helper_functions: Dict[Any, str] = {}
        for name, function in (getattr(helper, "functions", None) or {}).items():
            try:
                self.helper_functions[tuple(_rpyc.id_pack(function))] = name
            except Exception:
                pass

    @property
    def conn(self) -> Any:
        return self.conn_ref()

    @property
    def active(self) -> bool:
        return self.patches.active

    def install(self) -> None:
        conn, p, tap = self.conn, self.patches, self
        send, dispatch = conn._send, conn._dispatch
        answered, serve = conn._seq_request_callback, conn._dispatch_request

        def _send(msg: int, seq: int, args: Any) -> Any:
            if p.active:
                tap._safely(tap.sending, msg, seq, args)
            return send(msg, seq, args)

        def _dispatch(data: bytes) -> Any:
            if not p.active:
                return dispatch(data)
            stack = tap._arrivals()
            stack.append((tap._safely(_rpyc.frame_size, tap.conn, data) or 0, time.perf_counter()))
            try:
                return dispatch(data)
            finally:
                stack.pop()

        def _seq_request_callback(msg: int, seq: int, is_exc: bool, obj: Any) -> Any:
            if p.active:
                tap._safely(tap.answered, seq, is_exc)
            return answered(msg, seq, is_exc, obj)

        def _dispatch_request(seq: int, raw_args: Any) -> Any:
            r = tap._safely(tap.called_back, seq, raw_args) if p.active else None
            try:
                return serve(seq, raw_args)
            finally:
                if r is not None:
                    tap.serving.pop(seq, None)
                    r.seconds = time.perf_counter() - r.t0
                    tap.trace._done(r)

        p.setattr(conn, "_send", _send)
        p.setattr(conn, "_dispatch", _dispatch)
        p.setattr(conn, "_seq_request_callback", _seq_request_callback)
        p.setattr(conn, "_dispatch_request", _dispatch_request)

    def remove(self) -> None:
        self.patches.undo()

    # -- what the wrappers record ------------------------------------------------------------------
    @staticmethod
    def _safely(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # a trace must never break the connection it watches
            return None

    def _arrivals(self) -> List[Tuple[int, float]]:
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        return stack

    def sending(self, msg: int, seq: int, args: Any) -> None:
        size = _rpyc.frame_size(self.conn, _rpyc.message_bytes(msg, seq, args))
        if msg == MSG_REQUEST:
            handler, boxed = args
            request = name_request(handler, boxed)
            r = self.trace._new(self.label, request, self.origin(request, boxed), False)
            r.sent = size
            self.waiting[seq] = r
            r.t0 = time.perf_counter()
            return
        r = self.serving.get(seq)  # our answer to a request of the server
        if r is not None:
            r.sent += size
            r.failed = msg == MSG_EXCEPTION

    def answered(self, seq: int, is_exc: bool) -> None:
        r = self.waiting.pop(seq, None)
        if r is None:
            return
        stack = self._arrivals()
        size, arrived = stack[-1] if stack else (0, time.perf_counter())
        r.received, r.seconds, r.failed = size, arrived - r.t0, bool(is_exc)
        self.trace._done(r)

    def called_back(self, seq: int, raw_args: Any) -> Traced:
        handler, boxed = raw_args
        request = name_request(handler, boxed)
        stack = self._arrivals()
        r = self.trace._new(self.label, request, self.callback_origin(boxed), True)
        r.received = stack[-1][0] if stack else 0
        r.t0 = time.perf_counter()
        self.serving[seq] = r
        return r

    def origin(self, request: RequestName, boxed: Any) -> str:
        """What made one of our requests: ipyrpyc (by the server function it calls), rpyc
        itself, or the traced code ("")."""
        if request.handler == "call":
            target, _ = _rpyc.request_parts(boxed)
            function = self.helper_functions.get(tuple(target)) if target is not None else None
            if function is not None:
                return HELPER_ORIGINS.get(function, f"ipyrpyc {function}")
        if request.handler == "del":
            return "rpyc: netref released"
        if request.handler == "inspect":
            return "rpyc: new remote type"
        return ""

    def callback_origin(self, boxed: Any) -> str:
        from .helper import OutputSink

        target, _ = _rpyc.request_parts(boxed)
        obj = _rpyc.local_object(self.conn, target) if target is not None else None
        if isinstance(getattr(obj, "__self__", None), OutputSink):
            return "live output"
        return "callback"
