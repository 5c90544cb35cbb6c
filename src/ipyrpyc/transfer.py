"""Copies of remote data at link speed: values (numpy, pandas, plain data) and files.

The server program keeps the large buffers of a copy (array data, file contents) on its
side, and this side moves them in chunks of :data:`CHUNK` bytes with several requests in
flight (a window of about a quarter of a second of data), so a long link stays full;
replies are handled in order and land in the final numpy arrays or files.  Nothing is
pickled unless the connection is trusted.  A copy that lasts more than a second shows a
tqdm bar (a widget in a notebook, text in a terminal).  Ctrl-C stops issuing requests
and waits briefly for those in flight, so the connection answers the next call; partial
files never appear under their names (they are written to a temporary name and renamed
once complete and checked).

``%%rpyc --push/--pull``, ``%rpyc_get``/``%rpyc_put`` and ``ipyrpyc.pull``/``push``/
``get``/``put`` all go through the functions here.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import signal
import socket
import stat
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import _rpyc
from .calls import CallGuard
from .errors import CallInterrupted, ConnectionLostError, RemoteTimeoutError, TransferError
from .helper import RemoteHelper
from .remote import codec
from .remote.bulk import TEMP_MARK, safe_parts, warm_allocator

CHUNK = 1 << 20  # bytes per request
START_WINDOW = 16 << 20  # bytes in flight at first; then about WINDOW_SECONDS of data
MIN_WINDOW, MAX_WINDOW = 4 << 20, 64 << 20
WINDOW_SECONDS = 0.25
MAX_IN_FLIGHT = 256  # requests
REQUEST_COST = 4096  # what a request without data counts for in the window
DRAIN_SECONDS = 0.5  # after Ctrl-C or a failure, how long the replies in flight are awaited
PROGRESS_AFTER = 1.0  # seconds before a progress bar appears

Request = Tuple[str, tuple, int, Optional[Callable[[Any], None]]]  # function, args, data bytes, reply handler


# -- the connection ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Link:
    """A connection and the server program's functions on it, as a transfer needs them."""

    conn: Any
    helper: RemoteHelper
    guard: Optional[CallGuard]
    name: str  # in messages: the connection's name, or its address
    trusted: bool  # pickle allowed: the server may run code here anyway

    def timeout(self) -> Optional[float]:
        return _rpyc.call_timeout(self.conn)


_fallback_registry: Any = None


def link_of(conn: Any, *, trusted: Optional[bool] = None) -> Link:
    """The :class:`Link` of an open rpyc connection: one of ours (``%rpyc_connect``,
    ``ipyrpyc.connect``) or one opened by hand, which gets the server program at first use."""
    if not isinstance(conn, _rpyc.Connection):
        raise TypeError(f"expected an rpyc connection, not {type(conn).__name__}")
    guard = vars(conn).get("sync_request")
    record = guard.record if isinstance(guard, CallGuard) else None
    helper = record.helper if record is not None else None
    if record is None:
        registry = _registry()
        record = registry.record_of(conn)
        helper = registry.helper_of(record)
    if _rpyc.is_closed(conn):
        if record.guard is not None:
            raise record.guard.lost(None)
        raise ConnectionLostError(f"the connection to {record.address} is closed")
    if helper is None:
        why = f" ({record.helper_error})" if record.helper_error else ""
        raise TransferError(f"{record.address} cannot run ipyrpyc's helper{why}, so it cannot copy data")
    if trusted is None:
        trusted = bool(getattr(getattr(record.owner, "target", None), "trust", False))
    return Link(conn, helper, record.guard, record.name, trusted)


def _registry() -> Any:
    """The registry of a loaded extension (so that records are shared), else one of our own."""
    global _fallback_registry
    import ipyrpyc

    for extension in list(ipyrpyc._loaded.values()):
        return extension.registry
    if _fallback_registry is None:
        from .registry import Registry

        _fallback_registry = Registry(dict)
    return _fallback_registry


def _transfer_id() -> str:
    return os.urandom(8).hex()


_allocator_warm = False


