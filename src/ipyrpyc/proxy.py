"""A loopback TCP proxy that shows rpyc's frames and delays each direction.

``python -m ipyrpyc proxy HOST:PORT --delay 20`` puts a slow link in front of a server
and prints every request and reply that crosses it: what each netref operation costs
on the wire, seen from outside both programs.  The tests and the benchmark use the
same proxy to count round trips.

Client -> proxy (127.0.0.1, a free port from the OS unless ``--port``) -> server.  Every chunk read from
one side is counted when it arrives at the proxy and forwarded ``delay`` seconds
later, in order, by one writer thread per direction and connection (so a chunk is
never overtaken and delays do not add up for back-to-back chunks).

Counting parses rpyc's channel framing (``rpyc/core/channel.py``): a header
``Struct("!LB")`` = 4-byte big-endian payload length + 1-byte "compressed" flag, then
``length`` bytes of payload, then the one-byte flusher ``b"\\n"``.  Each payload is one
byte of message type and a brine-encoded ``(seq, args)`` (``rpyc/core/protocol.py``);
requests are named by :func:`ipyrpyc.wire.name_request`, as ``%%rpyc_trace`` names them
(``getattr``, ``call``, ``del`` …), so a report can say which requests a cell made.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rpyc.core import brine, consts
from rpyc.core.channel import Channel

from .wire import RequestName, name_request

HEADER = Channel.FRAME_HEADER  # Struct("!LB")
FLUSHER_LEN = len(Channel.FLUSHER)
C2S, S2C = "c2s", "s2c"
MAX_FRAME = 1 << 30  # a longer "length" means we lost the framing

MSG_NAMES = {consts.MSG_REQUEST: "request", consts.MSG_REPLY: "reply", consts.MSG_EXCEPTION: "exception"}


@dataclass
class Frame:
    """One rpyc frame seen by the proxy."""

    t: float  # time.monotonic() when its last byte arrived at the proxy
    direction: str  # C2S or S2C
    size: int  # bytes on the wire, header and flusher included
    kind: str  # request / reply / exception / ?
    handler: Optional[str] = None  # for requests: getattr, call, del …
    detail: Optional[str] = None  # e.g. "getattr builtins.list._repr_html_"
    request: Optional[RequestName] = None  # for requests: what ipyrpyc.wire calls it


class FrameParser:
    """Incremental parser of one direction's byte stream into frames."""

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self.buffer = bytearray()
        self.broken: Optional[str] = None

    def feed(self, data: bytes, t: float) -> List[Frame]:
        if self.broken:
            return []
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER.size:
            length, compressed = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME or compressed not in (0, 1):
                self.broken = f"bad frame header {bytes(self.buffer[:HEADER.size])!r}"
                return frames
            total = HEADER.size + length + FLUSHER_LEN
            if len(self.buffer) < total:
                break
            payload = bytes(self.buffer[HEADER.size:HEADER.size + length])
            del self.buffer[:total]
            frames.append(self._decode(payload, bool(compressed), total, t))
        return frames

    def _decode(self, payload: bytes, compressed: bool, size: int, t: float) -> Frame:
        try:
            if compressed:
                payload = zlib.decompress(payload)
            try:
                msg = payload[0]  # protocol.py: brine.I1.pack(msg) + brine.dump((seq, args))
                _seq, args = brine.load(payload[1:])
            except Exception:  # bind_threads mode: two 8-byte thread ids come first
                msg = payload[16]
                _seq, args = brine.load(payload[17:])
            kind = MSG_NAMES.get(msg, "?")
            if msg == consts.MSG_REQUEST:
                request = name_request(args[0], args[1])  # named as a trace names it
                return Frame(t, self.direction, size, kind, request.handler, request.detail, request)
            return Frame(t, self.direction, size, kind)
        except Exception:
            return Frame(t, self.direction, size, "?")


class _Direction:
    """Reader and delayed writer of one direction of one proxied connection."""

    def __init__(self, proxy: "DelayProxy", src: socket.socket, dst: socket.socket, direction: str) -> None:
        self.proxy = proxy
        self.src, self.dst, self.direction = src, dst, direction
        self.parser = FrameParser(direction)
        self.queue: "queue.Queue[Optional[Tuple[float, bytes]]]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, name=f"proxy-{direction}-read", daemon=True)
        self.writer = threading.Thread(target=self._write, name=f"proxy-{direction}-write", daemon=True)

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def _read(self) -> None:
        try:
            while not self.proxy.stopping.is_set():
                try:
                    data = self.src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                now = time.monotonic()
                self.proxy._record(self.parser.feed(data, now), now)
                if not self.forward(data, now):
                    return
        finally:
            self.queue.put(None)

    def forward(self, data: bytes, now: float) -> bool:
        """Queue ``data`` for the other side, ``delay`` from now; False ends this direction."""
        self.queue.put((now + self.proxy.delay, data))
        return True

    def _write(self) -> None:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=0.5)
                except queue.Empty:
                    if self.proxy.stopping.is_set():
                        return
                    continue
                if item is None:
                    break
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    if self.proxy.stopping.wait(wait):
                        return
                try:
                    self.dst.sendall(data)
                except OSError:
                    return
            try:
                self.dst.shutdown(socket.SHUT_WR)  # pass the EOF on
            except OSError:
                pass
        finally:
            pass

    @property
    def idle(self) -> bool:
        return self.queue.empty()


