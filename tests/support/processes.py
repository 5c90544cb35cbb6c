"""Processes for the tests and the benchmark: polling, /proc, stopping, servers.

Linux ``/proc`` is read directly (no psutil); where it is missing, ``pid_alive`` falls
back to ``os.kill(pid, 0)``.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

STARTUP_TIMEOUT = 20.0  # seconds a server may take to say it listens
MODULE_CMD = [sys.executable, "-m", "ipyrpyc", "server"]
LISTENING = re.compile(r"^ipyrpyc classic server listening on (\S+):(\d+)$")
_CLASSIC_STARTED = re.compile(r"server started on \[[^\]]*\]:(\d+)")


# -- polling -----------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` for at most ``timeout`` seconds; its last answer, as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- /proc -------------------------------------------------------------------------------------
def _stat(pid: int) -> Optional[List[str]]:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _threads_running(pid: int) -> bool:
    """Whether a thread of ``pid`` other than its (zombie) main thread still runs."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            pass
    return False


def pid_alive(pid: int) -> bool:
    """True until ``pid`` has exited completely (a zombie whose threads are all gone).

    After SIGKILL the main thread of a threaded process shows as a zombie while its other
    threads are still exiting; its sockets close and its parent can reap it only after them.
    """
    fields = _stat(pid)
    if fields is not None:
        return fields[0] != "Z" or _threads_running(pid)
    if os.path.isdir("/proc/self"):
        return False
    try:  # no /proc: ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    return wait_until(lambda: not pid_alive(pid), timeout)


def _live_processes() -> Dict[int, Tuple[int, str]]:
    """pid -> (parent pid, start time) of every process that is not a zombie."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z":
                out[int(entry)] = (int(fields[1]), fields[19])
    return out


def children_of(pid: int) -> List[int]:
    """Every live process whose parent is ``pid``."""
    return [child for child, (parent, _) in _live_processes().items() if parent == pid]


def descendants(root: int) -> Set[Tuple[int, str]]:
    """(pid, start time) of every live descendant of ``root``; the start time tells a reused pid."""
    parents: Dict[int, List[Tuple[int, str]]] = {}
    for pid, (parent, started) in _live_processes().items():
        parents.setdefault(parent, []).append((pid, started))
    found: Set[Tuple[int, str]] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def process_key(pid: int) -> Tuple[int, str]:
    """(pid, start time) of ``pid``, as :func:`descendants` gives them ("" when it is gone)."""
    return pid, (_stat(pid) or [""] * 20)[19]


def alive(proc: Tuple[int, str]) -> bool:
    """The process ``(pid, start time)`` from :func:`descendants` still runs (not a reused pid)."""
    fields = _stat(proc[0])
    return fields is not None and fields[0] != "Z" and fields[19] == proc[1]


def cmdline(pid: int) -> List[str]:
    """The argument vector of ``pid`` ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


# -- stopping ----------------------------------------------------------------------------------
def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; asserts the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    assert not pid_alive(proc.pid), f"process {proc.pid} outlived stop_process()"


