"""Plain rpyc against ipyrpyc, in real kernels, through a delaying, frame-counting proxy.

Run from the repository root:

    .venv/bin/python -m benchmarks.run                              # full mode (< 5 min on 2 cores)
    .venv/bin/python -m benchmarks.run --quick --json out.json      # CI mode (< 60 s)

One stock ``rpyc_classic`` server on 127.0.0.1 (free port); two proxies in front of it
(``ipyrpyc.proxy``), one per kernel, that count rpyc frames in each direction and
delay every chunk by the same configurable time per direction; two real ipykernels
driven through ``jupyter_client``: kernel "python3" with ``rpyc.classic.connect`` and
no extension, kernel "ipyrpyc" with ``%rpyc_connect``.  Every user action is run in
both, alternately, at each delay; frames are counted from the moment a request is
sent to the kernel until the kernel reports idle.  Servers and kernels are started and
driven by the tests' own helpers (``tests.support``).  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from ipyrpyc.proxy import C2S, S2C, DelayProxy, Frame
from tests.support import kernels
from tests.support.kernels import Kernel, shell_request
from tests.support.processes import StockServer

STARTUP_TIMEOUT = 60.0
OP_TIMEOUT = 120.0
PLAIN, IPY = "plain", "ipyrpyc"
SIDES = (PLAIN, IPY)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a component did not start, a setup cell failed)."""


# -- processes ---------------------------------------------------------------------------------
def start_server() -> StockServer:
    """Stock ``rpyc_classic`` from the installed rpyc, on 127.0.0.1 with a free port."""
    try:
        return StockServer(startup_timeout=STARTUP_TIMEOUT)
    except RuntimeError as e:
        raise BenchError(str(e)) from None


def start_kernel(kernel_name: str, ipython_dir: str, log_dir: str) -> Kernel:
    """A real ipykernel from a kernelspec, its output in a log; stopped by ``shutdown(check=False)``."""
    log_path = os.path.join(log_dir, f"kernel-{kernel_name}-{time.monotonic_ns()}.log")
    env = dict(os.environ, IPYTHONDIR=ipython_dir, PYTHONUNBUFFERED="1")
    try:
        return Kernel(kernel_name, env=env, log_path=log_path, startup_timeout=STARTUP_TIMEOUT)
    except Exception as e:
        try:
            with open(log_path) as f:
                tail = f.read()[-2000:]
        except OSError:
            tail = ""
        raise BenchError(f"kernel {kernel_name!r} did not start: {type(e).__name__}: {e}\n{tail}") from None


# -- requests ------------------------------------------------------------------------------------
@dataclasses.dataclass
class OpResult:
    """What one measured request to a kernel did."""

    wall: float  # seconds from sending the request to the reply (execute: to the idle status)
    status: str  # the reply's status
    ename: Optional[str] = None
    evalue: str = ""
    outputs: int = 0  # execute_result / display_data messages
    matches: Tuple[str, ...] = ()  # complete_reply
    found: Optional[bool] = None  # inspect_reply
    stderr: str = ""


def execute(k: Kernel, code: str, timeout: float = OP_TIMEOUT) -> OpResult:
    """Run a cell; wall time is until the kernel reports idle."""
    res = kernels.run(k, code, timeout)
    error = res.errors[0] if res.errors else {}
    ename = error.get("ename") or res.reply.get("ename")
    evalue = error.get("evalue") or res.reply.get("evalue") or ""
    return OpResult(res.elapsed, res.status, ename, str(evalue)[:300].splitlines()[0] if evalue else "",
                    outputs=len(res.results), stderr=res.stderr[-500:])


def complete(k: Kernel, code: str, cursor: Optional[int] = None, timeout: float = OP_TIMEOUT) -> OpResult:
    """A ``complete_request``; wall time is until the reply (what a frontend waits for)."""
    reply, wall = shell_request(k, "complete", code, cursor, timeout)
    return OpResult(wall, reply.get("status", "?"), reply.get("ename"), matches=tuple(reply.get("matches", ())))


def inspect(k: Kernel, code: str, detail: int, cursor: Optional[int] = None, timeout: float = OP_TIMEOUT) -> OpResult:
    """An ``inspect_request`` (``obj?`` is detail 0, ``obj??`` detail 1)."""
    reply, wall = shell_request(k, "inspect", code, cursor, timeout, detail_level=detail)
    return OpResult(wall, reply.get("status", "?"), reply.get("ename"), found=reply.get("found"))


def evaluate(k: Kernel, expression: str) -> str:
    """``repr`` of an expression evaluated silently in the kernel (no cell, no history)."""
    try:
        return kernels.evaluate(k, expression)
    except RuntimeError as e:
        raise BenchError(str(e)) from None


