"""Notebooks 01 and 05 in JupyterLab, driven in a real Chromium: what a person sees.

JupyterLab is started the way a person starts the demo, ``python -m ipyrpyc lab``, with a
temporary working folder holding copies of ``notebooks/`` whose outputs were removed, on
127.0.0.1, a free port and a token.  Playwright drives Debian's ``chromium``: it opens
notebook 01, runs every cell with Run > Run All Cells, and checks the page: netrefs
displayed as the tutorial shows them, the tutorial's error with its remote and local
sections in colour and without rpyc's frames, a trace table, and the completion popup
listing the server's attributes after ``rsys.pa`` + Tab; then notebook 05, run the same
way: the slow loop's trace with its hot spot, and the three ways timed side by side.
No news pop-up may show, and the repository's notebooks must be as they were.
Screenshots go to ``screenshots/`` (git-ignored).  JupyterLab, its kernels, the servers
and the browser are stopped at the end, and the test checks that they are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Set, Tuple

import nbformat
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support.processes import alive, descendants, free_port, wait_until

pytestmark = pytest.mark.newest_only  # slow, and no version branch of its own

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "screenshots"
NOTEBOOK = "01-netrefs-and-exceptions.ipynb"
SLOW = "05-why-is-my-cell-slow.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KERNEL_IDLE = "Python 3 (ipyrpyc) | Idle"  # the status bar once the notebook's kernel is ready
WAIT_MS = 60_000  # longest wait for any one thing to appear in the page


class JupyterLab:
    """``python -m ipyrpyc lab`` on 127.0.0.1 with a token, on a working folder of output-free copies."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "lab-notebooks"
        self.root.mkdir()
        for path in (ROOT / "notebooks").glob("*.ipynb"):  # what shows must come from this run
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            nbformat.write(nb, self.root / path.name)  # the demo keeps copies it finds in its folder
        tracker = self.root / ".jupyterlab-settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')  # every cell in the DOM
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(workdir / "config"),
                   JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
                   JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"), IPYTHONDIR=str(workdir / "ipython"))
        env.pop("JUPYTERLAB_SETTINGS_DIR", None)  # the demo's own, in its working folder
        self.log_path = workdir / "jupyterlab.log"
        self.seen: Set[Tuple[int, str]] = set()
        self.code_cells = {name: sum(c.cell_type == "code" for c in nbformat.read(self.root / name, 4).cells)
                           for name in (NOTEBOOK, SLOW)}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipyrpyc", "lab", "--workdir", str(self.root), "--no-browser",
                 f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                 f"--IdentityProvider.token={self.token}", "--LabApp.extension_manager=readonly"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True,
            )
        try:
            assert wait_until(self._ready, 60, 0.2), f"JupyterLab did not start:\n{self.log()}"
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"JupyterLab exited:\n{self.log()}"
        try:
            with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def note_processes(self) -> None:
        """Remember JupyterLab's processes (kernels, the servers they started) to check they end."""
        self.seen |= descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.note_processes()
            request = urllib.request.Request(f"{self.url}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {self.token}"})
            try:
                urllib.request.urlopen(request, timeout=10).close()
                self.proc.wait(30)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        left = [p for p in self.seen if alive(p)] if not wait_until(
            lambda: not any(alive(p) for p in self.seen), 15) else []
        for pid, _ in left:  # started by this JupyterLab: ours to stop
            os.kill(pid, 9)
        assert self.proc.poll() is not None, "JupyterLab is still running"
        assert not left, f"processes outlived JupyterLab: {left}"


def current_notebook(page: Page):
    """The notebook on screen (the others stay in the page, hidden)."""
    return page.locator(".jp-NotebookPanel:visible")


def cell_with_source(root, source: str):
    """The code cell whose whole input is ``source`` (one line)."""
    exact = re.compile("^" + re.escape(source) + "$")
    return root.locator(".jp-CodeCell").filter(has=root.page.locator(".cm-content", has_text=exact))


def cell_starting(root, first_line: str):
    """The code cell whose input starts with the line ``first_line`` and has more lines."""
    return root.locator(".jp-CodeCell").filter(
        has=root.page.locator(".cm-content .cm-line", has_text=re.compile("^" + re.escape(first_line) + "$")))


def all_cells_ran(root) -> bool:
    prompts = root.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts)


