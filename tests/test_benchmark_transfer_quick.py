"""The transfer benchmark (``python -m benchmarks.transfer``) runs in quick mode: every row is
measured and every copy arrives intact.  Speeds are printed (``pytest -s``), never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.newest_only  # slow, and no version branch of its own

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"array_pull", "array_push", "dataframe_pull", "file_get", "file_put", "compress_R", "compress_Z",
        "latency_pull"}


@pytest.mark.timeout(300)
def test_quick_transfer_benchmark_measures_every_row_with_correct_copies(tmp_path):
    out = tmp_path / "transfer.json"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.transfer", "--quick", "--json", str(out), "--silent"],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benchmark stops its server, peer and proxies on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"the quick transfer benchmark took more than 240 s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    print(stdout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-5000:]}"
    result = json.loads(out.read_text())
    assert result["meta"]["mode"] == "quick"
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == ROWS
    for key, row in rows.items():
        assert row["sides"], key
        for side, entry in row["sides"].items():
            assert entry["ok"] and entry["best_s"] > 0 and entry["MB_s"] > 0, (key, side, entry)
    for key in ("array_pull", "array_push", "file_get", "file_put", "latency_pull"):
        assert {"raw", "plain", "ipyrpyc"} <= set(rows[key]["sides"]), key
    assert {m["key"] for m in result["memory"]} == {"array_pull", "array_push", "dataframe_pull"}
    assert {t["target"] for t in result["targets"]} >= {"array pull MB/s", "20 ms pull: time vs raw socket"}
    assert "PASS" in stdout or "FAIL" in stdout  # the verdicts are printed, whatever the machine