def setup(k: Kernel, code: str) -> None:
    """An unmeasured cell that must succeed."""
    r = execute(k, code)
    if r.status != "ok":
        raise BenchError(f"setup cell failed in kernel {k.name}: {r.ename}: {r.evalue}\n{code}\n{r.stderr}")


# -- what is measured --------------------------------------------------------------------------
@dataclasses.dataclass
class Op:
    kind: str  # "execute" | "complete" | "inspect"
    code: str
    detail: int = 0


@dataclasses.dataclass
class Action:
    key: str
    label: str
    category: str  # connect, display, complete_first, complete_repeat, inspect, exception, cell_magic, loop, ordinary
    ops: Dict[str, Op]  # side -> measured op
    pre: Dict[str, List[Op]] = dataclasses.field(default_factory=dict)  # unmeasured, before each repetition
    expect_error: bool = False  # exception rows: the cell must fail
    own_requests: int = 0  # requests the action itself needs besides what the target is about
    target: bool = False  # subject to the "at most one round trip" target
    note: str = ""
    unavailable: str = ""  # "n/a (…)" when it cannot run here


def build_actions(port: Dict[str, int], attr_reads: int, has_pandas: bool, has_cell_magic: bool) -> List[Action]:
    both = lambda code: {PLAIN: Op("execute", code), IPY: Op("execute", code)}  # noqa: E731
    noop = {PLAIN: [Op("execute", "pass")], IPY: [Op("execute", "pass")]}
    loop_body = "total = 0\nfor i in range(1000):\n    total += i * i\n"
    actions = [
        Action("connect", "connect (+ bind rsys, ros)", "connect",
               {PLAIN: Op("execute", f"conn = rpyc.classic.connect('127.0.0.1', {port[PLAIN]})\n"
                                     "rsys = conn.modules.sys\nros = conn.modules.os"),
                IPY: Op("execute", f"%rpyc_connect 127.0.0.1:{port[IPY]}")},
               pre={PLAIN: [Op("execute", "try:\n    conn.close()\nexcept NameError:\n    pass")],
                    IPY: [Op("execute", "%rpyc_disconnect --all")]}),
        Action("display_module", "display a module: rsys", "display", both("rsys"), target=True),
        Action("display_list", "display a list: p (p = rsys.path)", "display", both("p"), target=True),
        Action("display_function", "display a function: f (f = ros.path.abspath)", "display", both("f"),
               target=True),
        Action("display_dict", "display a dict: d (20 items)", "display", both("d"), target=True),
        Action("display_dataframe", "display a DataFrame: df (10x2)", "display", both("df"), target=True,
               unavailable="" if has_pandas else "n/a (pandas is not installed on the server)"),
        Action("complete_first", "complete rsys.path.app<TAB>, first", "complete_first",
               {PLAIN: Op("complete", "rsys.path.app"), IPY: Op("complete", "rsys.path.app")},
               pre=noop, target=True),
        Action("complete_repeat", "complete rsys.path.app<TAB>, repeated", "complete_repeat",
               {PLAIN: Op("complete", "rsys.path.app"), IPY: Op("complete", "rsys.path.app")},
               pre={s: [Op("execute", "pass"), Op("complete", "rsys.path.app")] for s in SIDES}, target=True),
        Action("inspect_0", "f? (inspect, detail 0)", "inspect",
               {s: Op("inspect", "f", 0) for s in SIDES}, target=True),
        Action("inspect_1", "f?? (inspect, detail 1)", "inspect",
               {s: Op("inspect", "f", 1) for s in SIDES}, target=True),
        Action("inspect_dotted", "ros.path.abspath? (dotted, detail 0)", "inspect",
               {s: Op("inspect", "ros.path.abspath", 0) for s in SIDES},
               note="IPython resolves ros.path.abspath attribute by attribute before inspecting"),
        Action("exception", "remote exception: p[300]", "exception", both("p[300]"), expect_error=True,
               own_requests=1, target=True, note="1 request is the failing getitem itself"),
        Action("exception_frames", "remote exception with frames: j(1, 2)", "exception", both("j(1, 2)"),
               expect_error=True, own_requests=1, target=True, note="1 request is the failing call itself"),
        Action("cell_magic", "%%rpyc with a small loop", "cell_magic",
               {PLAIN: Op("execute", f"conn.execute({loop_body!r})"), IPY: Op("execute", "%%rpyc\n" + loop_body)},
               note="plain: conn.execute(<the same code>)",
               unavailable="" if has_cell_magic else "n/a (not implemented)"),
        Action("attr_loop", f"{attr_reads} attribute reads: for _ in range({attr_reads}): rsys.maxsize", "loop",
               both(f"for _ in range({attr_reads}): rsys.maxsize")),
        Action("ordinary", "ordinary cell: x = sum(range(1000))", "ordinary", both("x = sum(range(1000))")),
    ]
    return actions