class DelayProxy:
    """``127.0.0.1:<port>`` -> ``target``; counts rpyc frames, delays ``delay`` s per direction."""

    def __init__(self, target: Tuple[str, int], delay: float = 0.0, port: int = 0) -> None:
        self.target = target
        self.delay = delay
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.frames: List[Frame] = []
        self.last_activity = time.monotonic()
        self.errors: List[str] = []
        self.connections: List[Tuple[socket.socket, socket.socket, List[_Direction]]] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(16)
            self.listener.settimeout(0.2)
        except BaseException:
            self.listener.close()
            raise
        self.port: int = self.listener.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self.acceptor.start()

    # -- plumbing -----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError as e:
                self.errors.append(f"cannot reach {self.target}: {e}")
                client.close()
                continue
            client.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            dirs = self._directions(client, server)
            with self.lock:
                if self.stopping.is_set():
                    client.close()
                    server.close()
                    return
                self.connections.append((client, server, dirs))
            for d in dirs:
                d.start()

    def _directions(self, client: socket.socket, server: socket.socket) -> List[_Direction]:
        """The two directions of a new connection: client to server, server to client."""
        return [_Direction(self, client, server, C2S), _Direction(self, server, client, S2C)]

    def _record(self, frames: List[Frame], now: float) -> None:
        with self.lock:
            self.frames.extend(frames)
            self.last_activity = now

    # -- measuring ------------------------------------------------------------------------------
    def take(self) -> List[Frame]:
        """The frames seen since the last ``take()``."""
        with self.lock:
            frames, self.frames = self.frames, []
        return frames

    def busy(self) -> bool:
        with self.lock:
            return any(not d.idle for _, _, dirs in self.connections for d in dirs)

    def quiesce(self, quiet: Optional[float] = None, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout`` s) until nothing is queued and nothing arrived for ``quiet`` s.

        A fire-and-forget ``del`` sent at the end of one cell has its reply come back
        one delayed round trip later; waiting here keeps it out of the next measurement.
        """
        if quiet is None:
            quiet = 2 * self.delay + 0.005
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                since = time.monotonic() - self.last_activity
            if since >= quiet and not self.busy():
                return True
            time.sleep(min(0.002 + quiet / 4, 0.02))
        return False

    def broken(self) -> List[str]:
        with self.lock:
            return [d.parser.broken for _, _, dirs in self.connections for d in dirs if d.parser.broken]

    # -- life cycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Close everything and join the threads (bounded)."""
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            connections = list(self.connections)
        for client, server, _ in connections:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.acceptor.join(2)
        for _, _, dirs in connections:
            for d in dirs:
                d.reader.join(2)
                d.writer.join(2)

    def __enter__(self) -> "DelayProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None, prog: str = "ipyrpyc-proxy") -> int:
    """``python -m ipyrpyc proxy HOST:PORT [--delay MS] [--port N]``: print frames until Ctrl-C."""
    import argparse

    from .arguments import DEFAULT_PORT, parse_address

    parser = argparse.ArgumentParser(prog=prog, description="A loopback proxy in front of an rpyc server that "
                                     "prints every rpyc frame and can delay each direction.")
    parser.add_argument("target", metavar="HOST[:PORT]", help="the rpyc server (port 18812 if not given)")
    parser.add_argument("--delay", type=float, default=0.0, metavar="MS", help="milliseconds added per direction")
    parser.add_argument("--port", type=int, default=0, help="local port to listen on (default: a free one)")
    parser.add_argument("--quiet", action="store_true", help="print only a count per second")
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.target)
    except ValueError as e:
        parser.error(str(e))
    if not 0 <= args.delay <= 60_000:
        parser.error("--delay must be from 0 to 60000 ms")
    try:
        proxy = DelayProxy((host, port or DEFAULT_PORT), args.delay / 1000, port=args.port)
    except OSError as e:
        parser.error(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}")
    print(f"proxy on 127.0.0.1:{proxy.port} -> {host}:{port or DEFAULT_PORT}, "
          f"{args.delay:g} ms per direction; Ctrl-C stops", flush=True)
    start = time.monotonic()
    try:
        while True:
            time.sleep(0.2 if not args.quiet else 1.0)
            frames = proxy.take()
            if args.quiet:
                if frames:
                    print(f"{len(frames)} frames", flush=True)
                continue
            for f in frames:
                arrow = "->" if f.direction == C2S else "<-"
                what = f.detail or f.kind
                print(f"{f.t - start:9.3f} s {arrow} {what} ({f.size:,} B)", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0
