"""Real ipykernels driven through ``jupyter_client``: one way to start them, run cells in
them and read what they send back, for the tests and the benchmark.

``run(kernel, code)`` returns a :class:`Run`: every iopub message of the cell with its
arrival time (streams in order, results with their wire size, errors), the stdin
exchange and the execute reply.  It can interrupt the kernel after some seconds (or once
a condition holds), call a function while it waits (a fault to inject) and answer input
requests.  ``shell_request`` sends a complete or inspect request and times its reply.
"""

from __future__ import annotations

import ast
import contextlib
import json
import queue
import re
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .processes import STARTUP_TIMEOUT, sigkill, wait_gone

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
RUN_TIMEOUT = 60.0  # seconds a cell may take unless the caller says otherwise


class Kernel:
    """A real ipykernel started from a kernelspec (by default ``ipyrpyc``), with its client.

    ``env`` replaces the kernel's environment; ``log_path`` receives its stdout and stderr.
    """

    def __init__(self, kernel_name: str = "ipyrpyc", *, env: Optional[Dict[str, str]] = None,
                 log_path: Optional[str] = None, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        from jupyter_client.manager import KernelManager

        self.name = kernel_name
        self.log_path = log_path
        self._log = open(log_path, "w") if log_path is not None else None
        self.km = KernelManager(kernel_name=kernel_name)
        self.kc: Any = None
        self.pid: Optional[int] = None
        kw: Dict[str, Any] = {}
        if env is not None:
            kw["env"] = env
        if self._log is not None:
            kw.update(stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.km.start_kernel(**kw)
            self.pid = self.km.provisioner.process.pid
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=startup_timeout)
        except BaseException:
            self.shutdown(check=False)
            raise

    def log_tail(self, n: int = 2000) -> str:
        """The end of the kernel's output (with ``log_path`` only)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def shutdown(self, check: bool = True) -> None:
        """Stop the kernel (killed if it does not go within 10 s).  With ``check``, a failed
        graceful shutdown or a kernel that had to be killed raises."""
        error: Optional[BaseException] = None
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            try:
                if self.km.is_alive():
                    self.km.shutdown_kernel(now=False)
            except Exception as e:
                error = e
                with contextlib.suppress(Exception):
                    self.km.shutdown_kernel(now=True)
            gone = self.pid is None or wait_gone(self.pid, 10)
            if not gone:
                sigkill(self.pid)
            with contextlib.suppress(Exception):
                self.km.cleanup_resources()
            if self._log is not None:
                self._log.close()
        if check:
            if error is not None:
                raise error
            assert gone, f"kernel {self.pid} did not stop within 10 s (killed)"


class Run:
    """Every iopub message of one request with its arrival time, the stdin exchange and the reply."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.t0 = time.monotonic()
        self.t_interrupt: Optional[float] = None
        self.t_idle: Optional[float] = None
        self.msgs: List[tuple] = []  # (arrival, msg_type, content, JSON size of a result's content)
        self.prompts: List[str] = []
        self.reply: dict = {}

    @property
    def elapsed(self) -> float:
        assert self.t_idle is not None
        return self.t_idle - self.t0

    @property
    def since_interrupt(self) -> float:
        assert self.t_idle is not None and self.t_interrupt is not None
        return self.t_idle - self.t_interrupt

    @property
    def streams(self) -> List[tuple]:
        """(arrival, name, text) of every stream message, in order."""
        return [(t, c["name"], c["text"]) for t, kind, c, _ in self.msgs if kind == "stream"]

    def stream(self, name: str) -> str:
        return "".join(text for _, n, text in self.streams if n == name)

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    @property
    def results(self) -> List[dict]:
        """The data of every execute_result and display_data, in order."""
        return [c["data"] for _, kind, c, _ in self.msgs if kind in ("execute_result", "display_data")]

    @property
    def text(self) -> str:
        """All text/plain results, joined."""
        return "\n".join(r.get("text/plain", "") for r in self.results)

    @property
    def result(self) -> str:
        """The text/plain of the one execute_result."""
        results = [c["data"] for _, kind, c, _ in self.msgs if kind == "execute_result"]
        assert len(results) == 1, self
        return results[0]["text/plain"]

    @property
    def result_bytes(self) -> int:
        """JSON size of the display messages' content: what the notebook had to receive."""
        return sum(size for _, kind, _, size in self.msgs if kind in ("execute_result", "display_data"))

    @property
    def errors(self) -> List[dict]:
        """The content of every iopub error message."""
        return [c for _, kind, c, _ in self.msgs if kind == "error"]

    @property
    def status(self) -> str:
        return self.reply.get("status", "?")

    @property
    def ename(self) -> Optional[str]:
        return self.reply.get("ename")

    @property
    def evalue(self) -> str:
        return self.reply.get("evalue", "")

    @property
    def traceback(self) -> str:
        """The traceback lines of the error messages, as sent (colors included)."""
        return "\n".join(line for e in self.errors for line in e["traceback"])

    @property
    def plain_traceback(self) -> str:
        """:attr:`traceback` without ANSI escape sequences."""
        return ANSI.sub("", self.traceback)

    def __repr__(self) -> str:
        return (f"Run({self.code[:200]!r}: status={self.status!r}, ename={self.ename!r}, evalue={self.evalue!r}, "
                f"stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r}, results={str(self.results)[:500]}, "
                f"errors={str(self.errors)[:500]}, elapsed={self.t_idle and round(self.t_idle - self.t0, 3)!r})")


def _reply(kc: Any, msg_id: str, deadline: float) -> Tuple[dict, float]:
    """The shell reply to ``msg_id`` and its arrival time; replies to other requests are skipped."""
    while True:
        try:
            msg = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no reply to {msg_id} in time") from None
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"], time.monotonic()


def _wait_idle(kc: Any, msg_id: str, deadline: float) -> None:
    """Read iopub until the kernel reports idle after ``msg_id``."""
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the kernel did not go idle after {msg_id}") from None
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return


def run(kernel: Kernel, code: str, timeout: float = RUN_TIMEOUT, *,
        interrupt_after: Union[None, float, Callable[[Run], bool]] = None,
        during: Optional[Callable[[float], None]] = None, answers: Optional[List[str]] = None,
        silent: bool = False, user_expressions: Optional[Dict[str, str]] = None) -> Run:
    """Run ``code`` in ``kernel`` and collect everything it sends back, until idle and the reply.

    ``interrupt_after``: interrupt the kernel after that many seconds, or once it returns true
    for the run so far; ``during(t)`` is called with the seconds since the start while waiting
    (a fault to inject); ``answers`` are typed, in order, at input requests (pdb prompts).
    Raises TimeoutError when the kernel is not idle within ``timeout`` seconds.

    ipykernel before 7 may abort (not run) a request that arrives right after a cell's error:
    it stops aborting the queue a moment after that error's reply and idle.  Such a request,
    which no code saw, is sent again once.
    """
    kw: Dict[str, Any] = dict(interrupt_after=interrupt_after, during=during, answers=answers, silent=silent,
                              user_expressions=user_expressions)
    res = _run_once(kernel, code, timeout, **kw)
    if res.status == "aborted" and not res.errors and not res.streams:
        res = _run_once(kernel, code, timeout, **kw)
    return res


def _run_once(kernel: Kernel, code: str, timeout: float, *,
              interrupt_after: Union[None, float, Callable[[Run], bool]],
              during: Optional[Callable[[float], None]], answers: Optional[List[str]],
              silent: bool, user_expressions: Optional[Dict[str, str]]) -> Run:
    kc = kernel.kc
    res = Run(code)
    answers = list(answers) if answers is not None else None
    busy_wait = interrupt_after is not None or during is not None or answers is not None
    res.t0 = time.monotonic()
    msg_id = kc.execute(code, silent=silent, allow_stdin=answers is not None, user_expressions=user_expressions)
    deadline = res.t0 + timeout
    while res.t_idle is None:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"no idle within {timeout} s: {res!r}")
        if interrupt_after is not None and res.t_interrupt is None and (
                interrupt_after(res) if callable(interrupt_after) else now - res.t0 >= interrupt_after):
            kernel.km.interrupt_kernel()
            res.t_interrupt = time.monotonic()
        if during is not None:
            during(now - res.t0)
        if answers is not None:
            try:
                msg = kc.get_stdin_msg(timeout=0)
            except queue.Empty:
                pass
            else:
                if msg["msg_type"] == "input_request" and msg["parent_header"].get("msg_id") == msg_id:
                    res.prompts.append(msg["content"]["prompt"])
                    assert answers, f"more input requests than answers: {res.prompts}"
                    kc.input(answers.pop(0))
        try:
            msg = kc.get_iopub_msg(timeout=0.01 if busy_wait else max(0.01, deadline - now))
        except queue.Empty:
            continue
        arrival = time.monotonic()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        size = len(json.dumps(content)) if kind in ("execute_result", "display_data") else 0
        res.msgs.append((arrival, kind, content, size))
        if kind == "status" and content["execution_state"] == "idle":
            res.t_idle = arrival
    try:
        res.reply, _ = _reply(kc, msg_id, max(deadline, time.monotonic() + 1.0))
    except TimeoutError:
        raise TimeoutError(f"no execute_reply: {res!r}") from None
    return res