SETUP = (
    "p = rsys.path\n"
    "f = ros.path.abspath\n"
    "j = ros.path.join\n"
    "d = conn.eval(\"{'key%d' % i: i for i in range(20)}\")\n"
)
SETUP_PANDAS = (
    "df = conn.eval(\"__import__('pandas').DataFrame({'a': list(range(10)), 'b': [i / 4 for i in range(10)]})\")\n"
)


# -- measuring ---------------------------------------------------------------------------------
def summarize_frames(frames: List[Frame]) -> Dict[str, Any]:
    c2s = [f for f in frames if f.direction == C2S]
    s2c = [f for f in frames if f.direction == S2C]
    requests = [f for f in c2s if f.kind == "request"]
    return {
        "c2s_frames": len(c2s),
        "s2c_frames": len(s2c),
        "c2s_requests": sum(1 for f in requests if f.handler != "del"),  # round trips the client waits for
        "c2s_del": sum(1 for f in requests if f.handler == "del"),  # fire-and-forget garbage collection
        "s2c_requests": sum(1 for f in s2c if f.kind == "request"),  # the server calling back
        "c2s_bytes": sum(f.size for f in c2s),
        "s2c_bytes": sum(f.size for f in s2c),
        "requests": dict(Counter(f.detail or f.handler or "?" for f in requests)),
    }


def dkey(delay_ms: float) -> str:
    """The key of a delay in the results: "0", "20", "2.5"."""
    return f"{delay_ms:g}"


