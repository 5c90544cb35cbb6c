"""Copies of data: ipyrpyc against plain rpyc and a raw socket, side by side in one run.

Run from the repository root:

    .venv/bin/python -m benchmarks.transfer                            # full mode (the issue's sizes)
    .venv/bin/python -m benchmarks.transfer --quick --json out.json    # CI mode, small sizes

One stock ``rpyc_classic`` server on 127.0.0.1 (free port), reached by a plain
``rpyc.classic.connect`` connection and by ``ipyrpyc.connect``, directly and through
``ipyrpyc.proxy.DelayProxy`` adding 20 ms per direction; and a raw TCP peer (a process
that sends or receives the same number of bytes with ``sendall``/``recv_into``), the
ceiling of the machine.  Rows:

- array pull / push: a float64 array (200 MB): ``rpyc.classic.obtain`` / ``deliver``
  (pickle) against ``ipyrpyc.pull`` / ``push``;
- file get / put (1 GB, random bytes): ``rpyc.classic.download`` / ``upload`` against
  ``ipyrpyc.get`` / ``put`` (sha256 on both sides, times kept, written under a temporary
  name), and the raw socket moving the same bytes;
- 50 MB pull through the 20 ms proxy: ipyrpyc against the raw socket through the same proxy;
- a DataFrame of 1 M rows, 8 float64 columns and one string column: ``obtain`` against
  ``ipyrpyc.pull``;
- compression on and off, for random and for compressible data;
- peak memory beyond the copied object itself: this process by ``tracemalloc`` (numpy
  reports its buffers to it), the server by its peak RSS (``VmHWM``, reset through
  ``/proc/PID/clear_refs``), measured in separate runs so that tracing does not slow the timed ones.

MB is 10^6 bytes.  Times are the best of the repetitions (the median is printed too);
fresh destination arrays and files every time, as a user gets them.  Targets are printed as
PASS/FAIL; ``--check`` makes a failed one the exit status.  The quick mode (tests/
test_benchmark_transfer_quick.py) checks the values, never the speed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import ipyrpyc
from ipyrpyc.proxy import DelayProxy
from tests.support.processes import StockServer, stop_process

MB = 1e6
PLAIN_FILE = 32 << 20  # plain rpyc's file copies are measured on this much of the file (16 kB per round trip)
PLAIN_ARRAY = 50_000_000  # and its array copies on this much: its write is quadratic in the frame size
MODES = {
    "full": dict(array=200_000_000, file=1 << 30, latency=50_000_000, rows=1_000_000, reps=3, compress=50_000_000,
                 plain_array=PLAIN_ARRAY, plain_file=PLAIN_FILE),
    "quick": dict(array=20_000_000, file=32 << 20, latency=5_000_000, rows=100_000, reps=1, compress=5_000_000,
                  plain_array=20_000_000, plain_file=8 << 20),
}
DELAY = 0.020
PLAIN_TIMEOUT = 900.0  # plain rpyc's copies of 200 MB take minutes (its write is quadratic in the frame size)

RAW_PEER = r"""
import socket, sys
import numpy as np
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
print(listener.getsockname()[1], flush=True)
data = {}
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = conn.recv(9, socket.MSG_WAITALL)
    op, n = head[:1], int.from_bytes(head[1:], "big")
    if op == b"Q":
        break
    if op == b"P":  # send n bytes
        if n not in data:
            data[n] = np.random.default_rng(1).bytes(n)
        conn.sendall(data[n])
    else:  # receive n bytes into a fresh buffer, then say so
        buf = np.empty(n, np.uint8)
        view, got = memoryview(buf), 0
        while got < n:
            got += conn.recv_into(view[got:])
        conn.sendall(b"k")
    conn.close()
