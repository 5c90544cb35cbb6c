"""Copies in a real kernel: Ctrl-C mid-transfer and the progress widget.

An interrupt (the kernel's SIGINT, as the notebook's stop button sends it) in the middle of
``%rpyc_get``, ``%rpyc_put`` and ``%%rpyc --pull``: the cell ends with KeyboardInterrupt
within a second or so, no partial file is left on either side, no name is bound, and the
connection answers the next call at once.  A copy that lasts more than a second shows
tqdm's widget (ipywidgets is installed with the notebooks extra); a quick one shows nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipyrpyc.proxy import DelayProxy
from ipyrpyc.remote.bulk import TEMP_MARK
from tests.support.kernels import Kernel, ok, run, value
from tests.support.processes import StockServer

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def lab_kernel(kernel: Kernel, tmp_path: Path):
    """The kernel connected (as ``lab``) to its embedded server, with a sparse 2 GB file there."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # reads as zeros, copies like any data
    ok(kernel, "%rpyc_connect --name lab")
    yield kernel, tmp_path, big
    ok(kernel, "%rpyc_disconnect --all")


def partial_files(*roots: Path) -> list:
    return [str(p) for root in roots for p in root.rglob("*") if TEMP_MARK in p.name]


def answers_at_once(kernel: Kernel) -> None:
    res = ok(kernel, "rsys.platform")
    assert res.elapsed < 2.0, res
    assert "linux" in res.result


def test_interrupting_a_file_copy_leaves_nothing_and_the_connection_answers(lab_kernel):
    kernel, tmp_path, big = lab_kernel
    here = tmp_path / "here"
    here.mkdir()

    def mid_copy(res) -> bool:  # a partial file exists: the copy is under way
        return any(p.stat().st_size > 0 for p in here.glob(f"*{TEMP_MARK}*"))

    res = run(kernel, f"%rpyc_get lab:{big} {here}", 60, interrupt_after=mid_copy)
    assert res.t_interrupt is not None and res.ename == "KeyboardInterrupt", res
    assert res.since_interrupt < 1.5, res.since_interrupt
    assert list(here.iterdir()) == [], list(here.iterdir())
    answers_at_once(kernel)

    there = tmp_path / "there"
    there.mkdir()
    res = run(kernel, f"%rpyc_put {big} lab:{there}", 60,
              interrupt_after=lambda r: any(p.stat().st_size > 0 for p in there.glob(f"*{TEMP_MARK}*")))
    assert res.t_interrupt is not None and res.ename == "KeyboardInterrupt", res
    assert res.since_interrupt < 1.5, res.since_interrupt
    answers_at_once(kernel)
    assert list(there.iterdir()) == [] and partial_files(tmp_path) == []


def test_interrupting_a_pull_binds_nothing_and_the_connection_answers(lab_kernel):
    kernel, _, _ = lab_kernel
    ok(kernel, "%%rpyc lab\nimport numpy as np\nA = np.zeros(2 * 2**30 // 8)")
    res = run(kernel, "%%rpyc lab --pull A\nA.shape", 60, interrupt_after=0.5)
    assert res.t_interrupt is not None and res.ename == "KeyboardInterrupt", res
    assert res.since_interrupt < 1.5, res.since_interrupt
    assert value(kernel, "'A' in globals()") is False
    answers_at_once(kernel)
    ok(kernel, "%%rpyc lab\nB = A[:1000].copy()\ndel A")
    assert value(kernel, "%%rpyc lab --pull B\nB.shape") == (1000,)


def test_a_slow_copy_shows_the_progress_widget_and_a_quick_one_does_not(kernel, tmp_path):
    server = StockServer()
    proxy = DelayProxy(("127.0.0.1", server.port), delay=0.3)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(24 << 20))
    try:
        ok(kernel, f"%rpyc_connect 127.0.0.1:{proxy.port} --name slow")
        res = ok(kernel, f"%rpyc_get slow:{data} {tmp_path / 'a.bin'}", timeout=120)
        widgets = [r for r in res.results if WIDGET in r]
        assert len(widgets) == 1, res
        assert "data.bin" in widgets[0]["text/plain"] or "HBox" in widgets[0]["text/plain"], widgets
        assert res.elapsed > 1.0
        proxy.delay = 0.0
        res = ok(kernel, f"%rpyc_get slow:{data} {tmp_path / 'b.bin'}")
        assert not [r for r in res.results if WIDGET in r], res
        ok(kernel, "%rpyc_disconnect --all")
    finally:
        proxy.stop()
        server.stop()