def stats(samples: List[float]) -> Dict[str, Any]:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {"n": 0}
    out: Dict[str, Any] = {"n": len(ms), "median": statistics.median(ms), "min": ms[0], "max": ms[-1]}
    if len(ms) >= 2:
        q = statistics.quantiles(ms, n=4, method="inclusive")
        out["q1"], out["q3"] = q[0], q[2]
    else:
        out["q1"] = out["q3"] = ms[0]
    out["samples"] = [round(x, 3) for x in ms]
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.delays_ms: List[float] = args.delays
        self.kernels: Dict[str, Kernel] = {}
        self.proxies: Dict[str, DelayProxy] = {}
        self.server: Optional[StockServer] = None
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.notes: List[str] = []
        self.extra: Dict[str, Any] = {}

    # reps per (action, delay): (wanted, at least, seconds after which no more are started)
    def reps(self, action: Action, delay_ms: float) -> Tuple[int, int, float]:
        ordinary = action.category == "ordinary"
        if self.args.reps:
            n = self.args.reps * (5 if ordinary else 1)
            return n, n, float("inf")
        if self.quick:
            if ordinary:
                return (25, 25, 3.0) if delay_ms == 0 else (11, 11, 3.0)
            return (3, 1, 1.5) if delay_ms == 0 else (1, 1, 0.0)
        if ordinary:
            return (101, 101, 10.0) if delay_ms == 0 else (51, 51, 10.0)
        return (7, 3, 8.0) if delay_ms == 0 else (5, 3, 25.0)

    def log(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    def run_op(self, side: str, op: Op) -> OpResult:
        k = self.kernels[side]
        if op.kind == "execute":
            return execute(k, op.code)
        if op.kind == "complete":
            return complete(k, op.code)
        if op.kind == "inspect":
            return inspect(k, op.code, op.detail)
        raise ValueError(op.kind)

    def check(self, action: Action, side: str, r: OpResult) -> Optional[str]:
        """None when the op did what a user expects, else what went wrong."""
        op = action.ops[side]
        if op.kind == "complete":
            if r.status != "ok" or "append" not in r.matches:
                return f"completion gave {list(r.matches)[:5]} (status {r.status})"
            return None
        if op.kind == "inspect":
            return None if r.status == "ok" and r.found else f"inspection found nothing (status {r.status})"
        if action.expect_error:
            return None if r.status == "error" else f"expected a remote exception, got status {r.status}"
        if r.status != "ok":
            return f"{r.ename}: {r.evalue}".strip()
        if action.category == "display" and r.outputs == 0:
            return "no output"
        return None

    def measure(self, action: Action, side: str, delay_ms: float) -> Tuple[OpResult, Dict[str, Any]]:
        proxy = self.proxies[side]
        for op in action.pre.get(side, []):
            pre = self.run_op(side, op)
            if op.kind == "execute" and pre.status != "ok":
                raise BenchError(f"{action.key}: preparation {op.code!r} failed in {side}: {pre.ename}: {pre.evalue}")
        proxy.quiesce()
        stray = proxy.take()
        if stray and self.args.verbose:
            self.log(f"  ({len(stray)} stray frames before {action.key}/{side})")
        r = self.run_op(side, action.ops[side])
        frames = proxy.take()
        return r, summarize_frames(frames)

    def run_action(self, action: Action, delay_ms: float) -> None:
        row = self.rows[action.key]
        wanted, least, budget = self.reps(action, delay_ms)
        start = time.monotonic()
        for rep in range(wanted):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for side in order:
                r, counts = self.measure(action, side, delay_ms)
                s = row["sides"][side]
                s["times"].setdefault(dkey(delay_ms), []).append(r.wall)  # index = repetition: pairs
                s["counts_by_delay"].setdefault(dkey(delay_ms), []).append(counts)
                problem = self.check(action, side, r)
                if problem and problem not in s["problems"]:
                    s["problems"].append(problem)
                if r.ename:
                    s["ename"] = r.ename
            if rep + 1 >= least and time.monotonic() - start > budget:
                break

    def new_row(self, action: Action) -> Dict[str, Any]:
        row = {
            "key": action.key, "label": action.label, "category": action.category,
            "status": action.unavailable or "ok", "note": action.note,
            "own_requests": action.own_requests, "target": action.target,
            "sides": {},
        }
        for side in SIDES:
            op = action.ops[side]
            row["sides"][side] = {
                "op": dataclasses.asdict(op), "times": {}, "counts_by_delay": {}, "problems": [], "ename": None,
            }
        self.rows[action.key] = row
        return row

    # -- the run ---------------------------------------------------------------------------------
    def start(self, stack: contextlib.ExitStack) -> None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ipyrpyc-bench-"))
        self.tmp = tmp
        self.ipython_dir = os.path.join(tmp, "ipython")
        os.makedirs(self.ipython_dir)
        self.server = start_server()
        stack.callback(self.server.stop)
        for side in SIDES:
            proxy = DelayProxy(("127.0.0.1", self.server.port))
            stack.callback(proxy.stop)
            self.proxies[side] = proxy
        for side, name in ((PLAIN, "python3"), (IPY, "ipyrpyc")):
            k = start_kernel(name, self.ipython_dir, tmp)
            stack.callback(k.shutdown, check=False)
            self.kernels[side] = k
        ipy = self.kernels[IPY]
        if evaluate(ipy, "'rpyc_connect' in get_ipython().magics_manager.magics['line']") != "True":
            raise BenchError("the ipyrpyc kernel did not load the extension:\n" + ipy.log_tail())
        if evaluate(self.kernels[PLAIN], "'rpyc_connect' in get_ipython().magics_manager.magics['line']") != "False":
            raise BenchError("the python3 kernel has ipyrpyc loaded: the comparison would be meaningless")
        setup(self.kernels[PLAIN], "import rpyc")
        self.has_cell_magic = evaluate(ipy, "'rpyc' in get_ipython().magics_manager.magics['cell']") == "True"
        self.has_pandas = importlib.util.find_spec("pandas") is not None  # the server runs this interpreter

    def setup_objects(self) -> None:
        code = SETUP + (SETUP_PANDAS if self.has_pandas else "")
        for side in SIDES:
            setup(self.kernels[side], code)

    def main_phase(self) -> None:
        ports = {side: self.proxies[side].port for side in SIDES}
        attr_reads = 20 if self.quick else 100
        actions = build_actions(ports, attr_reads, self.has_pandas, self.has_cell_magic)
        self.actions = actions
        for action in actions:
            self.new_row(action)
        for delay_ms in self.delays_ms:
            for proxy in self.proxies.values():
                proxy.delay = delay_ms / 1000.0
            self.log(f"-- {delay_ms:g} ms per direction")
            for action in actions:
                if action.unavailable:
                    continue
                t = time.monotonic()
                self.run_action(action, delay_ms)
                self.log(f"   {action.key:<18} {time.monotonic() - t:6.1f} s")
                if action.category == "connect":
                    self.setup_objects()
        self.ordinary_cpu()
        for proxy in self.proxies.values():
            for problem in proxy.broken() + proxy.errors:
                self.notes.append(f"proxy: {problem}")

    def ordinary_cpu(self) -> None:
        """CPU time the kernel process spends per ordinary cell, with and without the extension.

        Wall time between two kernels on a busy machine varies by ±25% even for two identical
        python3 kernels; the CPU time a kernel spends on a cell does not depend on how busy the
        machine is, so it can resolve a 5% overhead.  Batches of cells, alternating kernels,
        between two reads of ``time.process_time()`` in the kernel (all its threads).
        """
        batches, cells = (4, 25) if self.quick else (8, 40)
        code = "x = sum(range(1000))"
        per_cell: Dict[str, List[float]] = {PLAIN: [], IPY: []}
        for b in range(batches):
            for side in (SIDES if b % 2 == 0 else SIDES[::-1]):
                per_cell[side].append(self.cpu_per_cell(self.kernels[side], cells, code))
        self.extra["ordinary_cpu"] = {
            side: stats(v) for side, v in per_cell.items()
        }
        self.extra["ordinary_cpu"]["note"] = (f"kernel CPU time (time.process_time, all threads) per cell of {code!r}, "
                                              f"{batches} batches of {cells} cells per kernel, ms")

    @staticmethod
    def cpu_per_cell(k: Kernel, cells: int, code: str = "x = sum(range(1000))") -> float:
        """Seconds of the kernel process's CPU time per run of ``code``."""
        clock = "__import__('time').process_time()"
        t0 = float(evaluate(k, clock))
        for _ in range(cells):
            r = execute(k, code)
            if r.status != "ok":
                raise BenchError(f"{code!r} failed in kernel {k.name}: {r.ename}: {r.evalue}")
        return (float(evaluate(k, clock)) - t0) / cells

    def load_ext_phase(self, stack: contextlib.ExitStack) -> None:
        """``%load_ext ipyrpyc`` in fresh python3 kernels, against a no-op cell."""
        n = 2 if self.quick else 5
        noop, load, before, after = [], [], [], []
        problems: List[str] = []
        for _ in range(n):
            k = start_kernel("python3", self.ipython_dir, self.tmp)
            try:
                for _ in range(3):
                    execute(k, "pass")  # warm the kernel's own first-cell costs
                noop.append(statistics.median(execute(k, "pass").wall for _ in range(3)))
                before.append(self.cpu_per_cell(k, 20))
                r = execute(k, "%load_ext ipyrpyc")
                load.append(r.wall)
                if r.status != "ok":
                    problems.append(f"{r.ename}: {r.evalue}")
                elif evaluate(k, "'rpyc_connect' in get_ipython().magics_manager.magics['line']") != "True":
                    problems.append("%load_ext ipyrpyc did not register the magics")
                after.append(self.cpu_per_cell(k, 20))
            finally:
                k.shutdown(check=False)
        row = {
            "key": "load_ext", "label": "%load_ext ipyrpyc (fresh python3 kernel) vs a no-op cell",
            "category": "load_ext", "status": "ok", "target": False, "own_requests": 0,
            "note": "no connection is involved: network delay does not apply",
            "sides": {
                PLAIN: {"op": {"kind": "execute", "code": "pass"}, "times": {"0": noop}, "problems": [],
                        "counts_by_delay": {"0": [summarize_frames([])] * len(noop)}, "ename": None},
                IPY: {"op": {"kind": "execute", "code": "%load_ext ipyrpyc"}, "times": {"0": load},
                      "problems": problems, "counts_by_delay": {"0": [summarize_frames([])] * len(load)},
                      "ename": None},
            },
        }
        self.rows["load_ext"] = row
        self.extra["ordinary_same_kernel"] = {
            "before_load_ext": stats(before), "after_load_ext": stats(after),
            "note": "kernel CPU time per cell of x = sum(range(1000)) in the same fresh python3 kernels, "
                    "20 cells before and 20 after %load_ext ipyrpyc (no connection open), ms",
        }

    # -- results ---------------------------------------------------------------------------------
    def finish_rows(self) -> List[Dict[str, Any]]:
        out = []
        for row in self.rows.values():
            for side in SIDES:
                s = row["sides"][side]
                times = s.pop("times")
                s["times_ms"] = {d: stats(v) for d, v in times.items()}
                s["pairs"] = {d: [round(x * 1000, 4) for x in v] for d, v in times.items()}  # in run order
                by_delay = s["counts_by_delay"]
                s["counts_by_delay"] = {}
                for d, runs in by_delay.items():
                    worst = (max(runs, key=lambda c: (c["c2s_requests"], c["c2s_frames"])) if runs
                             else summarize_frames([]))
                    varies = len({(c["c2s_requests"], c["c2s_frames"], c["s2c_frames"]) for c in runs}) > 1
                    s["counts_by_delay"][d] = dict(worst, varies=varies,
                                                   c2s_requests_all=[c["c2s_requests"] for c in runs])
                # the exact counts: the first delay measured (0 ms by default), worst repetition
                s["counts"] = s["counts_by_delay"].get(dkey(self.delays_ms[0])) or next(
                    iter(s["counts_by_delay"].values()), None)
                s["ok"] = not s["problems"]
            row["ratio"] = {}
            row["paired_ratio"] = {}
            for d in row["sides"][PLAIN]["times_ms"]:
                p = row["sides"][PLAIN]["times_ms"].get(d, {}).get("median")
                i = row["sides"][IPY]["times_ms"].get(d, {}).get("median")
                if p and i:
                    row["ratio"][d] = p / i
                pairs = row["sides"][PLAIN]["pairs"].get(d, ()), row["sides"][IPY]["pairs"].get(d, ())
                ratios = [a / b for a, b in zip(*pairs) if a > 0 and b > 0]
                if ratios:  # each repetition ran both sides back to back: robust to a loaded machine
                    row["paired_ratio"][d] = statistics.median(ratios)
            out.append(row)
        return out

    def targets(self, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        by = {r["key"]: r for r in rows}
        out: List[Dict[str, Any]] = []
        hi = dkey(max(self.delays_ms)) if self.delays_ms else None

        def add(name: str, row_key: str, value: Optional[float], limit: float, op: str, unit: str = "",
                why: str = "") -> None:
            row = by.get(row_key)
            if row is None or row["status"] != "ok":
                out.append({"name": name, "row": row_key, "value": None, "limit": limit, "op": op,
                            "pass": None, "why": row["status"] if row else "not measured"})
                return
            ipy = row["sides"][IPY]
            if not ipy["ok"]:
                out.append({"name": name, "row": row_key, "value": value, "limit": limit, "op": op,
                            "pass": False, "why": "ipyrpyc: " + "; ".join(ipy["problems"])})
                return
            ok = value is not None and (value <= limit if op == "<=" else value >= limit)
            out.append({"name": name, "row": row_key, "value": value, "limit": limit, "op": op, "unit": unit,
                        "pass": ok, "why": why})

        for row in rows:
            if not row.get("target"):
                continue
            counts = row["sides"][IPY].get("counts") or {}
            n = counts.get("c2s_frames")  # every message client->server, fire-and-forget del included
            value = None if n is None else n - row.get("own_requests", 0)
            what = ("messages client→server besides the failing operation" if row.get("own_requests")
                    else "messages client→server")
            add(f"{row['key']}: at most 1 round trip ({what})", row["key"], value, 1, "<=",
                why=", ".join(f"{k}×{v}" for k, v in sorted(counts.get("requests", {}).items())))
        if hi is not None and float(hi) > 0:
            for row in rows:
                if row["category"] == "display":
                    add(f"{row['key']}: ≥ 20× faster than plain rpyc at {hi} ms", row["key"],
                        row["ratio"].get(hi), 20, ">=", "×",
                        why="plain rpyc fails: " + "; ".join(row["sides"][PLAIN]["problems"])
                        if row["sides"][PLAIN]["problems"] else "")
            add(f"complete_first: ≥ 10× faster than plain rpyc at {hi} ms", "complete_first",
                by.get("complete_first", {}).get("ratio", {}).get(hi), 10, ">=", "×")
            add(f"complete_repeat: ≥ 20× faster than plain rpyc at {hi} ms", "complete_repeat",
                by.get("complete_repeat", {}).get("ratio", {}).get(hi), 20, ">=", "×")
        ordinary = by.get("ordinary")
        cpu = self.extra.get("ordinary_cpu")
        if ordinary and cpu and cpu[PLAIN].get("n") and cpu[IPY].get("n"):
            pooled = {side: statistics.median(
                [x for d in ordinary["sides"][side]["times_ms"].values() for x in d.get("samples", [])] or [0])
                for side in SIDES}
            ratio = cpu[IPY]["median"] / cpu[PLAIN]["median"] if cpu[PLAIN]["median"] else None
            add("ordinary cell with the extension within 5% of one without (kernel CPU time per cell, medians)",
                "ordinary", ratio, 1.05, "<=", "×",
                why=f"CPU {cpu[PLAIN]['median'] * 1000:.0f} µs without, {cpu[IPY]['median'] * 1000:.0f} µs with; "
                    f"wall medians {pooled[PLAIN]:.2f} ms without, {pooled[IPY]:.2f} ms with "
                    f"({pooled[IPY] / pooled[PLAIN] if pooled[PLAIN] else float('nan'):.2f}×, dominated by "
                    "scheduling noise on a busy machine)")
        elif ordinary:
            pooled = {side: statistics.median(
                [x for d in ordinary["sides"][side]["times_ms"].values() for x in d.get("samples", [])] or [0])
                for side in SIDES}
            plain_pairs = [x for v in ordinary["sides"][PLAIN]["pairs"].values() for x in v]
            ipy_pairs = [x for v in ordinary["sides"][IPY]["pairs"].values() for x in v]
            paired = [b / a for a, b in zip(plain_pairs, ipy_pairs) if a > 0]
            ratio = statistics.median(paired) if paired else None
            add("ordinary cell with the extension within 5% of one without "
                "(median of back-to-back pairs ipyrpyc/plain, all delays pooled)",
                "ordinary", ratio, 1.05, "<=", "×",
                why=f"{len(paired)} pairs; plain medians {pooled[PLAIN]:.2f} ms without, {pooled[IPY]:.2f} ms with: "
                    f"{pooled[IPY] / pooled[PLAIN] if pooled[PLAIN] else float('nan'):.3f}×")
        load = by.get("load_ext")
        if load:
            med = load["sides"][IPY]["times_ms"].get("0", {}).get("median")
            add("%load_ext ipyrpyc under 200 ms (fresh kernel, median)", "load_ext", med, 200, "<=", " ms",
                why=f"no-op cell {load['sides'][PLAIN]['times_ms'].get('0', {}).get('median', 0):.1f} ms")
        return out


# -- output --------------------------------------------------------------------------------------
def fmt_ms(st: Dict[str, Any]) -> str:
    if not st or not st.get("n"):
        return "-"
    med, lo, hi = st["median"], st["min"], st["max"]
    f = (lambda x: f"{x:.0f}") if med >= 100 else (lambda x: f"{x:.1f}")
    return f"{f(med)} [{f(lo)}–{f(hi)}]" if st["n"] > 1 else f"{f(med)} [n=1]"


def fmt_counts(c: Optional[Dict[str, Any]]) -> str:
    if not c:
        return "-"
    extra = f"+{c['c2s_del']}del" if c.get("c2s_del") else ""
    vary = "~" if c.get("varies") else ""
    return f"{c['c2s_requests']}{extra} ({c['c2s_frames']}→/{c['s2c_frames']}←){vary}"


def table(rows: List[Dict[str, Any]], delays: List[float]) -> str:
    head = ["action", "plain req (→/←)", "ipyrpyc req (→/←)"]
    for d in delays:
        head += [f"{d:g} ms plain", f"{d:g} ms ipyrpyc", "ratio"]
    lines = [head]
    for row in rows:
        label = row["label"] if len(row["label"]) <= 44 else row["label"][:43] + "…"
        if row["status"] != "ok":
            lines.append([label, row["status"]] + [""] * (len(head) - 2))
            continue
        p, i = row["sides"][PLAIN], row["sides"][IPY]
        cells = [label, fmt_counts(p.get("counts")) + (" !" if not p["ok"] else ""),
                 fmt_counts(i.get("counts")) + (" !" if not i["ok"] else "")]
        for d in delays:
            key = dkey(d)
            if key not in p["times_ms"]:
                cells += ["", "", ""]
                continue
            ratio = row["ratio"].get(key)
            cells += [fmt_ms(p["times_ms"].get(key, {})), fmt_ms(i["times_ms"].get(key, {})),
                      f"{ratio:.1f}×" if ratio else "-"]
        lines.append(cells)
    widths = [max(len(r[c]) for r in lines if c < len(r)) for c in range(len(head))]
    out = []
    for n, r in enumerate(lines):
        out.append("  ".join((cell.ljust(w) if c == 0 else cell.rjust(w)) for c, (cell, w) in
                             enumerate(zip(r, widths))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def report(result: Dict[str, Any]) -> str:
    rows, delays = result["rows"], result["meta"]["delays_ms"]
    out = [f"ipyrpyc benchmark ({result['meta']['mode']} mode): plain rpyc (kernel python3, rpyc.classic.connect) "
           f"vs ipyrpyc (kernel ipyrpyc, %rpyc_connect)",
           "req = round trips the client waited for (requests client→server, del messages counted apart);",
           "(→/←) = rpyc frames client→server / server→client, counted by the proxy from the request to the "
           "kernel until it is idle;",
           "times: wall ms, median [min–max] over the repetitions; ratio = plain median / ipyrpyc median;",
           "'!' = the action did not do what a user expects on that side (see notes); '~' = counts varied.",
           "", table(rows, delays), ""]
    problems = [(r["key"], side, r["sides"][side]["problems"]) for r in rows if r["status"] == "ok"
                for side in SIDES if r["sides"][side]["problems"]]
    if problems:
        out.append("Notes on '!':")
        for key, side, probs in problems:
            out.append(f"  {key} ({side}): {'; '.join(probs)}")
        out.append("")
    out.append("Requests per action (worst repetition at the first delay):")
    for r in rows:
        if r["status"] != "ok" or r["key"] == "load_ext":
            continue
        for side in SIDES:
            c = r["sides"][side].get("counts") or {}
            reqs = c.get("requests") or {}
            if not reqs:
                continue
            items = sorted(reqs.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k}×{v}" if v > 1 else k for k, v in items[:8])
            more = f", … {len(items) - 8} more kinds" if len(items) > 8 else ""
            out.append(f"  {r['key']:<18} {side:<8} {shown}{more}")
    cpu = result.get("extra", {}).get("ordinary_cpu")
    if cpu and cpu.get(PLAIN, {}).get("n") and cpu.get(IPY, {}).get("n"):
        us = lambda st: f"{st['median'] * 1000:.0f} µs [{st['min'] * 1000:.0f}–{st['max'] * 1000:.0f}]"  # noqa: E731
        out.append("")
        out.append(f"Ordinary cell, kernel CPU time per cell: plain {us(cpu[PLAIN])}, ipyrpyc {us(cpu[IPY])} "
                   f"({cpu[IPY]['median'] / cpu[PLAIN]['median']:.3f}×; {cpu[PLAIN]['n']} batches each)")
    extra = result.get("extra", {}).get("ordinary_same_kernel")
    if extra:
        b, a = extra["before_load_ext"], extra["after_load_ext"]
        if b.get("n") and a.get("n"):
            out.append("")
            out.append(f"Ordinary cell in the same fresh python3 kernels, kernel CPU time per cell: "
                       f"{b['median'] * 1000:.0f} µs before %load_ext ipyrpyc, {a['median'] * 1000:.0f} µs after "
                       f"({a['median'] / b['median']:.3f}×, {b['n']} kernels)")
    out.append("")
    out.append("Targets:")
    for t in result["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "N/A "}[t["pass"]]
        if t["value"] is None:
            value = "-"
        elif t.get("unit") == "×" or t["op"] == ">=":
            value = f"{t['value']:.3g}{t.get('unit', '')}"
        else:
            value = f"{t['value']:.4g}{t.get('unit', '')}"
        limit = f"{t['op']} {t['limit']:g}{t.get('unit', '')}"
        why = f"  ({t['why']})" if t.get("why") else ""
        out.append(f"  {mark}  {t['name']}: {value} {limit}{why}")
    for note in result.get("notes", []):
        out.append(f"note: {note}")
    out.append(f"\nTotal run time: {result['meta']['duration_s']:.1f} s")
    return "\n".join(out)


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("rpyc", "IPython", "ipykernel", "jupyter_client", "pandas", "ipyrpyc"):
        try:
            from importlib.metadata import version

            out[name] = version(name if name != "IPython" else "ipython")
        except Exception:
            out[name] = "-"
    return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions, 0 and 20 ms only (CI, < 60 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--delays", default=None, help="added delay per direction in ms, comma-separated (default 0,20)")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per action and delay (overrides the mode's)")
    ap.add_argument("--no-load-ext", action="store_true", help="skip the %%load_ext measurement")
    ap.add_argument("--verbose", action="store_true", help="say more on stderr")
    ap.add_argument("--silent", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    if args.delays is None or args.quick:
        if args.quick and args.delays not in (None, "0,20"):
            ap.error("--quick measures 0 and 20 ms only")
        args.delays = [0.0, 20.0]
    else:
        try:
            args.delays = [float(x) for x in args.delays.split(",") if x.strip()]
        except ValueError:
            ap.error("--delays: comma-separated numbers of milliseconds")
        if not args.delays or any(d < 0 or d > 1000 for d in args.delays):
            ap.error("--delays: between 0 and 1000 ms")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout, a test's terminate()) unwinds through the finally blocks below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    bench = Bench(args)
    with contextlib.ExitStack() as stack:
        try:
            bench.start(stack)
            bench.main_phase()
        except BenchError as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 2
        except Exception:  # a timeout, a kernel that died: say where, then stop everything
            import traceback

            traceback.print_exc()
            print("benchmark failed (see above)", file=sys.stderr)
            return 2
        # the two measuring kernels, proxies and the server go before the load_ext kernels start
        stack.close()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ipyrpyc-bench-"))
        bench.tmp, bench.ipython_dir = tmp, os.path.join(tmp, "ipython")
        os.makedirs(bench.ipython_dir)
        if not args.no_load_ext:
            try:
                bench.load_ext_phase(stack)
            except Exception as e:
                print(f"benchmark failed in the %load_ext phase: {type(e).__name__}: {e}", file=sys.stderr)
                return 2
    rows = bench.finish_rows()
    result = {
        "meta": {
            "mode": "quick" if args.quick else "full", "delays_ms": args.delays,
            "duration_s": time.monotonic() - started, "cpus": os.cpu_count(),
            "platform": platform.platform(), "versions": versions(),
            "actions": [r["key"] for r in rows],
        },
        "rows": rows,
        "extra": bench.extra,
        "notes": bench.notes,
    }
    result["targets"] = bench.targets(rows)
    result["meta"]["duration_s"] = time.monotonic() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    print(report(result), flush=True)
    if args.check and any(t["pass"] is False for t in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
