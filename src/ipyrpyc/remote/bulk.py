"""Server side: copies of values and files at link speed, in chunks the client pipelines.

A value is exported as a codec tree whose large buffers stay here (:meth:`Transfers.pull`);
the client reads them with :meth:`Transfers.read`, byte ranges over the buffers laid end to
end, several requests in flight.  A pushed value's arrays are allocated here first
(:meth:`Transfers.push`), filled by :meth:`Transfers.write` and bound by :meth:`Transfers.finish`.
Files go the same way (:meth:`Transfers.fopen`/``fread``/``fclose`` and
``fcreate``/``fwrite``/``fcommit``), with a sha256 of the bytes read or written here for the
client to compare, and a written file appears under its name only once complete.

During a transfer the serving connection sends without zlib (unless the client asks for it:
level 1 runs at ~100-200 MB/s, far below a LAN), with ``TCP_NODELAY`` (rpyc writes a large
frame's last byte separately, and Nagle's algorithm would hold it back) and with a stream
whose write sends slices of one memoryview (rpyc's copies the unsent rest after every send:
quadratic in the frame size).  Everything is per connection: the states of unfinished
transfers (open files, temporary files) go when the connection closes.
Each call returns brine values only.  Runs on Python 3.8 and newer, with the standard library
only (numpy and pandas through the codec, where the data is theirs).
"""

import bisect
import hashlib
import os
import socket
import stat
import weakref

TEMP_MARK = ".ipyrpyc-part-"  # in the names of files being written


def _expand(path):
    return os.path.expanduser(path)