@contextlib.contextmanager
def _tuned(link: Link, compress: bool) -> Iterator[None]:
    """For the duration of a copy: what this side sends is compressed only if asked, and a TCP
    socket sends small requests at once (Nagle's algorithm would hold them back)."""
    global _allocator_warm
    if not _allocator_warm:
        _allocator_warm = True
        warm_allocator()
    previous = _rpyc.set_compress(link.conn, compress)
    sock = _rpyc.socket_of(link.conn)
    nodelay = None
    try:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, ValueError):
        nodelay = None
    try:
        yield
    finally:
        _rpyc.set_compress(link.conn, previous)
        if nodelay == 0:
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) sets the event instead of raising KeyboardInterrupt in the middle of
    an rpyc message, which would leave the stream out of step (main thread only)."""
    hit = threading.Event()
    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is not None:
            try:
                signal.signal(signal.SIGINT, lambda signum, frame: hit.set())
                installed = True
            except (ValueError, OSError):
                pass
    try:
        yield hit
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)


# -- progress ---------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar in bytes (rate, ETA) that appears once a copy has lasted :data:`PROGRESS_AFTER`."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.done = 0
        self.start = time.monotonic()
        self.bar: Any = None

    def add(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.start >= PROGRESS_AFTER:
            self.enabled = False  # one try
            self.bar = _make_bar(self.total, self.desc, time.monotonic() - self.start)
            if self.bar is not None:
                self.bar.update(self.done)

    def close(self) -> None:
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.close()
            self.bar = None


def _make_bar(total: int, desc: str, elapsed: float) -> Any:
    """tqdm's bar for where we run: the notebook widget in a kernel that has ipywidgets, text on
    stderr elsewhere.  None if tqdm is missing."""
    try:
        if _in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
            from tqdm.notebook import tqdm
        else:
            from tqdm.std import tqdm
        bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=True,
                   mininterval=0.2, smoothing=0)  # the average rate: chunks arrive in bursts
    except Exception:
        return None
    bar.start_t -= elapsed  # the copy started before the bar: rate and ETA from the real start
    bar.last_print_t = bar.start_t
    return bar


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# -- the pipeline -----------------------------------------------------------------------------------
class Pipeline:
    """Requests issued with several in flight, their replies handled in order.

    Stops at the first failure (a remote exception, a local one in a reply handler or in the
    request generator), at Ctrl-C and at the connection's timeout without a reply; the
    requests still in flight are then awaited at most :data:`DRAIN_SECONDS`, and if some are
    still out, the connection's guard remembers them (the next call says it is busy until
    they are answered).
    """

    def __init__(self, link: Link, progress: Progress, what: str) -> None:
        self.link, self.progress, self.what = link, progress, what
        self.pending: Deque[Tuple[Any, int, Optional[Callable[[Any], None]], float]] = collections.deque()

    def run(self, requests: Iterable[Request]) -> None:
        link = self.link
        if link.guard is not None:
            link.guard.check_busy(link.conn)  # behind an abandoned call, every chunk would wait
        window, inflight, moved, started = START_WINDOW, 0, 0, time.monotonic()
        rtt = None  # the shortest time a request took: the link's round trip, about
        it = iter(requests)
        exhausted = False
        with _interrupts_deferred() as interrupted:
            try:
                while True:
                    while not exhausted and not interrupted.is_set() and (
                            not self.pending or (inflight < window and len(self.pending) < MAX_IN_FLIGHT)):
                        request = next(it, None)
                        if request is None:
                            exhausted = True
                            break
                        name, args, size, on_reply = request
                        self.pending.append((link.helper.send(name, *args), size, on_reply, time.monotonic()))
                        inflight += size + REQUEST_COST
                    if not self.pending:
                        break
                    result, size, on_reply, sent = self.pending[0]
                    if not self._wait(result, interrupted):
                        break
                    self.pending.popleft()
                    now = time.monotonic()
                    rtt = now - sent if rtt is None else min(rtt, now - sent)
                    inflight -= size + REQUEST_COST
                    value = result.value  # the remote exception, if it failed
                    if on_reply is not None:
                        on_reply(value)
                    moved += size
                    self.progress.add(size)
                    elapsed = now - started
                    if elapsed > 0.02:  # keep WINDOW_SECONDS of data in flight beyond a round trip's worth
                        window = int(min(MAX_WINDOW, max(MIN_WINDOW, moved / elapsed * (WINDOW_SECONDS + 2 * rtt))))
            except EOFError as e:
                raise self._lost(e) from None
            finally:
                self._drain()
            if interrupted.is_set():
                raise CallInterrupted(f"interrupted {self.what}")

    def _wait(self, result: Any, interrupted: threading.Event) -> bool:
        """Serve the connection until ``result`` arrives (True), or Ctrl-C (False)."""
        conn, timeout = self.link.conn, self.link.timeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _rpyc.result_arrived(result):
            if interrupted.is_set():
                return False
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                raise RemoteTimeoutError(
                    f"{self.link.name}: no data for {timeout:g} s during {self.what}; raise the limit with "
                    "%rpyc_connect --timeout or %config RpycMagics.timeout (in scripts: ipyrpyc.connect(timeout=…))")
            conn.serve(left)
        return True

    def _drain(self) -> None:
        pending, conn = self.pending, self.link.conn
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            while pending:
                if _rpyc.result_arrived(pending[0][0]):
                    pending.popleft()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.serve(min(0.05, left))
        except Exception:
            pass  # lost: the next call says so
        if pending and self.link.guard is not None:
            self.link.guard.remember(pending[-1][0], f"the rest of {self.what}")
        pending.clear()

    def _lost(self, cause: BaseException) -> BaseException:
        if self.link.guard is not None:
            return self.link.guard.lost(cause)
        return ConnectionLostError(f"the connection {self.link.name} was lost during {self.what}")


def _forget(link: Link, tid: str) -> None:
    """Tell the server to drop transfer ``tid`` (open files, buffers); no reply awaited."""
    with contextlib.suppress(Exception):
        link.helper.send("close", tid)


def _chunks(total: int, chunk: int = CHUNK) -> Iterator[Tuple[int, int]]:
    for offset in range(0, total, chunk):
        yield offset, min(chunk, total - offset)


def _remote_failure(e: BaseException) -> str:
    """One line for an exception raised on the server (or here)."""
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    strerror = getattr(e, "strerror", None)
    if isinstance(e, OSError) and strerror:
        message = strerror
    elif len(getattr(e, "args", ())) == 2 and isinstance(e.args[1], str) and isinstance(e.args[0], int):
        message = e.args[1]  # an OSError rpyc rebuilt from (errno, strerror)
    return message or type(e).__name__


# -- values -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Pulled:
    """One name of a pull: its value, or why it could not be copied."""

    name: Optional[str]
    value: Any = None
    problem: Optional[str] = None  # "missing" or "type"
    message: str = ""


def pull_values(link: Link, target: Any, names: Optional[Sequence[str]], *, compress: bool = False,
                progress: bool = True) -> List[Pulled]:
    """Copies of ``target`` (``names`` None) or of ``target[name]`` for each name: one round
    trip, then the large buffers of all of them in pipelined chunks."""
    tid = _transfer_id()
    with _tuned(link, compress), _refused_by_server(", ".join(names) if names else "the value"):
        try:
            results, sizes = link.helper.pull(tid, target, None if names is None else tuple(names), compress,
                                              link.trusted)
        except BaseException:
            _forget(link, tid)  # interrupted while the server exported: it may keep buffers for us
            raise
        trees = tuple(r[2] for r in results if r[1] is None)
        sizes = tuple(int(n) for n in sizes)
        if sizes:
            try:
                objects = codec.allocate(trees, sizes)
            except BaseException:
                _forget(link, tid)
                raise
            views = [codec.byte_view(o) for o in objects]
            _read_buffers(link, tid, views, sizes, progress, names)
        else:
            objects = []
    rebuilder = codec.Rebuilder(objects, allow_pickle=link.trusted)
    out = []
    for name, problem, tree in results:
        if problem is not None:
            out.append(Pulled(name, problem=problem, message=tree))
            continue
        try:
            out.append(Pulled(name, rebuilder.value(tree)))
        except (TypeError, ValueError) as e:  # what this side cannot rebuild (no pandas here, a forged tree …)
            out.append(Pulled(name, problem="type", message=str(e)))
    return out


def _read_buffers(link: Link, tid: str, views: List[memoryview], sizes: Tuple[int, ...], progress: bool,
                  names: Optional[Sequence[str]]) -> None:
    """Fill ``views`` (the buffers laid end to end) from the server's buffers of pull ``tid``."""
    total = sum(sizes)
    starts = []
    position = 0
    for n in sizes:
        starts.append(position)
        position += n
    what = f"the copy of {', '.join(names)}" if names else "the copy"

    def place(offset: int, size: int) -> Callable[[Any], None]:
        def on_reply(data: Any) -> None:
            if len(data) != size:
                raise TransferError(f"{what}: the server sent {len(data)} bytes where {size} were due "
                                    "(did the value change during the copy?)")
            view, at, i = memoryview(data), offset, _index_of(starts, offset)
            while view.nbytes:
                local = at - starts[i]
                n = min(view.nbytes, sizes[i] - local)
                views[i][local:local + n] = view[:n]
                view, at, i = view[n:], at + n, i + 1

        return on_reply

    bar = Progress(total, ", ".join(names) if names else "pull", progress)
    try:
        Pipeline(link, bar, what).run(("read", (tid, offset, size), size, place(offset, size))
                                      for offset, size in _chunks(total))
    except BaseException:
        _forget(link, tid)
        raise
    finally:
        bar.close()