def sigkill(pid: Optional[int]) -> None:
    if pid is not None and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_port() -> int:
    """A free port outside the ephemeral range: no outgoing connection of a concurrent test can take it
    while the server a test restarts on it is down."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low <= 12000:
        return free_port()
    for _ in range(100):
        port = random.randrange(10000, low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


# -- servers -----------------------------------------------------------------------------------
class StockServer:
    """``rpyc_classic`` from the installed rpyc (nothing of ours) on 127.0.0.1, free port.

    One thread reads the server's log (stderr) for its whole life, so the server never
    blocks on a full pipe and waiting for the port is bounded by ``startup_timeout``.
    """

    def __init__(self, *extra: str, host: str = "127.0.0.1", port: int = 0, stdout: Optional[Path] = None,
                 keep_log: bool = False, startup_timeout: float = STARTUP_TIMEOUT,
                 python: str = sys.executable) -> None:
        """``host``: a loopback address (``::1`` adds ``--ipv6``); ``stdout``: a file for the server's
        own (unbuffered) output, else it is discarded; ``keep_log``: keep its log for :meth:`log_text`;
        ``python``: the interpreter, whose environment's ``rpyc_classic`` runs."""
        exe = shutil.which("rpyc_classic", path=os.path.dirname(python))
        if not exe and python == sys.executable:
            exe = shutil.which("rpyc_classic")
        if not exe:
            raise RuntimeError(f"rpyc_classic is not installed beside {python}")
        ipv6 = ["--ipv6"] if ":" in host else []
        out = open(stdout, "ab") if stdout is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [python, exe, "--host", host, *ipv6, "--port", str(port), *extra],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a kernel's interrupts never reach it
            )
        finally:
            if stdout is not None:
                out.close()
        self.host = host
        self._keep_log = keep_log
        self._log: List[str] = []
        self._reader: Optional[threading.Thread] = None
        try:
            self.port = self._read_port(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _read_port(self, timeout: float) -> int:
        found: "queue.Queue[Optional[int]]" = queue.Queue()
        stderr = self.proc.stderr
        assert stderr is not None

        def read() -> None:
            reported = False
            for line in stderr:
                if self._keep_log:
                    self._log.append(line)
                m = None if reported else _CLASSIC_STARTED.search(line)
                if m:
                    found.put(int(m.group(1)))
                    reported = True
            if not reported:
                found.put(None)

        self._reader = threading.Thread(target=read, name="rpyc_classic-log", daemon=True)
        self._reader.start()
        try:
            port = found.get(timeout=timeout)
        except queue.Empty:
            port = None
        if port is None:
            raise RuntimeError("rpyc_classic did not start")
        return port

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def log_text(self) -> str:
        """The server's log so far (all of it after :meth:`stop`); needs ``keep_log``."""
        assert self._keep_log, "StockServer(keep_log=True) keeps the log"
        return "".join(self._log)

    def stop(self) -> None:
        stop_process(self.proc)
        if self._reader is not None:
            self._reader.join(5)  # the log ends with the process
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class ServerProcess:
    """``python -m ipyrpyc server ARGS`` (or another command) in its own session.

    stdout and stderr are drained by threads into ``stdout_lines`` / ``stderr_lines``, so the
    server never blocks on a full pipe and every read here is bounded by a timeout.
    """

    def __init__(self, *args: str, cmd: Sequence[str] = MODULE_CMD) -> None:
        self.proc = subprocess.Popen(
            [*cmd, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stdout_lines: List[str] = []
        self.stderr_lines: List[str] = []
        self._stdout_q: "queue.Queue[Optional[str]]" = queue.Queue()
        for stream, sink, q in ((self.proc.stdout, self.stdout_lines, self._stdout_q),
                                (self.proc.stderr, self.stderr_lines, None)):
            threading.Thread(target=self._pump, args=(stream, sink, q), daemon=True).start()
        self.host: Optional[str] = None
        self.port: Optional[int] = None

    @staticmethod
    def _pump(stream, sink: List[str], q) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if q is not None:
                q.put(line.rstrip("\n"))
        if q is not None:
            q.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """Read the ``listening on HOST:PORT`` line; fail (with the server's stderr) if it never comes."""
        try:
            line = self._stdout_q.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            self.stop()
            raise AssertionError(f"the server did not report listening; stderr: {self.stderr_lines}")
        m = LISTENING.match(line)
        assert m, f"unexpected first line on stdout: {line!r}"
        self.host, self.port = m.group(1), int(m.group(2))
        assert 0 < self.port < 65536
        return self.port

    def stop(self) -> None:
        stop_process(self.proc)


class Listener:
    """A loopback TCP listener of ours, on a thread: silent, or sending ``payload`` to each client,
    then holding the connection open or closing it (``close_after``).  It stops accepting after
    60 s; ``stop`` closes everything."""

    def __init__(self, payload: Optional[bytes] = None, close_after: bool = False) -> None:
        self.payload = payload
        self.close_after = close_after
        self.accepted = 0
        self.clients: list = []
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.clients.append(client)
            if self.payload:
                try:
                    client.sendall(self.payload)
                except OSError:
                    pass
            if self.close_after:
                client.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()
        for c in self.clients:
            c.close()
        self.sock.close()