def _entry(path, st):
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
    return (kind, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


def safe_parts(parts):
    """Path components that stay inside the directory they are joined to (no ``..``, no root)."""
    for part in parts:
        if type(part) is not str or part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part \
                or (len(part) > 1 and part[1] == ":"):
            raise ValueError("unsafe path component %r" % (part,))
    return tuple(parts)


class _Reader(object):
    """The out-of-band buffers of pulled values, read as one range of bytes."""

    def __init__(self, views):
        self.views = views
        self.starts = []
        total = 0
        for v in views:
            self.starts.append(total)
            total += v.nbytes
        self.total = total
        self.served = 0

    def read(self, offset, size):
        out = []
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        end = min(offset + size, self.total)
        while offset < end and i < len(self.views):
            local = offset - self.starts[i]
            piece = self.views[i][local:local + (end - offset)]
            if piece.nbytes:
                out.append(piece.tobytes())
                offset += piece.nbytes
            i += 1
        data = out[0] if len(out) == 1 else b"".join(out)
        self.served += len(data)
        return data

    @property
    def done(self):
        return self.served >= self.total

    def close(self):
        self.views = []


class _Writer(object):
    """A pushed value's receiving objects, filled by byte range, then rebuilt and bound."""

    failed = None

    def __init__(self, codec, tree, sizes, namespace, name, allow_pickle):
        self.codec, self.tree, self.namespace, self.name = codec, tree, namespace, name
        self.allow_pickle = allow_pickle
        self.objects = codec.allocate(tree, sizes)
        self.reader = _Reader([codec.byte_view(o) for o in self.objects])

    def write(self, offset, data):
        r = self.reader
        i = max(0, bisect.bisect_right(r.starts, offset) - 1)
        data = memoryview(data)
        while data.nbytes:
            if i >= len(r.views):
                raise ValueError("data past the end of the pushed value")
            local = offset - r.starts[i]
            n = min(data.nbytes, r.views[i].nbytes - local)
            r.views[i][local:local + n] = data[:n]
            data, offset, i = data[n:], offset + n, i + 1

    def finish(self):
        self.namespace[self.name] = self.codec.rebuild(self.tree, self.objects, self.allow_pickle)

    def close(self):
        self.objects = None
        self.reader.close()


class _FileReader(object):
    def __init__(self, path):
        self.file = open(path, "rb", buffering=0)
        self.hash = hashlib.sha256()
        self.position = 0

    def read(self, offset, size):
        if offset != self.position:
            self.file.seek(offset)
            self.position = offset
        parts = []
        while size > 0:
            data = self.file.read(size)
            if not data:
                break
            parts.append(data)
            size -= len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.hash.update(data)  # in order: the client reads front to back
        self.position += len(data)
        return data

    def close(self):
        self.file.close()


class _FileWriter(object):
    """A file written under a temporary name beside its target, renamed once complete."""

    failed = None

    def __init__(self, path, size, mtime_ns, mode, force):
        self.path, self.size, self.mtime_ns, self.mode, self.force = path, size, mtime_ns, mode, force
        directory, base = os.path.split(path)
        self.temp = os.path.join(directory, "." + base + TEMP_MARK + os.urandom(4).hex())
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.hash = hashlib.sha256()
        self.position = 0

    def write(self, offset, data):
        if offset != self.position:
            raise ValueError("write at %d, expected %d" % (offset, self.position))
        view = memoryview(data)
        while view.nbytes:
            n = self.file.write(view)
            view = view[n:]
        self.hash.update(data)
        self.position += len(data)

    def commit(self, digest):
        self.file.close()
        if self.position != self.size:
            raise ValueError("%s: %d of %d bytes arrived" % (self.path, self.position, self.size))
        if digest != self.hash.hexdigest():
            raise ValueError("%s: the sha256 of what arrived differs from the sender's" % (self.path,))
        if self.mode is not None:
            os.chmod(self.temp, self.mode)
        os.utime(self.temp, ns=(self.mtime_ns, self.mtime_ns))
        if not self.force and os.path.lexists(self.path):
            raise FileExistsError("%s exists" % self.path)
        os.replace(self.temp, self.path)
        self.temp = None
        return self.hash.hexdigest()

    def close(self):
        try:
            self.file.close()
        finally:
            if self.temp is not None:
                try:
                    os.unlink(self.temp)
                except OSError:
                    pass
                self.temp = None


class Transfers(object):
    """The transfers of one connection, by the id the client gave each."""

    def __init__(self, codec, connection):
        self.codec = codec
        self.connection = weakref.ref(connection) if connection is not None else (lambda: None)
        self.states = {}
        self.stream_tuned = False

    # -- the connection -----------------------------------------------------------------------
    def _tune(self, compress):
        """What this side sends from now on: compressed only if the client asked (the reply to
        the calling request included), on a tuned stream."""
        channel = getattr(self.connection(), "_channel", None)
        if channel is None:
            return
        channel.compress = bool(compress)
        if not self.stream_tuned:
            self.stream_tuned = True
            _tune_stream(channel)
            warm_allocator()

    def _begin(self, tid, state, compress):
        self._tune(compress)
        self.states[tid] = state

    def _end(self, tid):
        state = self.states.pop(tid, None)
        if state is not None:
            try:
                state.close()
            except Exception:
                pass

    def close(self, tid):
        """Forget transfer ``tid`` (an unfinished written file is removed); harmless if unknown."""
        self._end(tid)

    def close_all(self):
        for tid in list(self.states):
            self._end(tid)

    def _write(self, tid, offset, data):
        """A chunk for a transfer that may have failed already: after its first failure (the
        client hears of that one), later chunks are dropped quietly, so that a client still
        sending is not answered by a tide of error replies."""
        state = self.states.get(tid)
        if state is None or state.failed is not None:
            return
        try:
            state.write(offset, data)
        except BaseException as e:
            state.failed = e
            raise

    # -- values ------------------------------------------------------------------------------
    def pull(self, tid, target, names, compress, allow_pickle):
        """Codec trees of ``target`` (names None) or of ``target[name]`` for each name:
        ``(((name, problem, tree or message), ...), sizes of the out-of-band buffers)``;
        ``problem`` is None, ``"missing"`` or ``"type"``.  The buffers stay for :meth:`read`."""
        exporter = self.codec.Exporter(out_of_band=True, allow_pickle=allow_pickle)
        results = []
        for name in ((None,) if names is None else names):
            if name is not None and name not in target:
                results.append((name, "missing", "name %r is not defined on the server" % (name,)))
                continue
            mark = len(exporter.buffers)
            try:
                results.append((name, None, exporter.value(target if name is None else target[name])))
            except (TypeError, ValueError) as e:
                del exporter.buffers[mark:]
                results.append((name, "type", str(e)))
        self._tune(compress)
        if exporter.buffers:
            self._begin(tid, _Reader(exporter.buffers), compress)
        return tuple(results), exporter.sizes

    def read(self, tid, offset, size):
        """Bytes ``offset`` to ``offset + size`` of the buffers of pull ``tid`` (b"" past the end
        or for an unknown transfer); the last read ends the transfer."""
        state = self.states.get(tid)
        if type(state) is not _Reader:
            return b""
        data = state.read(offset, size)
        if state.done:
            self._end(tid)
        return data

    def push(self, tid, tree, sizes, namespace, name, compress, allow_pickle):
        """Start receiving a value for ``namespace[name]``; without out-of-band buffers it is
        bound at once (one round trip)."""
        if not sizes:
            self._tune(compress)
            namespace[name] = self.codec.rebuild(tree, (), allow_pickle)
            return True
        self._begin(tid, _Writer(self.codec, tree, tuple(sizes), namespace, name, allow_pickle), compress)
        return False

    def write(self, tid, offset, data):
        self._write(tid, offset, data)

    def finish(self, tid):
        """Rebuild the pushed value and bind it."""
        state = self.states.get(tid)
        if state is None:
            raise ValueError("no push %r in progress" % (tid,))
        try:
            if state.failed is not None:
                raise state.failed
            state.finish()
        finally:
            self._end(tid)

    # -- files -------------------------------------------------------------------------------
    def stat(self, path):
        """``(kind, size, mtime_ns, mode, absolute path)``; kind is ``"missing"`` when there is nothing."""
        path = _expand(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return ("missing", 0, 0, 0, os.path.abspath(path))
        except NotADirectoryError:
            return ("missing", 0, 0, 0, os.path.abspath(path))
        return _entry(path, st) + (os.path.abspath(path),)

    def walk(self, path):
        """Every directory and file under ``path``: ``((parts, kind, size, mtime_ns, mode), ...)``,
        parents before children; symbolic links are followed, each directory listed once."""
        top = _expand(path)
        out = []
        seen = set()
        stack = [()]
        while stack:
            parts = stack.pop()
            where = os.path.join(top, *parts)
            st = os.stat(where)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            children = []
            for name in sorted(os.listdir(where)):
                try:
                    child = os.stat(os.path.join(where, name))
                except OSError:
                    continue  # a dangling link
                entry = _entry(name, child)
                out.append((parts + (name,),) + entry)
                if entry[0] == "dir":
                    children.append(parts + (name,))
            stack.extend(reversed(children))
        return tuple(out)

    def fopen(self, tid, path, parts, compress):
        """Open ``path/parts`` for reading: ``(size, mtime_ns, mode)``."""
        reader = _FileReader(os.path.join(_expand(path), *safe_parts(parts)))
        st = os.fstat(reader.file.fileno())
        self._begin(tid, reader, compress)
        return (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))

    def fread(self, tid, offset, size):
        return self.states[tid].read(offset, size)

    def fclose(self, tid):
        """``(sha256 of the bytes read, how many)``; the transfer ends."""
        state = self.states.get(tid)
        if state is None:
            return (None, 0)
        digest, count = state.hash.hexdigest(), state.position
        self._end(tid)
        return (digest, count)

    def mkdir(self, path, parts=(), mode=None):
        """Make the directory ``path/parts`` (and its parents)."""
        target = os.path.join(_expand(path), *safe_parts(parts))
        os.makedirs(target, exist_ok=True)
        if mode is not None:
            os.chmod(target, mode)

    def fcreate(self, tid, path, parts, size, mtime_ns, mode, force, compress):
        """Start writing ``path/parts`` under a temporary name."""
        target = os.path.join(_expand(path), *safe_parts(parts))
        if not force and os.path.lexists(target):
            raise FileExistsError("%s exists" % target)
        if os.path.isdir(target):
            raise IsADirectoryError("%s is a directory" % target)
        self._begin(tid, _FileWriter(target, size, mtime_ns, mode, force), compress)

    def fwrite(self, tid, offset, data):
        self._write(tid, offset, data)

    def fcommit(self, tid, digest):
        """Check the sha256 the client sent, give the file its time and mode, rename it."""
        state = self.states.get(tid)
        if state is None:
            raise ValueError("no file %r being written" % (tid,))
        try:
            if state.failed is not None:
                raise state.failed
            return state.commit(digest)
        finally:
            self._end(tid)

    def set_times(self, path, entries):
        """Directory modification times, once their files are written: ``((parts, mtime_ns), ...)``."""
        top = _expand(path)
        for parts, mtime_ns in entries:
            os.utime(os.path.join(top, *safe_parts(parts)), ns=(mtime_ns, mtime_ns))


def warm_allocator():
    """Let glibc's malloc keep the chunk-sized blocks a transfer allocates and frees by the
    thousand: every megabyte-sized temporary (rpyc copies each frame several times) is otherwise
    mapped fresh from the OS, and touching its pages costs more than copying the data (4-20x
    slower transfers, measured).  Freeing one block of 16 MB raises malloc's own threshold for
    mapping blocks to that size (its documented dynamic behaviour); harmless elsewhere."""
    block = bytearray(16 << 20)
    del block


def _tune_stream(channel):
    """TCP_NODELAY, and a stream that writes slices of one memoryview, for this connection only."""
    stream = getattr(channel, "stream", None)
    sock = getattr(stream, "sock", None)
    if sock is None:
        return
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
    from rpyc.core.stream import SocketStream

    if type(stream) is not SocketStream:
        return

    class ViewSocketStream(SocketStream):
        """Sends slices of one memoryview; receives a frame in place (not 16 pieces joined)."""

        __slots__ = ()

        def write(self, data):
            view = memoryview(data)
            try:
                while view.nbytes:
                    view = view[self.sock.send(view):]
            except socket.error as ex:
                self.close()
                raise EOFError(ex) from None

        def read(self, count):
            if count > 16 << 20:  # no chunk of ours is that large: rpyc's way
                return SocketStream.read(self, count)
            data = bytearray(count)
            view, done = memoryview(data), 0
            while done < count:
                try:
                    n = self.sock.recv_into(view[done:], count - done)
                except socket.timeout:
                    continue
                except (InterruptedError, BlockingIOError):
                    continue
                except socket.error as ex:
                    self.close()
                    raise EOFError(ex) from None
                if not n:
                    self.close()
                    raise EOFError("connection closed by peer")
                done += n
            return data

    channel.stream = ViewSocketStream(sock)
