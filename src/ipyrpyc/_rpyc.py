"""The one place that knows rpyc's internals (rpyc 6; rpyc-ng keeps the same names).

Netrefs, the connection's protocol attributes, streams that do not wait forever,
the exception classes rpyc makes for remote errors, and the state of requests.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
import zlib
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import rpyc
from rpyc.core import brine as _brine
from rpyc.core import consts as _consts
from rpyc.core import netref as _netref
from rpyc.core import vinegar as _vinegar
from rpyc.core.channel import Channel as _Channel
from rpyc.core.async_ import AsyncResult, AsyncResultTimeout
from rpyc.core.netref import asyncreq as _asyncreq
from rpyc.core.protocol import Connection
from rpyc.core.stream import SocketStream

BaseNetref = rpyc.BaseNetref
RPYC_DIR = os.path.dirname(os.path.abspath(rpyc.__file__))
HANDLE_CLOSE = _consts.HANDLE_CLOSE  # what rpyc's Connection.close() sends through sync_request
HANDLE_DEL = _consts.HANDLE_DEL  # rpyc's fire-and-forget garbage collection of a netref
MSG_REQUEST = _consts.MSG_REQUEST
MSG_REPLY = _consts.MSG_REPLY
MSG_EXCEPTION = _consts.MSG_EXCEPTION
HANDLER_NAMES = {getattr(_consts, n): n[len("HANDLE_"):].lower() for n in dir(_consts) if n.startswith("HANDLE_")}
__all__ = ["AsyncResultTimeout", "BaseNetref", "Connection"]


# -- netrefs -------------------------------------------------------------------------------------
def is_netref(obj: Any) -> bool:
    """True for an rpyc proxy; costs no round trip and touches nothing of ``obj``."""
    return issubclass(type(obj), BaseNetref)


def connection_of(netref: Any) -> Any:
    """The ``rpyc.Connection`` behind a netref, without a round trip (None when gone)."""
    try:
        ref = object.__getattribute__(netref, "____conn__")
    except AttributeError:
        return None
    return ref() if callable(ref) else ref


def id_pack(netref: Any) -> Any:
    """(remote type name, id of the remote type, id of the remote object); no round trip."""
    return object.__getattribute__(netref, "____id_pack__")


def refcount(netref: Any) -> Any:
    return object.__getattribute__(netref, "____refcount__")


def netref_slots() -> List[str]:
    return [n for n in BaseNetref.__slots__ if n.startswith("____")]


def netref_class_name(proxy: Any) -> str:
    """``builtins.list`` for a netref of a list; no round trip."""
    try:
        return str(id_pack(proxy)[0])
    except Exception:
        return type(proxy).__name__


def netref_class_type_name(cls: Any) -> Optional[str]:
    """The remote type a netref class stands for (``builtins.module`` for modules), else None.
    Touches nothing but the class's own type and name."""
    if not issubclass(type(cls), type):
        return None
    try:
        if not issubclass(cls, BaseNetref) or cls is BaseNetref:
            return None
    except Exception:
        return None
    name = cls.__name__
    # rpyc names a module's netref class after the module, and a class's after module.qualname;
    # its __class__ descriptor cannot tell them apart (it falls back to the module type for
    # classes this side does not have), so: no dot, or a module this side knows, is a module.
    if "." not in name or name in sys.modules:
        return "builtins.module"
    return name


@contextlib.contextmanager
def known_netref_classes(conn: Any, classes: Iterable[Tuple[Any, Any]]) -> Iterator[None]:
    """While active, a netref to one of the objects that ``classes`` describes (``(id_pack,
    methods)``, as the server's answer to rpyc's inspect request would) is built without
    that request.  rpyc asks once per module object, so binding ``sys`` and ``os`` costs two."""
    known = {(str(p[0]), p[1], p[2]): methods for p, methods in classes}
    original = conn._netref_factory

    def factory(id_pack: Any) -> Any:
        methods = known.get(id_pack)
        if methods is None:
            return original(id_pack)
        return _netref.class_factory(id_pack, methods)(conn, id_pack)

    conn._netref_factory = factory
    try:
        yield
    finally:
        if vars(conn).get("_netref_factory") is factory:
            del conn._netref_factory