"""


# -- the raw socket -------------------------------------------------------------------------------
class RawPeer:
    """The raw TCP ceiling: a process that sends or receives ``n`` bytes per connection."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", RAW_PEER], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def connect(self, port: Optional[int] = None) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port or self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def pull(self, n: int, port: Optional[int] = None) -> Tuple[float, np.ndarray]:
        """Seconds from the request to the last byte, into a fresh array (connected beforehand)."""
        with self.connect(port) as s:
            start = time.perf_counter()
            s.sendall(b"P" + n.to_bytes(8, "big"))
            buf = np.empty(n, np.uint8)
            view, got = memoryview(buf), 0
            while got < n:
                k = s.recv_into(view[got:])
                if not k:
                    raise EOFError("raw peer closed early")
                got += k
            return time.perf_counter() - start, buf

    def push(self, data: np.ndarray) -> float:
        with self.connect() as s:
            start = time.perf_counter()
            s.sendall(b"U" + data.nbytes.to_bytes(8, "big"))
            s.sendall(memoryview(data).cast("B"))
            s.recv(1)
            return time.perf_counter() - start

    def stop(self) -> None:
        with contextlib.suppress(OSError), self.connect() as s:
            s.sendall(b"Q" + bytes(8))
        try:
            self.proc.wait(5)
        finally:
            stop_process(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


# -- measuring ------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], reps: int, check: Callable[[Any], bool], before: Callable[[], None] = lambda: None
          ) -> Dict[str, Any]:
    """Best and median seconds of ``reps`` runs; each result must pass ``check``."""
    seconds, ok = [], True
    for _ in range(reps):
        before()
        start = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - start)
        ok = ok and bool(check(value))
        del value
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "samples_s": seconds, "ok": ok}


def rate(nbytes: int, entry: Optional[Dict[str, Any]]) -> Optional[float]:
    return nbytes / entry["best_s"] / MB if entry else None


def _ratio(fast: Optional[Dict[str, Any]], slow: Optional[Dict[str, Any]]) -> Optional[float]:
    """How many times faster ``fast`` moved its bytes than ``slow`` (for the latency target, where both
    move the same bytes: the ratio of their times)."""
    if not fast or not slow:
        return None
    return fast["MB_s"] / slow["MB_s"] if "MB_s" in fast and "MB_s" in slow else slow["best_s"] / fast["best_s"]


