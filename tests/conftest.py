"""Real components for the tests: stock classic servers, kernels and shells.

Every process a fixture starts is stopped in its finalizer, and the finalizer
checks that it is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 20.0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def children_of(pid: int) -> List[int]:
    """Every live process whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


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


class StockServer:
    """``rpyc_classic`` from the installed rpyc (nothing of ours) on 127.0.0.1, free port."""

    def __init__(self, *extra: str, port: int = 0, stdout: Optional[Path] = None) -> None:
        """``stdout``: a file for the server's own (unbuffered) output, else it is discarded."""
        exe = shutil.which("rpyc_classic", path=os.path.dirname(sys.executable)) or shutil.which("rpyc_classic")
        assert exe, "rpyc_classic is not installed"
        out = open(stdout, "ab") if stdout is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, exe, "--host", "127.0.0.1", "--port", str(port), *extra],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # the kernel's interrupts never reach it
            )
        finally:
            if stdout is not None:
                out.close()
        self.host = "127.0.0.1"
        self.port = self._read_port()

    def _read_port(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(r"server started on \[[^\]]*\]:(\d+)", line)
            if m:  # keep draining the log so the server never blocks on a full pipe
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return int(m.group(1))
        self.stop()
        raise RuntimeError("rpyc_classic did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # after the drain thread's read() has ended with the process


@pytest.fixture
def classic_server() -> Iterator[StockServer]:
    """A stock ``rpyc_classic`` server on a free loopback port."""
    server = StockServer()
    try:
        yield server
    finally:
        server.stop()


def global_shell():
    """The process-wide test shell (``start_ipython()`` returns it on its first call only)."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.testing.globalipapp import start_ipython

    return start_ipython() or TerminalInteractiveShell.instance()


@pytest.fixture
def shell():
    """A clean terminal-style ``InteractiveShell`` with ipyrpyc loaded; unloaded afterwards.

    ``RpycMagics`` settings made with ``%config`` live in the global shell's config, so
    they are dropped before and after; no process the test started may outlive it.
    """
    ip = global_shell()
    ip.config.pop("RpycMagics", None)
    ip.reset(new_session=False)
    ip.run_line_magic("load_ext", "ipyrpyc")
    magics = ip.magics_manager.registry["RpycMagics"]
    before = set(children_of(os.getpid()))
    try:
        yield ip
    finally:
        ip.run_line_magic("unload_ext", "ipyrpyc")
        ip.config.pop("RpycMagics", None)
        assert not magics.registry.sessions
        assert wait_until(lambda: not (set(children_of(os.getpid())) - before), 10), "a process outlived the test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_python() -> str:
    return sys.executable


def sigkill(pid: Optional[int]) -> None:
    if pid is not None and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class CellResult:
    """What a real kernel sent back for one cell."""

    def __init__(self) -> None:
        self.stdout = ""
        self.stderr = ""
        self.results: List[dict] = []  # execute_result / display_data "data" dicts
        self.errors: List[dict] = []  # iopub "error" contents
        self.reply: dict = {}

    @property
    def status(self) -> str:
        return self.reply.get("status", "?")

    @property
    def ename(self) -> Optional[str]:
        return self.reply.get("ename")

    @property
    def text(self) -> str:
        """All text/plain results, joined."""
        return "\n".join(r.get("text/plain", "") for r in self.results)

    def __repr__(self) -> str:
        return (f"CellResult(status={self.status!r}, ename={self.ename!r}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r}, results={self.results!r}, errors={self.errors!r})")


def collect(kc, msg_id: str, res: CellResult, deadline: float, until=None) -> CellResult:
    """Read the iopub messages of ``msg_id`` into ``res``; stop when ``until(res)`` is true, or at
    idle (then read the reply too). Raises TimeoutError at ``deadline`` (time.monotonic())."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer in time: {res!r}")
        msg = kc.get_iopub_msg(timeout=left)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                res.stdout += content["text"]
            else:
                res.stderr += content["text"]
        elif kind in ("execute_result", "display_data"):
            res.results.append(content["data"])
        elif kind == "error":
            res.errors.append(content)
        elif kind == "status" and content["execution_state"] == "idle":
            res.reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))["content"]
            return res
        if until is not None and until(res):
            return res


def execute(kc, code: str, timeout: float = 60.0) -> CellResult:
    """Run ``code`` in the kernel behind ``kc`` and collect everything it sends back."""
    return collect(kc, kc.execute(code), CellResult(), time.monotonic() + timeout)


class Kernel:
    """A real ipykernel started from the ipyrpyc kernelspec, with its client."""

    def __init__(self, kernel_name: str = "ipyrpyc") -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=STARTUP_TIMEOUT)
        self.pid: int = self.km.provisioner.process.pid

    def execute(self, code: str, timeout: float = 60.0) -> CellResult:
        return execute(self.kc, code, timeout)

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=False)
            assert wait_until(lambda: not pid_alive(self.pid), 10)


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A real kernel with the extension pre-loaded by the ipyrpyc kernelspec."""
    k = Kernel()
    try:
        yield k
    finally:
        k.shutdown()