def timed_repr(obj: Any, timeout: float) -> str:
    """rpyc's own remote repr, bounded in time (one round trip)."""
    result = _asyncreq(obj, _consts.HANDLE_REPR)
    result.set_expiry(timeout)
    return str(result.value)


# -- connections ---------------------------------------------------------------------------------
def set_call_timeout(conn: Any, seconds: Optional[float]) -> None:
    """rpyc reads ``sync_request_timeout`` on every call, so this applies at once."""
    conn._config["sync_request_timeout"] = seconds


def call_timeout(conn: Any) -> Optional[float]:
    return conn._config.get("sync_request_timeout")


def is_closed(conn: Any) -> bool:
    """Closed by us, or by the peer: rpyc's ``conn.closed`` only knows the first."""
    try:
        return bool(conn.closed or conn._channel.closed)
    except Exception:
        return True


def set_compress(conn: Any, compress: bool) -> bool:
    """Whether what this side sends on ``conn`` is zlib-compressed (rpyc compresses every frame
    over 3 kB by default); returns the previous setting."""
    channel = conn._channel
    previous = bool(channel.compress)
    channel.compress = bool(compress)
    return previous


def socket_of(conn: Any) -> Optional[socket.socket]:
    try:
        return conn._channel.stream.sock
    except Exception:
        return None


def peer_address(conn: Any) -> Optional[str]:
    try:
        sock = conn._channel.stream.sock
        if sock.family == getattr(socket, "AF_UNIX", None):
            return "local socket"
        host, port = sock.getpeername()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    except Exception:
        return None


def peer_closed(conn: Any) -> bool:
    """True when the server has already closed or reset the connection; no round trip.

    A server that died leaves its end-of-file unread until the next request; peeking
    at the socket finds it without sending anything.  Unknown (e.g. TLS) means open.
    Unread messages (replies to async requests) often sit before that end-of-file, so
    where the OS tells (Linux POLLRDHUP, TCP and Unix sockets) ask it directly.
    """
    try:
        sock = conn._channel.stream.sock
        rdhup = getattr(select, "POLLRDHUP", 0)
        if rdhup and hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | rdhup)
            if any(events & (rdhup | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0)):
                return True
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (ValueError, NotImplementedError, AttributeError):  # TLS refuses MSG_PEEK; no socket
        return False
    except (OSError, EOFError):  # reset, or rpyc's ClosedFile after close()
        return True


def server_listen(server: Any) -> None:
    """Bind and listen now, so the port is known before ``server.start()`` blocks."""
    server._listen()


# -- requests ------------------------------------------------------------------------------------
def pending_seq(conn: Any, result: Any) -> Optional[int]:
    """The sequence number of an outstanding request, found by its AsyncResult."""
    for seq, callback in list(conn._request_callbacks.items()):
        if callback is result:
            return seq
    return None


def request_finished(conn: Any, seq: int) -> bool:
    """Whether the reply of request ``seq`` has arrived (serves what is waiting, no blocking)."""
    conn.poll_all(0)
    return seq not in conn._request_callbacks


def serve_arrived(conn: Any) -> None:
    """Serve what the server has already sent (its requests, late replies); never waits or raises."""
    try:
        if not is_closed(conn):
            conn.poll_all(0)
    except Exception:
        pass


def serve_until(conn: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Serve the connection until ``done()`` or ``timeout`` seconds; returns ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        conn.poll_all(min(left, 0.05))
    return True


def wait_readable(conns: Iterable[Any], seconds: float) -> None:
    """Wait at most ``seconds`` until one of the connections has something to read (or was
    closed); no round trip.  For serving many connections from one thread."""
    socks = []
    for conn in conns:
        sock = socket_of(conn)
        if sock is None or sock.fileno() < 0:
            return  # closed: its caller finds out at once
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the socket does not show
        if pending is not None and pending() > 0:
            return
        socks.append(sock)
    if not socks:
        return
    if hasattr(select, "poll"):  # no FD_SETSIZE limit: a kernel may hold over 1024 descriptors
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLIN)
        poller.poll(seconds * 1000)
    else:
        select.select(socks, [], [], seconds)