def _index_of(starts: List[int], offset: int) -> int:
    import bisect

    return max(0, bisect.bisect_right(starts, offset) - 1)


class Outgoing:
    """A local value exported for a push: its tree, and the buffers that follow it in chunks."""

    def __init__(self, value: Any, allow_pickle: bool) -> None:
        self.exporter = codec.Exporter(out_of_band=True, allow_pickle=allow_pickle)
        self.tree = self.exporter.value(value)  # TypeError: not plain data
        self.sizes = self.exporter.sizes


def push_value(link: Link, namespace: Any, name: str, value: Any, *, compress: bool = False,
               progress: bool = True) -> None:
    """Bind ``namespace[name]`` on the server to a copy of ``value`` (or of an :class:`Outgoing`):
    one round trip for plain data and small arrays, else the buffers in pipelined chunks.
    ``TypeError`` names what is not plain data (pickle is used only on a trusted connection)."""
    out = value if isinstance(value, Outgoing) else Outgoing(value, link.trusted)
    tree, sizes = out.tree, out.sizes
    tid = _transfer_id()
    with _tuned(link, compress), _refused_by_server(name):
        if not sizes:
            link.helper.push(tid, tree, (), namespace, name, compress, link.trusted)
            return
        total = sum(sizes)
        flat = _concatenated(out.exporter.buffers)

        def requests() -> Iterator[Request]:
            yield "push", (tid, tree, sizes, namespace, name, compress, link.trusted), 0, None
            for offset, size in _chunks(total):
                yield "write", (tid, offset, flat(offset, size)), size, None
            yield "finish", (tid,), 0, None

        bar = Progress(total, name, progress)
        try:
            Pipeline(link, bar, f"the copy of {name}").run(requests())
        except BaseException:
            _forget(link, tid)
            raise
        finally:
            bar.close()


