"""Server side: the connection being served, and what ipyrpyc adds to it.

For each ipyrpyc connection: remote calls that can be interrupted from a second
connection, the last failed request kept for the post-mortem debugger, rpyc's
``AttributeError.obj`` kept short, and ipyrpyc's own frames left out of every
traceback the server sends or logs.  All of it is per connection, and what is shared
between connections (the registry below, live-output routes) lives in one module
that exists only while an ipyrpyc connection is open.
Runs on Python 3.8 and newer, with the standard library only.
"""

import ctypes
import reprlib
import sys
import threading
import types
import weakref

SHARED = "__ipyrpyc__"  # the sys.modules entry shared by ipyrpyc's connections while any is open
OURS = "ipyrpyc.remote."  # __name__ prefix of the modules of this program
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def serving_connection(frame=None):
    """The rpyc ``Connection`` whose request the calling thread is serving, or None."""
    frame = frame or sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if frame.f_code.co_name == "_dispatch_request" and hasattr(candidate, "_config"):
            return candidate
        frame = frame.f_back
    return None


def shared_state(create=True):
    """The state shared by this server's ipyrpyc connections (None if there is none)."""
    state = sys.modules.get(SHARED)
    if state is None and create:
        state = types.ModuleType(SHARED)
        state.__doc__ = "ipyrpyc's connections on this server; removed when the last one closes"
        state.lock = threading.RLock()
        state.connections = {}  # id(connection) -> Served
        state.routes = {}  # thread id -> send(name, text), see output.py
        state.routers = {}  # stream name -> output.Router installed there
        state = sys.modules.setdefault(SHARED, state)
    return state


def is_ours(frame):
    return str(frame.f_globals.get("__name__", "")).startswith(OURS)


def without_our_frames(tb):
    """The traceback ``tb`` with this program's frames left out."""
    kept = []
    while tb is not None:
        if not is_ours(tb.tb_frame):
            kept.append(tb)
        tb = tb.tb_next
    new = None
    for t in reversed(kept):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return new


def shorten_attributes(exc):
    """rpyc sends ``repr()`` of every attribute it cannot send by value: ``AttributeError.obj``
    of a million-item list is megabytes per failed ``hasattr()``.  Keep it short."""
    value = getattr(exc, "obj", None)
    if value is not None and not isinstance(value, _PLAIN):
        try:
            exc.obj = reprlib.repr(value)
        except Exception:
            pass


class _Logger(object):
    """The connection's logger, logging tracebacks without this program's frames."""

    def __init__(self, logger):
        self._logger = logger

    def _log(self, method, msg, args, kwargs):
        if kwargs.get("exc_info") is True:
            typ, val, tb = sys.exc_info()
            kwargs["exc_info"] = (typ, val, without_our_frames(tb))
        return getattr(self._logger, method)(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        return self._log("debug", msg, args, kwargs)

    def info(self, msg, *args, **kwargs):
        return self._log("info", msg, args, kwargs)

    def warning(self, msg, *args, **kwargs):
        return self._log("warning", msg, args, kwargs)

    def error(self, msg, *args, **kwargs):
        return self._log("error", msg, args, kwargs)

    def exception(self, msg, *args, **kwargs):
        kwargs.setdefault("exc_info", True)
        return self._log("error", msg, args, kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


class Served(object):
    """What ipyrpyc keeps about one connection on this server."""

    def __init__(self, connection):
        self.key = id(connection) if connection is not None else 0
        self.connection = weakref.ref(connection) if connection is not None else (lambda: None)
        self.lock = threading.Lock()
        self.running = {}  # thread id -> [None per request handler running in it]
        self.last_failure = None  # (type, value, traceback) of the last failed request
        self.route_threads = set()
        self.on_detach = []  # callables run when the connection closes


def attach(connection):
    """Prepare ``connection`` (see the module's docstring) and register it; undone at close."""
    state = shared_state()
    served = Served(connection)
    # an injected KeyboardInterrupt must come back as an error reply, not end the connection
    connection._config["propagate_KeyboardInterrupt_locally"] = False
    if connection._config.get("logger") is not None:
        connection._config["logger"] = _Logger(connection._config["logger"])
    box_exc = connection._box_exc

    def _box_exc(typ, val, tb):
        tb = without_our_frames(tb)
        if typ is not None and not issubclass(typ, (StopIteration, GeneratorExit)):
            served.last_failure = (typ, val, tb)
            shorten_attributes(val)
        return box_exc(typ, val, tb)

    connection._box_exc = _box_exc
    handlers = connection._HANDLERS
    for key in list(handlers):
        handlers[key] = _interruptible(handlers[key], served)
    cleanup = connection._cleanup

    def _cleanup(*args, **kwargs):
        try:
            return cleanup(*args, **kwargs)
        finally:
            detach(served)

    connection._cleanup = _cleanup
    with state.lock:
        state.connections[served.key] = served
    return served


def detach(served):
    """The connection closed: forget it; the last one out removes the shared state."""
    state = shared_state(create=False)
    if state is None:
        return
    with state.lock:
        if state.connections.pop(served.key, None) is not served:
            return
        for undo in served.on_detach:
            try:
                undo()
            except Exception:
                pass
        served.last_failure = None
        if not state.connections and sys.modules.get(SHARED) is state:
            del sys.modules[SHARED]


def _interruptible(handler, served):
    """Mark the thread running ``handler``: only such threads are interrupted, and an interrupt
    that arrives as the handler ends is dropped there, never left pending to hit rpyc's serving
    loop (which would end the connection) or the sending of the reply."""
    running, lock = served.running, served.lock

    def run(conn, *args):
        tid = threading.get_ident()
        stack = running.setdefault(tid, [])
        mine = len(stack) + 1
        try:
            stack.append(None)
            return handler(conn, *args)
        finally:
            while True:
                try:
                    with lock:
                        del stack[mine - 1:]
                        if not stack:  # clear an interrupt still pending for this thread
                            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
                    break
                except KeyboardInterrupt:
                    pass  # it came as the call ended: the call is over, drop it

    return run


def interrupt(key):
    """Raise KeyboardInterrupt in the threads running a request of the connection ``key``."""
    state = shared_state(create=False)
    served = state.connections.get(key) if state is not None else None
    if served is None or served.connection() is None:
        return 0
    hits = 0
    with served.lock:
        for tid, stack in list(served.running.items()):
            if stack:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(KeyboardInterrupt))
                hits += 1
    return hits


def debug(served, readline, write):
    """Post-mortem pdb on the last failed request, talking through the client's callbacks;
    None when there is none."""
    import pdb

    if served.last_failure is None:
        return None
    typ, val, tb = served.last_failure

    class Out(object):
        def __init__(self):
            self.pending = ""

        def write(self, text):
            head, sep, tail = (self.pending + text).rpartition("\n")
            if sep:
                write(head + sep)
            self.pending = tail
            return len(text)

        def flush(self):
            pass

    out = Out()

    class In(object):
        def readline(self):
            prompt, out.pending = out.pending, ""
            return readline(prompt)

    debugger = pdb.Pdb(stdin=In(), stdout=out, nosigint=True, readrc=False)
    debugger.reset()
    debugger.interaction(None, tb)
    if out.pending:
        write(out.pending)
    return "%s: %s" % (typ.__name__, val)