def result_arrived(result: Any) -> bool:
    """Whether an AsyncResult holds a reply (as opposed to having expired)."""
    return bool(result._is_ready)


def is_reply(result: Any, exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``result.value``, is the server's answer to that request (an
    exception of the remote code; rpyc may re-raise it as a new instance, e.g. StopIteration)
    rather than a failure to receive it."""
    return result is not None and bool(result._is_ready and result._is_exc)


# -- messages on the wire ------------------------------------------------------------------------
def request_parts(boxed_args: Any) -> Tuple[Any, Tuple[Any, ...]]:
    """A request's boxed arguments, as ``_send`` gets them and the wire carries them:
    (id_pack of the object it is about, or None; the plain values of the other arguments,
    None where an argument is not a plain value)."""
    label, items = boxed_args
    if label != _consts.LABEL_TUPLE or not items:
        return None, ()
    first = items[0]
    target = first[1] if first[0] in (_consts.LABEL_REMOTE_REF, _consts.LABEL_LOCAL_REF) else None
    values = tuple(item[1] if item[0] == _consts.LABEL_VALUE else None for item in items[1:])
    return target, values


def message_bytes(msg: int, seq: int, args: Any) -> bytes:
    """What ``Connection._send`` hands the channel for a message (see ``Connection._dispatch``)."""
    return _brine.I1.pack(msg) + _brine.dump((seq, args))


def frame_size(conn: Any, data: bytes) -> int:
    """Bytes a message takes on the wire: rpyc's frame header, the payload (compressed as rpyc's
    channel compresses it) and the flusher byte."""
    size = len(data)
    if size > _Channel.COMPRESSION_THRESHOLD and getattr(getattr(conn, "_channel", None), "compress", False):
        size = len(zlib.compress(data, _Channel.COMPRESSION_LEVEL))
    return _Channel.FRAME_HEADER.size + size + len(_Channel.FLUSHER)


def local_object(conn: Any, id_pack: Any) -> Any:
    """The object of this side that a request of the server is about (None when unknown)."""
    try:
        return conn._local_objects[tuple(id_pack)]
    except Exception:
        return None


# -- remote exceptions ---------------------------------------------------------------------------
def remote_tb_text(exc: BaseException) -> Optional[str]:
    """The server-formatted traceback rpyc attached to a remote exception (None for others).
    Looks only at rpyc's own exception classes, so a local object is never touched."""
    if not is_rpyc_exception_class(type(exc)):
        return None
    text = exc.__dict__.get("_remote_tb")
    return text if isinstance(text, str) else None


def is_remote_exception(exc: BaseException) -> bool:
    """Whether ``exc`` came from the server (an instance of a class rpyc made for it)."""
    return is_rpyc_exception_class(type(exc))


def is_rpyc_exception_class(cls: type) -> bool:
    """rpyc's own local subclasses made for remote exceptions (``…<locals>.Derived``)."""
    try:
        return cls in _vinegar._exception_classes_cache.values()
    except TypeError:  # an unhashable class
        return False


_unloadable_classes: dict = {}


def unloadable_exception_class(module: str, name: str) -> type:
    """A stand-in class named like a remote exception type that rpyc cannot rebuild."""
    fullname = name if module == "builtins" else f"{module}.{name}"
    cls = _unloadable_classes.get(fullname)
    if cls is None:
        base = type(fullname, (_vinegar.GenericException,), {"__module__": f"{_vinegar.__name__}/{module}"})
        cls = _unloadable_classes[fullname] = _vinegar._get_exception_class(base)
    return cls