@contextlib.contextmanager
def _refused_by_server(name: str) -> Iterator[None]:
    """What the server could not take or give (no numpy there, no memory …): one line naming it."""
    try:
        yield
    except Exception as e:
        if not _rpyc.is_remote_exception(e):
            raise
        raise TransferError(f"{name}: the server failed to copy it: {type(e).__name__}: "
                            f"{_remote_failure(e)}") from None


def _concatenated(views: List[memoryview]) -> Callable[[int, int], bytes]:
    """``read(offset, size)`` over buffers laid end to end."""
    starts, position = [], 0
    for v in views:
        starts.append(position)
        position += v.nbytes

    def read(offset: int, size: int) -> bytes:
        parts, i = [], _index_of(starts, offset)
        while size > 0 and i < len(views):
            local = offset - starts[i]
            piece = views[i][local:local + size]
            if piece.nbytes:
                parts.append(piece)
                offset, size = offset + piece.nbytes, size - piece.nbytes
            i += 1
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    return read


# -- files ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Copied:
    """What ``%rpyc_get`` / ``%rpyc_put`` copied."""

    source: str
    target: str
    files: int = 0
    directories: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    skipped: List[str] = dataclasses.field(default_factory=list)
    sha256: Optional[str] = None  # of a single file

    def __str__(self) -> str:
        rate = f", {self.nbytes / self.seconds / 1e6:,.0f} MB/s" if self.seconds > 0 and self.nbytes > 1e6 else ""
        what = f"{self.files} file{'s' if self.files != 1 else ''}" if self.directories else "1 file"
        skipped = f"; skipped {len(self.skipped)} that are not regular files" if self.skipped else ""
        return (f"Copied {self.source} to {self.target}: {what}, {_human(self.nbytes)} in {self.seconds:.2f} s"
                f"{rate}, sha256 checked{skipped}")