def run_all(page: Page, root, timeout: float) -> None:
    """Run > Run All Cells, as a person would, and wait until every cell has run."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    assert wait_until(lambda: all_cells_ran(root), timeout, 0.25), \
        root.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()


def repository_notebooks() -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.timeout(420)
def test_notebooks_01_and_05_in_jupyterlab_started_by_the_demo(tmp_path: Path) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium)"
    start = time.monotonic()
    stored = repository_notebooks()
    lab = JupyterLab(tmp_path)
    before = descendants(os.getpid())

    def browser_processes() -> Set[Tuple[int, str]]:
        """What Playwright started under this process: its driver and Chromium."""
        return {p for p in descendants(os.getpid()) - before - descendants(lab.proc.pid) if p[0] != lab.proc.pid}

    browser_seen: Set[Tuple[int, str]] = set()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)  # expect() has its own default (5 s), not the page's
            try:
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
                nb = current_notebook(page)
                expect(nb.locator(".jp-CodeCell")).to_have_count(lab.code_cells[NOTEBOOK])
                expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()
                lab.note_processes()
                browser_seen |= browser_processes()
                assert browser_seen, "no browser process found"

                run_all(page, nb, 120)
                lab.note_processes()
                ran = time.monotonic()

                # netrefs as the tutorial shows them
                for source, shown in [("type(conn.modules.sys)", "<netref class 'builtins.module'>"),
                                      ("type(conn.modules.sys.path)", "<netref class 'builtins.list'>"),
                                      ("type(conn.modules.os.path.abspath)", "<netref class 'builtins.function'>"),
                                      ("isinstance(conn.modules.sys.path, list)", "True")]:
                    cell = cell_with_source(nb, source)
                    expect(cell.locator(".jp-OutputArea-output")).to_have_text(shown)
                cell_with_source(nb, "type(conn.modules.sys)").evaluate("cell => cell.scrollIntoView()")
                page.screenshot(path=str(SCREENSHOTS / "browser-01-netrefs.png"))

                # the tutorial's error: both sections, coloured, no rpyc frames
                error_cell = cell_with_source(nb, "conn.modules.sys.path[300]")
                output = error_cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                expect(output).to_have_count(1)
                text = output.inner_text()
                assert text.index("Remote traceback (embedded server, pid ") < text.index("Local traceback:"), text
                assert "raised by list.__getitem__ on the server" in text, text
                assert "----> 1 conn.modules.sys.path[300]" in text, text
                assert text.rstrip().endswith("IndexError: list index out of range"), text
                assert "rpyc/core" not in text and "site-packages" not in text, text
                headers = output.locator("span.ansi-bold[class*='ansi-red']")
                expect(headers).to_have_count(2)  # "Remote traceback …:" and "Local traceback:", bold red
                expect(headers.nth(0)).to_contain_text("Remote traceback")
                expect(headers.nth(1)).to_contain_text("Local traceback")
                assert output.locator("span.ansi-red-fg").count() >= 2  # IPython's own colours below
                assert output.locator("span.ansi-green-fg").count() >= 1
                error_cell.scroll_into_view_if_needed()
                error_cell.screenshot(path=str(SCREENSHOTS / "browser-01-error-cell.png"))

                # the trace of the tutorial's display: an HTML table of its one request
                trace = cell_starting(nb, "rsys").locator("table.ipyrpyc-trace-requests")
                expect(trace.locator("tbody tr")).to_have_count(1)
                expect(trace.locator("tbody tr td").nth(5)).to_have_text("ipyrpyc display")

                # completion from the server: a new cell, "rsys.pa", Tab
                nb.locator(".jp-Notebook .jp-Cell").last.click()
                page.keyboard.press("Escape")
                page.keyboard.press("b")  # insert a code cell below, in command mode
                expect(nb.locator(".jp-CodeCell")).to_have_count(lab.code_cells[NOTEBOOK] + 1)
                page.keyboard.press("Enter")  # edit mode
                page.keyboard.type("rsys.pa")
                page.keyboard.press("Tab")
                completer = page.locator(".jp-Completer")
                expect(completer).to_be_visible()
                items = completer.locator(".jp-Completer-item")
                expect(items.first).to_be_visible()
                names = [n.strip() for n in completer.locator(".jp-Completer-match").all_inner_texts()]
                assert names == ["path", "path_hooks", "path_importer_cache"], names
                # IPython's own (jedi) completer lists the same names, typed "instance"; these came
                # from ipyrpyc's one-round-trip lookup in the server's dir(), which types them "attribute"
                types = [t.strip() for t in completer.locator(".jp-Completer-typeExtended").all_inner_texts()]
                assert types == ["attribute"] * 3, types
                page.screenshot(path=str(SCREENSHOTS / "browser-01-completion.png"))
                page.keyboard.press("Escape")
                done = time.monotonic()

                # notebook 05: the slow loop, its trace, the ways out
                page.goto(f"{lab.url}/lab/tree/{SLOW}?token={lab.token}")
                nb = current_notebook(page)
                expect(nb.locator(".jp-CodeCell")).to_have_count(lab.code_cells[SLOW])
                expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()
                run_all(page, nb, 180)
                lab.note_processes()
                slow = cell_starting(nb, "%%rpyc_trace").filter(has_text="1,001 ×")
                expect(slow).to_have_count(1)
                hot = slow.locator("ul.ipyrpyc-trace-hot li").first
                expect(hot).to_contain_text("1,001 × next item __next__ on list_iterator (conn):")
                expect(hot).to_contain_text("copy the data once with %%rpyc --pull NAME")
                expect(slow.locator("table.ipyrpyc-trace-requests tbody tr")).to_have_count(40)
                slow.locator("ul.ipyrpyc-trace-hot").scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "browser-05-trace.png"))
                table = cell_starting(nb, "import pandas as pd").locator(".jp-OutputArea-output table")
                expect(table.locator("tbody tr")).to_have_count(3)
                expect(table.locator("tbody tr").nth(0)).to_contain_text("loop over the netref")
                table.scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "browser-05-side-by-side.png"))
                expect(page.get_by_text("official Jupyter news")).to_have_count(0)  # the demo turned it off
                print(f"JupyterLab and notebook 01 ready in {ran - start:.1f} s (run all included), "
                      f"checks and completion {done - ran:.1f} s, notebook 05 {time.monotonic() - done:.1f} s")
            except BaseException:
                with contextlib.suppress(Exception):  # what was on screen when it failed
                    page.screenshot(path=str(SCREENSHOTS / "browser-failure.png"), timeout=10_000)
                raise
            finally:
                browser_seen |= browser_processes()
                browser.close()
    finally:
        try:
            lab.stop()
        finally:
            # Playwright's driver and Chromium were started by this test: they must be gone too
            assert wait_until(lambda: not any(alive(p) for p in browser_seen), 15), \
                [p for p in browser_seen if alive(p)]
    assert repository_notebooks() == stored, "running the demo changed the repository's notebooks"
    assert (lab.root / ".jupyterlab-settings" / "@jupyterlab" / "apputils-extension" /
            "notification.jupyterlab-settings").is_file()


@pytest.mark.timeout(240)
def test_transfer_progress_bar_in_jupyterlab(tmp_path: Path) -> None:
    """A copy slow enough to last a few seconds (a stock server behind a proxy adding 300 ms per
    direction) shows tqdm's progress widget in the notebook: bar, bytes, rate."""
    from ipyrpyc.proxy import DelayProxy
    from tests.support.processes import StockServer

    SCREENSHOTS.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium)"
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(48 << 20))
    server = StockServer()
    proxy = DelayProxy(("127.0.0.1", server.port), delay=0.3)
    lab = None
    try:
        lab = JupyterLab(tmp_path)
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(f"%rpyc_connect 127.0.0.1:{proxy.port} --name slow"),
                          nbformat.v4.new_code_cell(f"%rpyc_get slow:{data} {tmp_path / 'copy.bin'}"),
                          nbformat.v4.new_code_cell("%rpyc_disconnect slow")]
        notebook.metadata["kernelspec"] = {"name": "ipyrpyc", "display_name": "Python 3 (ipyrpyc)",
                                           "language": "python"}
        nbformat.write(notebook, lab.root / "progress.ipynb")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            try:
                page.goto(f"{lab.url}/lab/tree/progress.ipynb?token={lab.token}")
                expect(page.locator(".jp-Notebook .jp-CodeCell")).to_have_count(3)
                expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()
                lab.note_processes()
                notebook = current_notebook(page)
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                copy_cell = cell_with_source(notebook, f"%rpyc_get slow:{data} {tmp_path / 'copy.bin'}")
                bar = copy_cell.locator(".jp-OutputArea-output .widget-hprogress")
                expect(bar).to_be_visible(timeout=WAIT_MS)  # while it copies (connecting takes ~10 round trips)
                lab.note_processes()
                assert wait_until(lambda: all_cells_ran(notebook), 120, 0.25)
                expect(copy_cell.locator(".jp-OutputArea")).to_contain_text("100%", timeout=WAIT_MS)
                shown = copy_cell.locator(".jp-OutputArea").inner_text().replace("\u2007", " ")  # tqdm's spaces
                assert "data.bin: 100%" in shown and "48.0M/48.0M" in shown and "MB/s]" in shown, shown
                assert "Copied slow:" in shown and "sha256 checked" in shown, shown
                copy_cell.screenshot(path=str(SCREENSHOTS / "browser-transfer-progress.png"))
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(SCREENSHOTS / "browser-progress-failure.png"), timeout=10_000)
                raise
            finally:
                browser.close()
        assert (tmp_path / "copy.bin").read_bytes() == data.read_bytes()
    finally:
        try:
            if lab is not None:
                lab.stop()
        finally:
            proxy.stop()
            server.stop()
