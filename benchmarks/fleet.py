"""Many servers at once: an ipyrpyc group against the same work in a plain loop over rpyc connections.

Run from the repository root:

    .venv/bin/python -m benchmarks.fleet                            # full: 32 servers (about 2 minutes)
    .venv/bin/python -m benchmarks.fleet --quick --json out.json    # 4 servers, CI (< 60 s)

N stock ``rpyc_classic`` servers on 127.0.0.1 (free ports), each behind its own
``ipyrpyc.proxy.DelayProxy`` that counts rpyc frames and adds the row's delay per direction;
two real kernels (``tests.support.kernels``): kernel "python3" with a list of
``rpyc.classic.connect`` connections driven by a for loop, and kernel "ipyrpyc" with a group.

- connect (0 ms, and 20 ms per direction): plain ``[rpyc.classic.connect(...)]`` binding ``sys``
  and ``os`` of each, one after the other; ipyrpyc ``%rpyc_connect P1 … PN --group lab``.
  Requests are counted per member by its proxy, and rpyc's own handshake is measured alone for
  reference.  Then one connection binding ``sys`` and ``os``: ``%rpyc_connect`` against
  ``rpyc.classic.connect`` + ``conn.modules.sys``, ``conn.modules.os``.
- sleep (0 ms): a cell that sleeps 1 s (0.2 s in quick mode) on every server: plain
  ``for c in conns: c.execute(...)``; ipyrpyc ``%%rpyc lab``.
- small cell (20 ms): ``6 * 7`` on 16 members (4 in quick mode): plain
  ``[c.eval("6 * 7") for c in conns[:16]]``; ipyrpyc ``%%rpyc lab1,…,lab16``; and the same on
  one member alone, for the ratio the target is about.

Times are from sending the cell to the kernel until it is idle; medians in ms.  Counts are exact
(``tests/test_fleet_quick.py`` asserts them); times depend on the machine and are only printed,
with PASS/FAIL against the issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import rpyc
from rpyc.core.service import ClassicClient

from benchmarks.run import BenchError, evaluate, execute, setup, start_kernel, summarize_frames, versions
from ipyrpyc.proxy import DelayProxy
from tests.support.kernels import Kernel
from tests.support.processes import StockServer

PLAIN, IPY = "plain", "ipyrpyc"


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = 4 if args.quick else args.servers
        self.small = min(self.n, 4 if args.quick else 16)
        self.sleep = 0.2 if args.quick else 1.0
        self.reps = 1 if args.quick else 3
        self.servers: List[StockServer] = []
        self.proxies: List[DelayProxy] = []
        self.kernels: Dict[str, Kernel] = {}
        self.rows: Dict[str, Dict[str, Any]] = {}

    def log(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    # -- set-up -----------------------------------------------------------------------------------
    def start(self, stack: contextlib.ExitStack) -> None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ipyrpyc-fleet-"))
        ipython_dir = os.path.join(tmp, "ipython")
        os.makedirs(ipython_dir)
        t = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(StockServer, startup_timeout=60) for _ in range(self.n)]
            for f in futures:
                try:
                    server = f.result()
                except RuntimeError as e:
                    raise BenchError(str(e)) from None
                self.servers.append(server)
                stack.callback(server.stop)
        for server in self.servers:
            proxy = DelayProxy(("127.0.0.1", server.port))
            stack.callback(proxy.stop)
            self.proxies.append(proxy)
        self.log(f"{self.n} servers and proxies up in {time.monotonic() - t:.1f} s")
        for side, name in ((PLAIN, "python3"), (IPY, "ipyrpyc")):
            k = start_kernel(name, ipython_dir, tmp)
            stack.callback(k.shutdown, check=False)
            self.kernels[side] = k
        if evaluate(self.kernels[IPY], "'rpyc_connect' in get_ipython().magics_manager.magics['line']") != "True":
            raise BenchError("the ipyrpyc kernel did not load the extension:\n" + self.kernels[IPY].log_tail())
        ports = [p.port for p in self.proxies]
        setup(self.kernels[PLAIN], f"import rpyc\nports = {ports!r}\nconns = []")

    def set_delay(self, ms: float) -> None:
        for p in self.proxies:
            p.delay = ms / 1000.0

    def counted(self, side: str, code: str, proxies: Optional[List[DelayProxy]] = None) -> Dict[str, Any]:
        """Run ``code`` in one kernel; its wall time and the requests each member's proxy saw."""
        proxies = self.proxies if proxies is None else proxies
        for p in self.proxies:
            p.quiesce(timeout=5)
            p.take()
        r = execute(self.kernels[side], code, timeout=600)
        if r.status != "ok":
            raise BenchError(f"{side}: {code[:80]!r} failed: {r.ename}: {r.evalue}\n{r.stderr}")
        for p in proxies:
            p.quiesce(timeout=5)
        counts = [summarize_frames([f for f in p.take() if f.handler != "close"]) for p in proxies]
        return {"wall": r.wall, "requests": [c["c2s_requests"] for c in counts], "del": [c["c2s_del"] for c in counts]}

    # -- rows ---------------------------------------------------------------------------------------
    def row(self, key: str, label: str) -> Dict[str, Any]:
        row = self.rows[key] = {"key": key, "label": label, PLAIN: [], IPY: []}
        return row

    def handshake(self) -> int:
        """Requests of rpyc's own classic handshake (ClassicClient), counted by a proxy."""
        proxy = self.proxies[0]
        proxy.quiesce(timeout=5)
        proxy.take()
        conn = rpyc.connect("127.0.0.1", proxy.port, service=ClassicClient)
        conn.close()
        proxy.quiesce(timeout=5)
        return summarize_frames([f for f in proxy.take() if f.handler != "close"])["c2s_requests"]

    def connect_row(self, delay_ms: float = 0.0) -> None:
        """Connect the group (plain: the loop); at 20 ms once, then it is left closed."""
        key = "connect" if not delay_ms else "connect_20"
        at = f", {delay_ms:g} ms per direction" if delay_ms else ""
        row = self.row(key, f"connect {self.n} servers (+ sys, os on each, plain){at}")
        addresses = " ".join(f"127.0.0.1:{p.port}" for p in self.proxies)
        plain = ("for port in ports:\n    c = rpyc.classic.connect('127.0.0.1', port)\n"
                 "    c.modules.sys, c.modules.os\n    conns.append(c)")
        self.set_delay(delay_ms)
        for rep in range(1 if delay_ms else self.reps):
            if rep or delay_ms:
                setup(self.kernels[PLAIN], "for c in conns:\n    c.close()\nconns = []")
                setup(self.kernels[IPY], "%rpyc_disconnect --all")
            row[PLAIN].append(self.counted(PLAIN, plain))
            row[IPY].append(self.counted(IPY, f"%rpyc_connect {addresses} --group lab"))
        self.set_delay(0)

    def connect_slow_row(self) -> None:
        self.connect_row(20.0)

    def connect_one_row(self) -> None:
        """One connection binding the default modules (``rsys``, ``ros``), as ``%rpyc_connect`` does."""
        row = self.row("connect_one", "connect one server and bind sys, os (rsys, ros)")
        port = self.proxies[0].port
        setup(self.kernels[PLAIN], "for c in conns:\n    c.close()\nconns = []")
        setup(self.kernels[IPY], "%rpyc_disconnect --all")
        for rep in range(self.reps):
            if rep:
                setup(self.kernels[PLAIN], "conn.close()")
                setup(self.kernels[IPY], "%rpyc_disconnect conn")
            row[PLAIN].append(self.counted(PLAIN, f"conn = rpyc.classic.connect('127.0.0.1', {port})\n"
                                                  "rsys, ros = conn.modules.sys, conn.modules.os", self.proxies[:1]))
            row[IPY].append(self.counted(IPY, f"%rpyc_connect 127.0.0.1:{port}", self.proxies[:1]))

    def sleep_row(self) -> None:
        row = self.row("sleep", f"a cell that sleeps {self.sleep:g} s, on {self.n} servers")
        plain = f"for c in conns:\n    c.execute('import time; time.sleep({self.sleep})')"
        row[PLAIN].append(self.counted(PLAIN, plain))
        row[IPY].append(self.counted(IPY, f"%%rpyc lab\nimport time\ntime.sleep({self.sleep})"))

    def small_row(self) -> None:
        self.set_delay(20)
        n = self.small
        row = self.row("small", f"6 * 7 on {n} members, 20 ms per direction")
        one = self.row("small_one", "6 * 7 on one member, 20 ms per direction")
        members = ",".join(f"lab{i}" for i in range(1, n + 1))
        for _ in range(self.reps + 2):
            row[PLAIN].append(self.counted(PLAIN, f"[c.eval('6 * 7') for c in conns[:{n}]]", self.proxies[:n]))
            row[IPY].append(self.counted(IPY, f"%%rpyc {members}\n6 * 7", self.proxies[:n]))
            one[PLAIN].append(self.counted(PLAIN, "conns[0].eval('6 * 7')", self.proxies[:1]))
            one[IPY].append(self.counted(IPY, "%%rpyc lab1\n6 * 7", self.proxies[:1]))
        self.set_delay(0)

    # -- results --------------------------------------------------------------------------------------
    def summary(self) -> Dict[str, Any]:
        out = {}
        for key, row in self.rows.items():
            entry: Dict[str, Any] = {"label": row["label"]}
            for side in (PLAIN, IPY):
                walls = [m["wall"] * 1000 for m in row[side]]
                per_member = sorted({r for m in row[side] for r in m["requests"]})
                dels = sorted({d for m in row[side] for d in m["del"]})
                entry[side] = {"median_ms": statistics.median(walls), "samples_ms": [round(w, 1) for w in walls],
                               "requests_per_member": per_member, "del_per_member": dels}
            out[key] = entry
        return out

    def targets(self, rows: Dict[str, Any], handshake: int) -> List[Dict[str, Any]]:
        full = not self.args.quick and self.n >= 32
        ipy = {k: v[IPY] for k, v in rows.items()}
        out = [
            {"name": "connecting a member costs the handshake + at most 2 requests, no del",
             "value": f"{ipy['connect']['requests_per_member']} (handshake {handshake})",
             "pass": all(max(ipy[k]["requests_per_member"]) <= handshake + 2 and ipy[k]["del_per_member"] == [0]
                         for k in ("connect", "connect_20", "connect_one"))},
            {"name": "one request per member for a cell", "value": str(ipy["small"]["requests_per_member"]),
             "pass": ipy["small"]["requests_per_member"] == [1] and ipy["sleep"]["requests_per_member"] == [1]},
            {"name": f"connecting a group of {self.n} <= 2 s", "value": f"{ipy['connect']['median_ms']:.0f} ms",
             "pass": ipy["connect"]["median_ms"] <= 2000 if full else None},
            {"name": f"a 1-s cell on {self.n} servers <= 1.5 s", "value": f"{ipy['sleep']['median_ms']:.0f} ms",
             "pass": ipy["sleep"]["median_ms"] <= 1500 if full else None},
            {"name": f"a small cell on {self.small} members at 20 ms <= 3x one member",
             "value": f"{ipy['small']['median_ms'] / ipy['small_one']['median_ms']:.2f}x",
             "pass": ipy["small"]["median_ms"] <= 3 * ipy["small_one"]["median_ms"] if full else None},
        ]
        return out