def _remote_name(path: str) -> str:
    """The last component of a server path (either separator)."""
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _stat_remote(link: Link, label: str, path: str) -> Tuple[str, int, int, int, str]:
    try:
        kind, size, mtime_ns, mode, absolute = link.helper.stat(path)
    except Exception as e:
        raise _one_line(e, link, label) from None
    return kind, int(size), int(mtime_ns), int(mode), absolute


class _LocalFile:
    """A local file being received under a temporary name beside its target; every local
    failure is a :class:`TransferError` naming the target."""

    def __init__(self, target: str, size: int, mtime_ns: int, mode: int, force: bool) -> None:
        self.target, self.size, self.mtime_ns, self.mode, self.force = target, size, mtime_ns, mode, force
        directory, base = os.path.split(target)
        self.temp: Optional[str] = os.path.join(directory, "." + base + TEMP_MARK + os.urandom(4).hex())
        self.hash = hashlib.sha256()
        self.written = 0
        with self._local():
            self.file = open(self.temp, "xb", buffering=0)

    @contextlib.contextmanager
    def _local(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise TransferError(f"cannot write {self.target}: {e.strerror or e}") from None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with self._local():
            while view.nbytes:
                view = view[self.file.write(view):]
        self.hash.update(data)
        self.written += len(data)

    def commit(self, digest: Optional[str], count: int) -> str:
        with self._local():
            self.file.close()
        mine = self.hash.hexdigest()
        if count != self.written or self.written != self.size:
            raise TransferError(f"{self.target}: {count:,} bytes read on the server, {self.written:,} written here, "
                                f"{self.size:,} expected (did the file change during the copy?)")
        if digest != mine:
            raise TransferError(f"{self.target}: the sha256 of the data differs between the server and here")
        if not self.force and os.path.lexists(self.target):
            raise TransferError(f"{self.target} appeared during the copy; --force replaces it")
        assert self.temp is not None
        with self._local():
            os.chmod(self.temp, self.mode)
            os.utime(self.temp, ns=(self.mtime_ns, self.mtime_ns))
            os.replace(self.temp, self.target)
        self.temp = None
        return mine

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        if self.temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            self.temp = None


def get(link: Link, remote: str, local: Optional[str] = None, *, recursive: bool = False, force: bool = False,
        compress: bool = False, progress: bool = True, label: Optional[str] = None) -> Copied:
    """Copy the server's file (or directory, with ``recursive``) ``remote`` to ``local``."""
    label = label or f"{link.name}:{remote}"
    if not remote:
        raise TransferError(f"{label}: no remote path given")
    kind, size, mtime_ns, mode, absolute = _stat_remote(link, label, remote)
    if kind == "missing":
        raise TransferError(f"{label}: no such file or directory")
    if kind == "other":
        raise TransferError(f"{label}: not a regular file or directory")
    if kind == "dir" and not recursive:
        raise TransferError(f"{label} is a directory: -r copies it with its contents")
    target = _local_target(local, _remote_name(absolute))
    started = time.monotonic()
    if kind == "file":
        _check_local_target(target, force, directory=False)
        plan = [((), target, size, mtime_ns, mode)]
        copied = Copied(label, target, files=1, nbytes=size)
        dirs: List[Tuple[str, int]] = []
    else:
        _check_local_target(target, force, directory=True)
        try:
            entries = link.helper.walk(absolute)
        except Exception as e:
            raise _one_line(e, link, label) from None
        plan, dirs, skipped = [], [(target, mtime_ns)], []
        os.makedirs(target, exist_ok=True)
        for parts, ekind, esize, emtime, emode in entries:
            try:
                parts = safe_parts(tuple(parts))
            except ValueError as e:
                raise TransferError(f"{label}: the server listed {e}") from None
            path = os.path.join(target, *parts)
            if ekind == "dir":
                if os.path.lexists(path) and not os.path.isdir(path):
                    raise TransferError(f"{path} is a file, where {label} has a directory")
                os.makedirs(path, exist_ok=True)
                dirs.append((path, int(emtime)))
            elif ekind == "file":
                if os.path.isdir(path):
                    raise TransferError(f"{path} is a directory, where {label} has a file")
                plan.append((parts, path, int(esize), int(emtime), int(emode)))
            else:
                skipped.append("/".join(parts))
        copied = Copied(label, target, files=len(plan), directories=len(dirs), nbytes=sum(p[2] for p in plan),
                        skipped=skipped)
    copied.sha256 = _receive_files(link, absolute, plan, force, compress, progress, label)
    for path, dmtime in reversed(dirs):  # after their files: writing a file changes its directory's time
        with contextlib.suppress(OSError):
            os.utime(path, ns=(dmtime, dmtime))
    copied.seconds = time.monotonic() - started
    return copied


def _local_target(local: Optional[str], name: str) -> str:
    if not local:
        return name
    local = os.path.expanduser(local)
    if os.path.isdir(local):
        return os.path.join(local, name)
    if local.endswith(("/", os.sep)):
        raise TransferError(f"{local}: no such directory")
    parent = os.path.dirname(os.path.abspath(local))
    if not os.path.isdir(parent):
        raise TransferError(f"{local}: no such directory {parent}")
    return local


def _check_local_target(target: str, force: bool, directory: bool) -> None:
    if not os.path.lexists(target):
        return
    if os.path.isdir(target) and not directory:
        raise TransferError(f"{target} is a directory")
    if directory and not os.path.isdir(target):
        raise TransferError(f"{target} exists and is not a directory")
    if not force:
        raise TransferError(f"{target} exists; --force replaces it")


def _receive_files(link: Link, top: str, plan: List[Tuple[Tuple[str, ...], str, int, int, int]], force: bool,
                   compress: bool, progress: bool, label: str) -> Optional[str]:
    """Fetch each planned file through one pipeline; returns the sha256 of the last one."""
    total = sum(p[2] for p in plan)
    state: Dict[str, Any] = {"file": None, "digest": None}
    tids: List[str] = []

    def opened(path: str, size: int, mtime_ns: int, mode: int) -> Callable[[Any], None]:
        def on_reply(info: Any) -> None:
            state["file"] = _LocalFile(path, size, mtime_ns, mode, force)
        return on_reply

    def received(data: Any) -> None:
        state["file"].write(data)

    def closed(reply: Any) -> None:
        digest, count = reply
        f = state["file"]
        try:
            state["digest"] = f.commit(digest, int(count))
        finally:
            f.discard()
            state["file"] = None

    def requests() -> Iterator[Request]:
        for parts, path, size, mtime_ns, mode in plan:
            tid = _transfer_id()
            tids.append(tid)
            yield "fopen", (tid, top, parts, compress), 0, opened(path, size, mtime_ns, mode)
            for offset, n in _chunks(size):
                yield "fread", (tid, offset, n), n, received
            yield "fclose", (tid,), 0, closed

    bar = Progress(total, _remote_name(top) if len(plan) == 1 else label, progress)
    try:
        _copy_files(link, bar, f"the copy of {label}", requests(), tids, label, compress)
    finally:
        if state["file"] is not None:
            state["file"].discard()
    return state["digest"]


def _one_line(e: BaseException, link: Link, label: str) -> BaseException:
    """A failure of a file copy as it is raised to the user: a remote one as one line naming the
    server path, ours (interrupts, timeouts, lost connections, TransferError) unchanged."""
    if not _rpyc.is_remote_exception(e):
        return e
    where = getattr(e, "filename", None)
    where = f"{link.name}:{where}" if isinstance(where, str) and where else label
    return TransferError(f"{where}: {_remote_failure(e)}")


def put(link: Link, local: str, remote: str, *, recursive: bool = False, force: bool = False,
        compress: bool = False, progress: bool = True, label: Optional[str] = None) -> Copied:
    """Copy the local file (or directory, with ``recursive``) ``local`` to the server's ``remote``
    (an existing server directory receives it under its own name; empty: the server's working
    directory)."""
    label = label or f"{link.name}:{remote}"
    source = os.path.expanduser(local)
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise TransferError(f"{local}: no such file or directory") from None
    except OSError as e:
        raise TransferError(f"{local}: {e.strerror or e}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir and not recursive:
        raise TransferError(f"{local} is a directory: -r copies it with its contents")
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise TransferError(f"{local}: not a regular file or directory")
    kind, _, _, _, absolute = _stat_remote(link, label, remote or ".")
    if kind != "dir" and remote.endswith(("/", "\\")):
        raise TransferError(f"{label}: no such directory on the server")
    name = os.path.basename(os.path.normpath(os.path.abspath(source)))
    top, first = (absolute, (name,)) if kind == "dir" else (absolute, ())
    if kind == "dir":
        sub = _stat_remote(link, label, _join_remote(absolute, name))
        kind = sub[0]
        shown = f"{link.name}:{_join_remote(absolute, name)}"
    else:
        shown = label
    if kind == "file" and is_dir:
        raise TransferError(f"{shown} is a file, cannot copy a directory onto it")
    if kind == "dir" and not is_dir:
        raise TransferError(f"{shown} is a directory")
    if kind in ("file", "dir", "other") and not force:
        raise TransferError(f"{shown} exists; --force replaces it")
    started = time.monotonic()
    if not is_dir:
        plan = [(first, source, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))]
        copied = Copied(local, shown, files=1, nbytes=st.st_size)
        dirs: List[Tuple[Tuple[str, ...], int, int]] = []
    else:
        plan, dirs, skipped = [], [(first, st.st_mtime_ns, stat.S_IMODE(st.st_mode))], []
        for parts, path, entry in _walk_local(source):
            if stat.S_ISDIR(entry.st_mode):
                dirs.append((first + parts, entry.st_mtime_ns, stat.S_IMODE(entry.st_mode)))
            elif stat.S_ISREG(entry.st_mode):
                plan.append((first + parts, path, entry.st_size, entry.st_mtime_ns, stat.S_IMODE(entry.st_mode)))
            else:
                skipped.append(path)
        copied = Copied(local, shown, files=len(plan), directories=len(dirs), nbytes=sum(p[2] for p in plan),
                        skipped=skipped)
    copied.sha256 = _send_files(link, top, dirs, plan, force, compress, progress, shown)
    copied.seconds = time.monotonic() - started
    return copied


def _join_remote(directory: str, name: str) -> str:
    sep = "\\" if "\\" in directory and "/" not in directory else "/"
    return directory.rstrip("/\\") + sep + name


def _copy_files(link: Link, bar: Progress, what: str, requests: Iterator, tids: List[str], label: str,
                compress: bool) -> None:
    """Run a file copy's requests through the pipeline; on any failure the server forgets the file
    being written and the error becomes one line naming ``label``."""
    try:
        with _tuned(link, compress):
            Pipeline(link, bar, what).run(requests)
    except BaseException as e:
        if tids:
            _forget(link, tids[-1])
        raise _one_line(e, link, label) from None
    finally:
        bar.close()


def _walk_local(top: str) -> Iterator[Tuple[Tuple[str, ...], str, os.stat_result]]:
    """Every entry under ``top`` (links followed, each directory once), parents first."""
    seen = set()
    stack: List[Tuple[str, ...]] = [()]
    while stack:
        parts = stack.pop()
        where = os.path.join(top, *parts)
        st = os.stat(where)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        children = []
        for name in sorted(os.listdir(where)):
            path = os.path.join(where, name)
            try:
                entry = os.stat(path)
            except OSError:
                continue
            yield parts + (name,), path, entry
            if stat.S_ISDIR(entry.st_mode):
                children.append(parts + (name,))
        stack.extend(reversed(children))


def _send_files(link: Link, top: str, dirs: List[Tuple[Tuple[str, ...], int, int]],
                plan: List[Tuple[Tuple[str, ...], str, int, int, int]], force: bool, compress: bool, progress: bool,
                label: str) -> Optional[str]:
    total = sum(p[2] for p in plan)
    state: Dict[str, Any] = {"digest": None}
    tids: List[str] = []

    def committed(digest: Any) -> None:
        state["digest"] = digest

    def requests() -> Iterator[Request]:
        for parts, _, _ in dirs:
            yield "mkdir", (top, parts, None), 0, None
        for parts, path, size, mtime_ns, mode in plan:
            tid = _transfer_id()
            tids.append(tid)
            yield "fcreate", (tid, top, parts, size, mtime_ns, mode, force, compress), 0, None
            h = hashlib.sha256()
            sent = 0
            try:
                f = open(path, "rb", buffering=0)
            except OSError as e:
                raise TransferError(f"cannot read {path}: {e.strerror or e}") from None
            with f:
                while sent < size:
                    try:
                        data = f.read(min(CHUNK, size - sent))
                    except OSError as e:
                        raise TransferError(f"cannot read {path}: {e.strerror or e}") from None
                    if not data:
                        break
                    h.update(data)
                    yield "fwrite", (tid, sent, data), len(data), None
                    sent += len(data)
            if sent != size:
                raise TransferError(f"{path} changed during the copy ({sent:,} bytes read, {size:,} expected)")
            yield "fcommit", (tid, h.hexdigest()), 0, committed
        if dirs:
            yield "set_times", (top, tuple((parts, mtime) for parts, mtime, _ in reversed(dirs))), 0, None

    bar = Progress(total, os.path.basename(plan[0][1]) if len(plan) == 1 and not dirs else label, progress)
    _copy_files(link, bar, f"the copy to {label}", requests(), tids, label, compress)
    return state["digest"]


# -- the API for scripts ----------------------------------------------------------------------------
def pull(conn: Any, name_or_netref: Any, *, compress: bool = False, progress: bool = True) -> Any:
    """A local copy of a server value: ``pull(conn, "name")`` for a variable of the connection's
    namespace (what ``conn.execute`` and ``%%rpyc`` define), or ``pull(conn, netref)``.

    numpy arrays (any numeric dtype and shape), bytes, bytearray, memoryview, pandas DataFrames,
    Series and Indexes and nested plain data come at link speed, without pickle.  Anything else
    needs a trusted connection (``ipyrpyc.connect(..., trust=True)``), where it is pickled;
    otherwise :class:`~ipyrpyc.errors.TransferError` names the type.
    """
    link = link_of(conn)
    if isinstance(name_or_netref, str):
        target, names = conn.namespace, (name_or_netref,)
    elif _rpyc.is_netref(name_or_netref):
        if _rpyc.connection_of(name_or_netref) is not conn:
            raise ValueError("that netref belongs to another connection")
        target, names = name_or_netref, None
    else:
        raise TypeError(f"expected a name or a netref, not a local {type(name_or_netref).__name__}")
    (result,) = pull_values(link, target, names, compress=compress, progress=progress)
    if result.problem == "missing":
        raise TransferError(f"{result.name}: not defined on the server")
    if result.problem is not None:
        raise TransferError(pickle_refusal(result.message) if not link.trusted else result.message)
    return result.value


def push(conn: Any, name: str, value: Any, *, compress: bool = False, progress: bool = True) -> None:
    """Bind ``name`` in the connection's namespace on the server to a copy of ``value`` (what
    :func:`pull` copies, the same way)."""
    from .arguments import check_identifier

    check_identifier(name, "name")
    link = link_of(conn)
    try:
        push_value(link, conn.namespace, name, value, compress=compress, progress=progress)
    except (TypeError, ValueError) as e:
        raise TransferError(pickle_refusal(str(e)) if not link.trusted else str(e)) from None


def pickle_refusal(message: str) -> str:
    return (f"{message}; copying it needs pickle, which lets the server run code in this kernel: "
            "only on a --trust connection")


def get_file(conn: Any, remote: str, local: Optional[str] = None, *, recursive: bool = False,
             force: bool = False, compress: bool = False, progress: bool = True) -> Copied:
    """Copy a file (a directory with ``recursive``) from the server, like ``%rpyc_get``."""
    return get(link_of(conn), remote, local, recursive=recursive, force=force, compress=compress, progress=progress)


def put_file(conn: Any, local: str, remote: str = "", *, recursive: bool = False, force: bool = False,
             compress: bool = False, progress: bool = True) -> Copied:
    """Copy a local file (a directory with ``recursive``) to the server, like ``%rpyc_put``."""
    return put(link_of(conn), local, remote, recursive=recursive, force=force, compress=compress, progress=progress)