def shell_request(kernel: Kernel, method: str, code: str, cursor_pos: Optional[int] = None,
                  timeout: float = 15.0, **kw: Any) -> Tuple[dict, float]:
    """A ``complete`` or ``inspect`` request (``kw``: e.g. ``detail_level``): (reply content,
    seconds until the reply, which is what a frontend waits for).  Returns once the kernel is
    idle again, so nothing of this request is left to overlap the next one."""
    kc = kernel.kc
    start = time.monotonic()
    deadline = start + timeout
    msg_id = getattr(kc, method)(code, len(code) if cursor_pos is None else cursor_pos, **kw)
    content, arrival = _reply(kc, msg_id, deadline)
    _wait_idle(kc, msg_id, max(deadline, time.monotonic() + 1.0))
    return content, arrival - start


def evaluate(kernel: Kernel, expression: str, timeout: float = 30.0) -> str:
    """``repr`` of ``expression`` evaluated silently in the kernel (no cell, no history)."""
    res = run(kernel, "", timeout, silent=True, user_expressions={"x": expression})
    value = res.reply.get("user_expressions", {}).get("x", {})
    if value.get("status") != "ok":
        raise RuntimeError(f"cannot evaluate {expression!r} in kernel {kernel.name}: {value.get('ename')}: "
                           f"{value.get('evalue')}")
    return value["data"]["text/plain"]