def report(result: Dict[str, Any]) -> str:
    rows = result["rows"]
    head = ("action", "plain req/member", "ipyrpyc req/member", "plain ms", "ipyrpyc ms", "speed-up")
    lines = [head]
    for row in rows.values():
        p, i = row[PLAIN], row[IPY]

        def req(side: Dict[str, Any]) -> str:
            text = "/".join(str(x) for x in side["requests_per_member"])
            dels = [d for d in side["del_per_member"] if d]
            return text + (f" + {'/'.join(map(str, dels))} del" if dels else "")

        lines.append((row["label"], req(p), req(i), f"{p['median_ms']:.0f}", f"{i['median_ms']:.0f}",
                      f"{p['median_ms'] / i['median_ms']:.1f}x"))
    widths = [max(len(r[c]) for r in lines) for c in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append(f"\nrpyc's classic handshake alone: {result['handshake']} requests")
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "(full mode only)"}[t["pass"]]
        out.append(f"{verdict:>16}  {t['name']}: {t['value']}")
    out.append(f"\nTotal run time: {result['meta']['duration_s']:.1f} s")
    return "\n".join(out)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 servers, one repetition (CI, < 60 s)")
    ap.add_argument("--servers", type=int, default=32, help="servers in full mode (default 32)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--silent", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    if not 1 <= args.servers <= 200:
        ap.error("--servers: from 1 to 200")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the ExitStack below
    started = time.monotonic()
    fleet = Fleet(args)
    with contextlib.ExitStack() as stack:
        try:
            fleet.start(stack)
            handshake = fleet.handshake()
            steps = (fleet.connect_row, fleet.sleep_row, fleet.small_row, fleet.connect_slow_row, fleet.connect_one_row)
            for step in steps:
                t = time.monotonic()
                step()
                fleet.log(f"   {step.__name__:<12} {time.monotonic() - t:6.1f} s")
        except BenchError as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 2
        except Exception:
            import traceback

            traceback.print_exc()
            print("benchmark failed (see above)", file=sys.stderr)
            return 2
    rows = fleet.summary()
    result = {
        "meta": {"mode": "quick" if args.quick else "full", "servers": fleet.n, "small": fleet.small,
                 "duration_s": time.monotonic() - started, "cpus": os.cpu_count(), "platform": platform.platform(),
                 "versions": versions()},
        "handshake": handshake,
        "rows": rows,
        "targets": fleet.targets(rows, handshake),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(report(result), flush=True)
    if args.check and any(t["pass"] is False for t in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