def _rebuild_unloadable(raw: Any) -> Optional[BaseException]:
    """rpyc 6 cannot rebuild exception groups (their __new__ needs arguments), and names a
    built-in type this Python lacks ``builtins.X`` (ExceptionGroup before Python 3.11)."""
    try:
        (modname, clsname), args, attrs, tbtext = raw
    except Exception:
        return None
    cls = unloadable_exception_class(modname, clsname)
    exc = cls.__new__(cls)
    group = clsname.endswith("ExceptionGroup") and args and isinstance(args[0], str)
    exc.args = (args[0],) if group else tuple(args)  # a group's message; its members are in the traceback
    exc._remote_tb = tbtext
    return exc


# Built-in exception types of newer Pythons (3.10: EncodingWarning, 3.11: the groups, 3.13:
# PythonFinalizationError).  Classes a server made with exec() are "builtins." too: they keep that.
NEWER_BUILTINS = {"EncodingWarning", "BaseExceptionGroup", "ExceptionGroup", "PythonFinalizationError"}


def _missing_builtin(exc: BaseException) -> bool:
    """rpyc's stand-in for a built-in exception type of a newer Python than this one."""
    name = type(exc).__name__
    return (isinstance(exc, _vinegar.GenericException) and name.startswith("builtins.")
            and name[len("builtins."):] in NEWER_BUILTINS)


def unbox_exc_with(conn: Any, on_exception: Callable[[BaseException], None]) -> Callable[[Any], Any]:
    """A replacement for ``conn._unbox_exc`` (an instance attribute: this connection only) that
    rebuilds exception groups rpyc cannot load and calls ``on_exception`` for every remote
    exception as it arrives."""
    original = conn._unbox_exc

    def _unbox_exc(raw: Any) -> Any:
        try:
            exc = original(raw)
        except TypeError:
            exc = _rebuild_unloadable(raw)
            if exc is None:
                raise
        else:
            if isinstance(exc, BaseException) and _missing_builtin(exc):
                exc = _rebuild_unloadable(raw) or exc
        if isinstance(exc, BaseException):
            try:
                on_exception(exc)
            except Exception:
                pass
        return exc

    return _unbox_exc


def _frames(tb: Any) -> List[Any]:
    out = []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def request_in_traceback(tb: Any) -> Optional[Tuple[Any, str, tuple]]:
    """(proxy, operation, args) of the innermost rpyc request a local traceback went through."""
    found = None
    for frame in _frames(tb):
        if frame.f_code.co_name in ("syncreq", "asyncreq") and frame.f_code.co_filename.startswith(RPYC_DIR):
            loc = frame.f_locals
            found = (loc.get("proxy"), HANDLER_NAMES.get(loc.get("handler"), "?"), tuple(loc.get("args", ())))
    return found


def connection_in_traceback(tb: Any) -> Any:
    """The connection whose request a local traceback went through (innermost), or None."""
    found = None
    for frame in _frames(tb):
        if not frame.f_code.co_filename.startswith(RPYC_DIR):
            continue
        for name in ("self", "proxy", "conn"):
            value = frame.f_locals.get(name)
            if isinstance(value, Connection):
                found = value
            elif is_netref(value):
                found = connection_of(value) or found
            elif isinstance(value, AsyncResult):
                found = value._conn or found
    return found


def fetch_source_lines(conn: Any, places: List[Tuple[str, int]], timeout: float = 1.5) -> Optional[tuple]:
    """Server-side ``linecache.getline`` for each (file, line), in one round trip, or None."""
    expr = "tuple(__import__('linecache').getline(f, n) for f, n in %r)" % (tuple(places),)
    try:
        result = rpyc.async_(conn.eval)(expr)
        result.set_expiry(timeout)
        lines = result.value
    except Exception:
        return None
    return lines if isinstance(lines, tuple) else None


