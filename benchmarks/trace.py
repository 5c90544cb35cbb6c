"""What ``%rpyc_trace`` costs: nothing while off, and how much while on.

Run from the repository root:

    .venv/bin/python -m benchmarks.trace            # about a minute
    .venv/bin/python -m benchmarks.trace --quick    # a few seconds

One stock ``rpyc_classic`` server on 127.0.0.1 behind the frame-counting proxy
(``ipyrpyc.proxy.DelayProxy``, no added delay) and, in this process, the same loop of
remote attribute reads (``rsys.maxsize``: one request each) on four connections,
alternating, repetition after repetition:

- plain: ``rpyc.classic.connect``, the baseline every time is divided by;
- ipyrpyc: ``ipyrpyc.connect`` (the call guard, live output), never traced;
- ipyrpyc, traced before: the same after a trace was attached and closed (``%rpyc_trace
  off``): no wrapper may be left, no request added, no time;
- ipyrpyc, traced: while a :class:`ipyrpyc.wire.Trace` records every request.

Then, in a real kernel (the tests' helpers), the cell a user would trace: a
1,000-iteration loop over a remote list, plain and under ``%%rpyc_trace`` (report included).
Requests are counted by the proxy; times are medians, as ratios against plain rpyc.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import rpyc

import ipyrpyc
from ipyrpyc.magics_trace import TraceReport
from ipyrpyc.proxy import C2S, DelayProxy
from ipyrpyc.wire import Trace
from tests.support.kernels import Kernel, ok
from tests.support.processes import StockServer

WRAPPED = ("_send", "_dispatch", "_seq_request_callback", "_dispatch_request")
MODES = ("plain", "ipyrpyc", "ipyrpyc, traced before", "ipyrpyc, traced")


def loop(rsys: Any, n: int) -> None:
    for _ in range(n):
        rsys.maxsize  # noqa: B018 - one remote getattr, the thing measured


def requests_of(proxy: DelayProxy) -> int:
    proxy.quiesce(0.05, 2)
    return sum(1 for f in proxy.take() if f.direction == C2S and f.kind == "request" and f.handler != "del")


def connections(port: int) -> Dict[str, Any]:
    """The four connections of :data:`MODES` to ``127.0.0.1:port`` (traced and untraced share one)."""
    plain = rpyc.classic.connect("127.0.0.1", port)
    ours = ipyrpyc.connect(f"127.0.0.1:{port}")
    before = ipyrpyc.connect(f"127.0.0.1:{port}", name="before")
    Trace(before).close()  # attached and taken back: what %rpyc_trace off leaves
    return {"plain": plain, "ipyrpyc": ours, "ipyrpyc, traced before": before, "ipyrpyc, traced": ours}


def measure(conns: Dict[str, Any], n: int, reps: int, after: Callable[[], Any] = lambda: None) -> Dict[str, Any]:
    """Per mode: wall and client-thread CPU seconds per request, and what ``after()`` returned."""
    rsys = {mode: conn.modules.sys for mode, conn in conns.items()}
    for mode in MODES:  # warm up: netref classes, caches
        loop(rsys[mode], 20)
    after()
    out: Dict[str, Any] = {m: {"wall": [], "cpu": [], "after": []} for m in MODES}
    traces: List[Trace] = []
    for rep in range(reps):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            gc.collect()
            trace = Trace(conns[mode]) if mode == "ipyrpyc, traced" else None
            wall, cpu = time.perf_counter(), time.thread_time()
            loop(rsys[mode], n)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            if trace is not None:
                trace.close()
                traces.append(trace)
            out[mode]["wall"].append(wall / n)
            out[mode]["cpu"].append(cpu / n)
            out[mode]["after"].append(after())
    out["traces"] = traces
    return out


def in_process(server: StockServer, proxy: DelayProxy, n: int, reps: int) -> Dict[str, Any]:
    """Times on direct loopback connections (this thread's CPU time is the client's own work);
    requests counted on a second set of connections through the proxy."""
    timed, counted = connections(server.port), connections(proxy.port)
    try:
        left = [name for name in WRAPPED if name in vars(timed["ipyrpyc, traced before"])]
        times = measure(timed, n, reps)
        counts = measure(counted, min(n, 100), 2, after=lambda: requests_of(proxy))
        report_times = []
        for trace in times["traces"][:5]:
            start = time.perf_counter()
            view = TraceReport(trace, 40)
            repr(view), view._repr_html_()
            report_times.append(time.perf_counter() - start)
        return {"wall": {m: times[m]["wall"] for m in MODES}, "cpu": {m: times[m]["cpu"] for m in MODES},
                "counts": {m: counts[m]["after"] for m in MODES}, "counted_n": min(n, 100), "left": left,
                "report": statistics.median(report_times), "traced": times["traces"][-1].count}
    finally:
        for conn in {id(c): c for c in [*timed.values(), *counted.values()]}.values():
            with contextlib.suppress(Exception):
                conn.close()


def in_kernel(proxy: DelayProxy, reps: int) -> Dict[str, List[float]]:
    with tempfile.TemporaryDirectory(prefix="ipyrpyc-bench-") as tmp:
        k = Kernel(log_path=os.path.join(tmp, "kernel.log"))
        try:
            return kernel_cells(k, proxy, reps)
        finally:
            k.shutdown()


def kernel_cells(k: Kernel, proxy: DelayProxy, reps: int) -> Dict[str, List[float]]:
    ok(k, f"%rpyc_connect 127.0.0.1:{proxy.port}\nbig = conn.eval('list(range(1000))')")
    cell = "total = 0\nfor x in big:\n    total += x"
    cells: Dict[str, Callable[[], Any]] = {
        "cell": lambda: ok(k, cell), "%%rpyc_trace cell": lambda: ok(k, "%%rpyc_trace\n" + cell)}
    out: Dict[str, List[float]] = {name: [] for name in cells}
    for rep in range(reps):
        for name in (list(cells) if rep % 2 == 0 else list(cells)[::-1]):
            out[name].append(cells[name]().elapsed)
    return out


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (a few seconds)")
    ap.add_argument("--requests", type=int, default=0, help="attribute reads per repetition")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per connection")
    ap.add_argument("--no-kernel", action="store_true", help="skip the real-kernel cells")
    args = ap.parse_args(argv)
    n = args.requests or (200 if args.quick else 1000)
    reps = args.reps or (5 if args.quick else 21)
    started = time.monotonic()
    server = StockServer()
    proxy = DelayProxy(("127.0.0.1", server.port))
    try:
        res = in_process(server, proxy, n, reps)
        kernel = None if args.no_kernel else in_kernel(proxy, 3 if args.quick else 9)
    finally:
        proxy.stop()
        server.stop()
    wall = {m: statistics.median(res["wall"][m]) for m in MODES}
    cpu = {m: statistics.median(res["cpu"][m]) for m in MODES}
    print(f"ipyrpyc trace benchmark: {n:,} remote attribute reads (rsys.maxsize) per repetition, {reps} repetitions "
          f"per connection, alternating, on loopback to a stock rpyc_classic; requests counted through the proxy")
    print(f"{'connection':<24}{'wall µs/request':>17}{'ratio':>8}{'client CPU µs/request':>23}{'ratio':>8}"
          f"{'requests':>10}")
    for m in MODES:
        counts = "/".join(str(c) for c in sorted(set(res["counts"][m])))
        print(f"{m:<24}{wall[m] * 1e6:>17.1f}{wall[m] / wall['plain']:>7.2f}×{cpu[m] * 1e6:>23.1f}"
              f"{cpu[m] / cpu['plain']:>7.2f}×{counts:>10}")
    same = set(res["counts"]["ipyrpyc, traced before"]) == set(res["counts"]["ipyrpyc"]) == {res["counted_n"]}
    print(f"\nwrappers left on a connection after tracing: {len(res['left'])} {res['left'] or ''}".rstrip())
    print(f"tracing off (after on): {wall['ipyrpyc, traced before'] / wall['ipyrpyc']:.2f}× the wall time and "
          f"{cpu['ipyrpyc, traced before'] / cpu['ipyrpyc']:.2f}× the client CPU of a never-traced connection; "
          f"the same requests: {same}")
    print(f"tracing on: {wall['ipyrpyc, traced'] / wall['ipyrpyc']:.2f}× the wall time "
          f"({(wall['ipyrpyc, traced'] - wall['ipyrpyc']) * 1e6:+.1f} µs per request) and "
          f"{cpu['ipyrpyc, traced'] / cpu['ipyrpyc']:.2f}× the client CPU "
          f"({(cpu['ipyrpyc, traced'] - cpu['ipyrpyc']) * 1e6:+.1f} µs) of the untraced connection")
    print(f"building the report of {res['traced']:,} requests (text and HTML): {res['report'] * 1000:.1f} ms")
    if kernel is not None:
        a, b = (statistics.median(kernel[k]) * 1000 for k in ("cell", "%%rpyc_trace cell"))
        print(f"\nreal kernel, a 1,000-iteration loop over a remote list (1,002 requests), median of "
              f"{len(kernel['cell'])}: {a:.0f} ms plain, {b:.0f} ms under %%rpyc_trace ({b / a:.2f}×, report included)")
    print(f"\nTotal run time: {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