def server_memory(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def peak_extra(fn: Callable[[], Any], pid: int, kept_on_server: int = 0) -> Dict[str, Any]:
    """Peak memory beyond the result: here (tracemalloc) and on the server (peak RSS, less what a push
    leaves there)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS
    rss_before, _ = server_memory(pid)
    tracemalloc.start()
    try:
        value = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _, hwm = server_memory(pid)
    kept = _size_of(value)
    del value
    return {"client_extra_bytes": max(0, peak - kept), "server_extra_bytes": max(0, hwm - rss_before - kept_on_server),
            "result_bytes": kept or kept_on_server}


def _size_of(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if hasattr(value, "memory_usage"):
        return int(value.memory_usage(deep=True).sum())
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = MODES["quick" if args.quick else "full"]
        self.rows: List[Dict[str, Any]] = []
        self.memory: List[Dict[str, Any]] = []

    def log(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    def row(self, key: str, label: str, nbytes: int, **sides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        row = {"key": key, "label": label, "bytes": nbytes, "sides": {k: v for k, v in sides.items() if v}}
        for entry in row["sides"].values():
            entry["MB_s"] = rate(entry.get("measured_bytes", nbytes), entry)
        self.rows.append(row)
        shown = ", ".join(f"{side} {entry['MB_s']:,.0f} MB/s ({entry['best_s'] * 1e3:,.0f} ms)"
                          for side, entry in row["sides"].items())
        self.log(f"{label}: {shown}")
        return row

    def run(self, stack: contextlib.ExitStack, tmp: str) -> None:
        m, reps = self.mode, self.mode["reps"]
        server = StockServer()
        stack.callback(server.stop)
        raw = RawPeer()
        stack.callback(raw.stop)
        plain = rpyc_connect(server.port)
        stack.callback(close_plain, plain)
        ipy = ipyrpyc.connect(f"127.0.0.1:{server.port}", timeout=PLAIN_TIMEOUT)
        stack.callback(ipy.close)
        warm = lambda: np.ones(self.mode["array"] // 8 * 2).sum()  # noqa: E731 (pages this process will reuse)

        # -- arrays ---------------------------------------------------------------------------
        n, p = m["array"] // 8, m["plain_array"] // 8
        ipy.execute(f"import numpy as np\nA = np.random.default_rng(0).random({n})")
        plain.execute(f"import numpy as np\nA = np.random.default_rng(0).random({n})[:{p}].copy()")
        ref = np.random.default_rng(0).random(n)
        same = lambda x: np.array_equal(x, ref)  # noqa: E731
        same_part = lambda x: np.array_equal(x, ref[:p])  # noqa: E731
        self.log(f"pulling {n * 8 / MB:.0f} MB ...")
        self.row("array_pull", f"float64 array pull, {n * 8 / MB:.0f} MB", n * 8,
                 raw=timed(lambda: raw.pull(n * 8)[0], reps, lambda t: True, warm),
                 plain=dict(timed(lambda: rpyc_obtain(plain.namespace["A"]), 1, same_part, warm), measured_bytes=p * 8),
                 ipyrpyc=timed(lambda: ipyrpyc.pull(ipy, "A", progress=False), reps, same, warm))
        self.row("array_push", f"float64 array push, {n * 8 / MB:.0f} MB", n * 8,
                 raw=timed(lambda: raw.push(ref), reps, lambda t: True),
                 plain=dict(timed(lambda: rpyc_deliver(plain, ref[:p]), 1,
                                  lambda r: bool(plain.eval("bool((A == B).all())"))), measured_bytes=p * 8),
                 ipyrpyc=timed(lambda: ipyrpyc.push(ipy, "B", ref, progress=False), reps,
                               lambda r: bool(ipy.eval("bool((A == B).all())"))))
        self.memory.append({"key": "array_pull", "label": "array pull", **peak_extra(
            lambda: ipyrpyc.pull(ipy, "A", progress=False), server.pid)})
        ipy.execute("del B")
        self.memory.append({"key": "array_push", "label": "array push", **peak_extra(
            lambda: ipyrpyc.push(ipy, "B", ref, progress=False), server.pid, ref.nbytes)})
        ipy.execute("del A, B")
        plain.execute("del A, B")

        # -- DataFrame ------------------------------------------------------------------------
        rows = m["rows"]
        make = (f"import numpy as np, pandas as pd\nrng = np.random.default_rng(0)\n"
                f"df = pd.DataFrame({{f'c{{i}}': rng.random({rows}) for i in range(8)}})\n"
                f"df['name'] = [f'sensor-{{i % 977}}-{{i}}' for i in range({rows})]")
        ipy.execute(make)
        plain.execute(make)
        local: Dict[str, Any] = {}
        exec(make, local)
        expected = local["df"]
        df_bytes = int(expected.memory_usage(deep=True).sum())
        equal = lambda x: x.equals(expected) and list(x.dtypes) == list(expected.dtypes)  # noqa: E731
        self.log(f"DataFrame {rows:,} x 9 ...")
        self.row("dataframe_pull", f"DataFrame pull, {rows:,} rows x (8 float64 + 1 str)", df_bytes,
                 plain=timed(lambda: rpyc_obtain(plain.namespace["df"]), 1, equal),
                 ipyrpyc=timed(lambda: ipyrpyc.pull(ipy, "df", progress=False), reps, equal))
        self.memory.append({"key": "dataframe_pull", "label": "DataFrame pull", **peak_extra(
            lambda: ipyrpyc.pull(ipy, "df", progress=False), server.pid)})
        ipy.execute("del df")
        plain.execute("del df")

        # -- files ----------------------------------------------------------------------------
        size = m["file"]
        src = os.path.join(tmp, "source.bin")
        with open(src, "wb") as f:
            block = np.random.default_rng(2).bytes(1 << 20)
            for _ in range(size >> 20):
                f.write(block)
        digest = sha256_of(src)
        file_bytes = np.fromfile(src, np.uint8)  # what the raw socket sends for a put
        dst = os.path.join(tmp, "copy.bin")

        def fresh() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)

        def copied(result: Any) -> bool:
            return sha256_of(dst) == digest and os.stat(dst).st_mtime_ns == os.stat(src).st_mtime_ns

        self.log(f"file {size / MB:,.0f} MB ...")
        # plain rpyc moves 16 kB per round trip (rpyc.classic.download/upload): measured on a part of the file
        part = os.path.join(tmp, "part.bin")
        with open(part, "wb") as f:
            f.write(file_bytes[:m["plain_file"]].tobytes())
        part_digest = sha256_of(part)
        plain_get = timed(lambda: rpyc_download(plain, part, dst), 1, lambda r: sha256_of(dst) == part_digest, fresh)
        plain_get["measured_bytes"] = os.path.getsize(part)
        self.row("file_get", f"file get (%rpyc_get), {size / MB:,.0f} MB, sha256 checked", size,
                 raw=timed(lambda: raw.pull(size)[0], reps, lambda t: True),
                 plain=plain_get,
                 ipyrpyc=timed(lambda: ipyrpyc.get(ipy, src, dst, progress=False), reps, copied, fresh))
        plain_put = timed(lambda: rpyc_upload(plain, part, dst), 1, lambda r: sha256_of(dst) == part_digest, fresh)
        plain_put["measured_bytes"] = os.path.getsize(part)
        self.row("file_put", f"file put (%rpyc_put), {size / MB:,.0f} MB, sha256 checked", size,
                 raw=timed(lambda: raw.push(file_bytes), reps, lambda t: True),
                 plain=plain_put,
                 ipyrpyc=timed(lambda: ipyrpyc.put(ipy, src, dst, progress=False), reps, copied, fresh))
        fresh()
        os.unlink(src)
        os.unlink(part)

        # -- compression --------------------------------------------------------------------------
        c = m["compress"] // 8
        ipy.execute(f"R = np.random.default_rng(0).random({c})\nZ = np.arange({c}, dtype=float) // 1000")
        random_ref = np.random.default_rng(0).random(c)
        zeros_ref = np.arange(c, dtype=float) // 1000
        for name, refv in (("R", random_ref), ("Z", zeros_ref)):
            what = "random float64" if name == "R" else "compressible float64 (steps)"
            same_as = lambda x, refv=refv: np.array_equal(x, refv)  # noqa: E731
            self.row(f"compress_{name}", f"pull {c * 8 / MB:.0f} MB of {what}: compression off / on", c * 8,
                     off=timed(lambda name=name: ipyrpyc.pull(ipy, name, progress=False), reps, same_as),
                     on=timed(lambda name=name: ipyrpyc.pull(ipy, name, compress=True, progress=False), reps, same_as))
        ipy.execute("del R, Z")

        # -- latency --------------------------------------------------------------------------
        k = m["latency"] // 8
        proxy = DelayProxy(("127.0.0.1", server.port), DELAY)
        stack.callback(proxy.stop)
        raw_proxy = DelayProxy(("127.0.0.1", raw.port), DELAY)
        stack.callback(raw_proxy.stop)
        slow = ipyrpyc.connect(f"127.0.0.1:{proxy.port}", timeout=PLAIN_TIMEOUT)
        stack.callback(slow.close)
        slow_plain = rpyc_connect(proxy.port)
        stack.callback(close_plain, slow_plain)
        slow.execute(f"import numpy as np\nL = np.random.default_rng(0).random({k})")
        slow_plain.execute(f"import numpy as np\nL = np.random.default_rng(0).random({k})")
        lref = np.random.default_rng(0).random(k)
        self.log(f"{k * 8 / MB:.0f} MB through {DELAY * 1e3:.0f} ms per direction ...")
        self.row("latency_pull", f"pull {k * 8 / MB:.0f} MB, {DELAY * 1e3:.0f} ms per direction", k * 8,
                 raw=timed(lambda: raw.pull(k * 8, raw_proxy.port)[0], reps, lambda t: True),
                 plain=timed(lambda: rpyc_obtain(slow_plain.namespace["L"]), 1, lambda x: np.array_equal(x, lref)),
                 ipyrpyc=timed(lambda: ipyrpyc.pull(slow, "L", progress=False), reps,
                               lambda x: np.array_equal(x, lref)))

    def targets(self) -> List[Dict[str, Any]]:
        rows = {r["key"]: r["sides"] for r in self.rows}
        out = []

        def target(what: str, value: Optional[float], goal: float, higher: bool = True, unit: str = "") -> None:
            passed = None if value is None else (value >= goal if higher else value <= goal)
            out.append({"target": what, "value": value, "goal": goal, "unit": unit, "pass": passed})

        for key, what in (("array_pull", "array pull"), ("array_push", "array push")):
            s = rows.get(key, {})
            target(f"{what} MB/s", s.get("ipyrpyc", {}).get("MB_s"), 1000, unit="MB/s")
            target(f"{what} vs plain rpyc", _ratio(s.get("ipyrpyc"), s.get("plain")), 20, unit="x")
        for key, what in (("file_get", "file get"), ("file_put", "file put")):
            got = rows.get(key, {}).get("ipyrpyc", {}).get("MB_s")
            target(f"{what} MB/s (sha256 included)", got, 500, unit="MB/s")
        lat = rows.get("latency_pull", {})
        target("20 ms pull: time vs raw socket", _ratio(lat.get("raw"), lat.get("ipyrpyc")), 2.0, higher=False,
               unit="x")
        df = rows.get("dataframe_pull", {})
        target("DataFrame pull vs obtain", _ratio(df.get("ipyrpyc"), df.get("plain")), 10, unit="x")
        return out


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- plain rpyc -----------------------------------------------------------------------------------
def rpyc_connect(port: int) -> Any:
    import rpyc

    conn = rpyc.classic.connect("127.0.0.1", port)
    conn._config["sync_request_timeout"] = PLAIN_TIMEOUT
    return conn


def close_plain(conn: Any) -> None:
    """Close without waiting minutes for a server still busy with a copy."""
    conn._config["sync_request_timeout"] = 1
    with contextlib.suppress(Exception):
        conn.close()


def rpyc_obtain(netref: Any) -> Any:
    import rpyc.utils.classic

    return rpyc.utils.classic.obtain(netref)


def rpyc_deliver(conn: Any, value: Any) -> Any:
    import rpyc.utils.classic

    conn.namespace["B"] = rpyc.utils.classic.deliver(conn, value)


def rpyc_download(conn: Any, remote: str, local: str) -> None:
    import rpyc.utils.classic

    rpyc.utils.classic.download(conn, remote, local)


def rpyc_upload(conn: Any, local: str, remote: str) -> None:
    import rpyc.utils.classic

    rpyc.utils.classic.upload(conn, local, remote)


# -- report -------------------------------------------------------------------------------------
def report(result: Dict[str, Any]) -> str:
    lines = [f"ipyrpyc transfer benchmark ({result['meta']['mode']} mode), {result['meta']['platform']}, "
             f"{result['meta']['cpus']} CPUs; MB = 10^6 bytes; best of {result['meta']['reps']} "
             f"(plain rpyc: 1 run, on part of the data where its time grows faster than the size)", ""]
    header = ("copy", "raw socket", "plain rpyc", "ipyrpyc", "ipyrpyc / plain")
    table = [header]
    for row in result["rows"]:
        s = row["sides"]
        if "off" in s:
            continue
        cells = [row["label"]]
        for side in ("raw", "plain", "ipyrpyc"):
            e = s.get(side)
            part = f" on {e['measured_bytes'] / MB:,.0f} MB" if e and "measured_bytes" in e else ""
            cells.append(f"{e['MB_s']:,.0f} MB/s ({e['best_s']:.2f} s{part})" + ("" if e["ok"] else " WRONG")
                         if e else "-")
        ratio = _ratio(s.get("ipyrpyc"), s.get("plain"))
        cells.append(f"{ratio:,.0f}x" if ratio else "-")
        table.append(tuple(cells))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for row in result["rows"]:
        s = row["sides"]
        if "off" in s:
            lines.append(f"{row['label']}: {s['off']['MB_s']:,.0f} / {s['on']['MB_s']:,.0f} MB/s")
    lines.append("")
    for m in result["memory"]:
        lines.append(f"peak memory beyond the result, {m['label']}: here {m['client_extra_bytes'] / MB:,.0f} MB, "
                     f"server {m['server_extra_bytes'] / MB:,.0f} MB (result {m['result_bytes'] / MB:,.0f} MB)")
    lines.append("")
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:,.2f}{t['unit']}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        sign = ">=" if "vs raw" not in t["target"] else "<="
        lines.append(f"{verdict}  {t['target']}: {value} (target {sign} {t['goal']:,g}{t['unit']})")
    wrong = [r["key"] for r in result["rows"] for e in r["sides"].values() if not e["ok"]]
    if wrong:
        lines.append(f"WRONG VALUES: {', '.join(wrong)}")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (CI)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--silent", action="store_true", help="no progress on stderr")
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the ExitStack
    started = time.monotonic()
    bench = Bench(args)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ipyrpyc-transfer-"))
        try:
            bench.run(stack, tmp)
        except Exception:
            import traceback

            traceback.print_exc()
            print("benchmark failed (see above)", file=sys.stderr)
            return 2
    result = {
        "meta": {"mode": "quick" if args.quick else "full", "duration_s": time.monotonic() - started,
                 "cpus": os.cpu_count(), "platform": platform.platform(), "reps": bench.mode["reps"],
                 "python": platform.python_version()},
        "rows": bench.rows, "memory": bench.memory, "targets": bench.targets(),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(report(result), flush=True)
    if any(not e["ok"] for r in bench.rows for e in r["sides"].values()):
        return 1
    if args.check and any(t["pass"] is False for t in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