# -- streams that do not wait forever --------------------------------------------------------------
IN_PLACE_LIMIT = 16 << 20  # frames up to this size are received into one buffer allocated up front
class _ReadTimeout:
    """While ``read_timeout`` is set, a read that is not complete after that many seconds
    raises ``socket.timeout``. rpyc's own ``read`` retries timed-out reads forever, so a peer
    that sends part of a frame and then nothing (an SSH banner: ``SSH-`` reads as a 1.4 GB
    frame) would hang ``%rpyc_connect`` for good."""

    read_timeout: Optional[float] = None
    # Once connected: a message that stops arriving half-way (no byte for this many seconds) means
    # the connection is lost; rpyc would wait for the rest forever, whatever the call's timeout.
    stall_timeout: Optional[float] = None

    def write(self, data: bytes) -> None:
        """rpyc's write re-slices (copies) the unsent rest after every send: quadratic in the
        frame size; slices of one memoryview cost nothing."""
        view = memoryview(data)
        try:
            while view.nbytes:
                view = view[self.sock.send(view):]  # type: ignore[attr-defined]
        except OSError as e:
            self.close()  # type: ignore[attr-defined]
            raise EOFError(e) from None

    def read(self, count: int) -> bytes:
        if self.read_timeout is not None:
            deadline = time.monotonic() + self.read_timeout
            return self._read_bounded(count, lambda: deadline - time.monotonic(),
                                      lambda: socket.timeout("timed out"))
        if self.stall_timeout is not None:
            stall = self.stall_timeout
            return self._read_bounded(count, lambda: stall, lambda: EOFError(
                f"the server stopped sending in the middle of a message for {stall:g} s"))
        return super().read(count)  # type: ignore[misc]

    def _read_bounded(self, count: int, seconds_left: Callable[[], float],
                      failure: Callable[[], BaseException]) -> bytes:
        """rpyc's read, ended by ``failure()`` (the stream closed) when no byte arrives within
        ``seconds_left()``.  The socket's own timeout is left alone: other threads send on it."""
        sock = self.sock  # type: ignore[attr-defined]
        if count > IN_PLACE_LIMIT:  # a length no chunk of ours has (or a peer's garbage): as it comes
            return self._read_pieces(sock, count, seconds_left, failure)
        data = bytearray(count)  # received in place: a megabyte chunk is not 16 pieces joined
        view, done = memoryview(data), 0
        while done < count:
            left = seconds_left()
            if left <= 0 or not _readable(sock, left):
                raise self._fail(failure())
            try:
                n = sock.recv_into(view[done:], count - done)
            except (socket.timeout, InterruptedError, BlockingIOError):
                continue
            except OSError as e:
                raise self._fail(EOFError(e)) from None
            if not n:
                raise self._fail(EOFError("connection closed by peer"))
            done += n
        return data  # type: ignore[return-value]

    def _read_pieces(self, sock: socket.socket, count: int, seconds_left: Callable[[], float],
                     failure: Callable[[], BaseException]) -> bytes:
        data = []
        while count > 0:
            left = seconds_left()
            if left <= 0 or not _readable(sock, left):
                raise self._fail(failure())
            try:
                buf = sock.recv(min(self.MAX_IO_CHUNK, count))  # type: ignore[attr-defined]
            except (socket.timeout, InterruptedError, BlockingIOError):
                continue
            except OSError as e:
                raise self._fail(EOFError(e)) from None
            if not buf:
                raise self._fail(EOFError("connection closed by peer"))
            data.append(buf)
            count -= len(buf)
        return b"".join(data)

    def _fail(self, error: BaseException) -> BaseException:
        self.close()  # type: ignore[attr-defined]
        return error


def _readable(sock: socket.socket, seconds: float) -> bool:
    pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the socket does not show
    if pending is not None and pending() > 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    return bool(select.select([sock], [], [], seconds)[0])


class _TimedSocketStream(_ReadTimeout, SocketStream):
    pass


def stream_from_socket(sock: socket.socket) -> SocketStream:
    return _TimedSocketStream(sock)


def set_read_timeout(stream: Any, seconds: Optional[float]) -> None:
    """Bound every read of ``stream`` (None: rpyc's wait-forever reads)."""
    if isinstance(stream, _ReadTimeout):
        stream.read_timeout = seconds


def set_stall_timeout(stream: Any, seconds: Optional[float]) -> None:
    """Once connected: a message that stops half-way for ``seconds`` is a lost connection."""
    if isinstance(stream, _ReadTimeout):
        stream.stall_timeout = seconds
