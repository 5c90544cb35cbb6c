"""The many-servers benchmark (``python -m benchmarks.fleet``) runs in quick mode; its exact counts hold.

Counts are exact, so they are asserted: connecting a member of a group costs rpyc's classic
handshake plus two requests (modules' classes and live output included) and no ``del``, plain
``rpyc.classic.connect`` binding ``sys`` and ``os`` costs the handshake plus four, and a cell costs
one request per member on both sides.  Times are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.newest_only  # slow, and no version branch of its own

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(200)
def test_quick_fleet_counts(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet", "--quick", "--json", str(out), "--silent"],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benchmark stops its kernels, proxies and servers on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"python -m benchmarks.fleet --quick took more than 150 s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    print(stdout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-5000:]}"
    result = json.loads(out.read_text())
    assert result["meta"]["mode"] == "quick" and result["meta"]["servers"] == 4
    handshake = result["handshake"]
    assert handshake == 10  # rpyc 6's ClassicClient: getroot, inspects, getmodule calls, eval/execute/namespace
    rows = result["rows"]
    for key in ("connect", "connect_20", "connect_one"):
        assert rows[key]["ipyrpyc"]["requests_per_member"] == [handshake + 2], rows[key]
        assert rows[key]["ipyrpyc"]["del_per_member"] == [0], rows[key]
        assert rows[key]["plain"]["requests_per_member"] == [handshake + 4], rows[key]
    for key in ("sleep", "small", "small_one"):
        for side in ("plain", "ipyrpyc"):
            assert rows[key][side]["requests_per_member"] == [1], (key, side, rows[key])
    assert [t["pass"] for t in result["targets"][:2]] == [True, True], result["targets"]