# -- what a cell must do -------------------------------------------------------------------------
def ok(kernel: Kernel, code: str, **kw: Any) -> Run:
    """Run ``code``; it must succeed without an error message."""
    res = run(kernel, code, **kw)
    assert res.status == "ok" and not res.errors, res
    return res


def value(kernel: Kernel, expr: str, **kw: Any) -> Any:
    """The Python value of ``expr`` in the kernel: its one output, whose repr must be a literal."""
    res = ok(kernel, expr, **kw)
    assert len(res.results) == 1, res
    return ast.literal_eval(res.result)


def fails(kernel: Kernel, code: str, ename: str, **kw: Any) -> Run:
    """Run ``code``; it must fail with ``ename``."""
    res = run(kernel, code, **kw)
    assert res.status == "error" and res.ename == ename, res
    return res


def usage_error(kernel: Kernel, code: str, **kw: Any) -> str:
    """Run ``code``; it must fail as a one-line ``UsageError`` (no iopub error, no traceback)."""
    res = run(kernel, code, **kw)
    assert res.status == "error" and res.ename == "UsageError" and not res.errors, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), res
    assert res.stderr.endswith("\n") and res.stderr.count("\n") == 1, res
    return lines[0]


def state_of(kernel: Kernel, name: str) -> str:
    """The state column of connection ``name`` in ``%rpyc_connections``."""
    text = ok(kernel, "%rpyc_connections").results[0]["text/plain"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[2:]]
    states = [row[2] for row in rows if row[0] == name]
    assert len(states) == 1, text
    return states[0]
