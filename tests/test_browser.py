"""Notebook 01 in JupyterLab, driven in a real Chromium: what a person sees.

JupyterLab (from this environment) serves a temporary copy of ``notebooks/`` with its
outputs removed, on 127.0.0.1, a free port and a token.  Playwright drives Debian's
``chromium``: it opens notebook 01, runs every cell with Run > Run All Cells, and checks
the page: netrefs displayed as the tutorial shows them, the tutorial's error with its
remote and local sections in colour and without rpyc's frames, and the completion popup
listing the server's attributes after ``rsys.pa`` + Tab.  Screenshots go to
``screenshots/`` (git-ignored).  JupyterLab, its kernel, the embedded server and the
browser are stopped at the end, and the test checks that they are gone.
"""

from __future__ import annotations

import contextlib
import json
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

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "screenshots"
NOTEBOOK = "01-netrefs-and-exceptions.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KERNEL_IDLE = "Python 3 (ipyrpyc) | Idle"  # the status bar once the notebook's kernel is ready
WAIT_MS = 60_000  # longest wait for any one thing to appear in the page


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 with a token, serving a copy of the notebooks, isolated settings."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "notebooks"
        shutil.copytree(ROOT / "notebooks", self.root)
        for path in self.root.glob("*.ipynb"):  # what shows must come from this run
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            nbformat.write(nb, path)
        settings = workdir / "lab-settings" / "@jupyterlab"
        self._setting(settings / "apputils-extension" / "notification", fetchNews="false", checkForUpdates=False)
        self._setting(settings / "notebook-extension" / "tracker", windowingMode="none")  # every cell in the DOM
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(workdir / "config"),
                   JUPYTER_RUNTIME_DIR=str(workdir / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings.parent),
                   JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"), IPYTHONDIR=str(workdir / "ipython"))
        self.log_path = workdir / "jupyterlab.log"
        self.seen: Set[Tuple[int, str]] = set()
        self.code_cells = sum(c.cell_type == "code" for c in nbformat.read(self.root / NOTEBOOK, 4).cells)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                 f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                 "--LabApp.news_url=None", "--LabApp.extension_manager=readonly"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
                start_new_session=True,
            )
        try:
            assert wait_until(self._ready, 60, 0.2), f"JupyterLab did not start:\n{self.log()}"
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _setting(path: Path, **values: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".jupyterlab-settings").write_text(json.dumps(values))

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


def cell_with_source(page: Page, source: str):
    """The code cell whose whole input is ``source`` (one line)."""
    exact = re.compile("^" + re.escape(source) + "$")
    return page.locator(".jp-CodeCell").filter(has=page.locator(".cm-content", has_text=exact))


def all_cells_ran(page: Page) -> bool:
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts)


@pytest.mark.timeout(240)
def test_notebook_01_in_jupyterlab(tmp_path: Path) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium)"
    start = time.monotonic()
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
            try:
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
                expect(page.locator(".jp-Notebook .jp-CodeCell")).to_have_count(lab.code_cells)
                expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()
                lab.note_processes()
                browser_seen |= browser_processes()
                assert browser_seen, "no browser process found"

                # Run > Run All Cells, as a person would
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                assert wait_until(lambda: all_cells_ran(page), 120, 0.25), \
                    page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
                expect(page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE)).to_be_visible()
                lab.note_processes()
                ran = time.monotonic()

                # netrefs as the tutorial shows them
                for source, shown in [("type(conn.modules.sys)", "<netref class 'builtins.module'>"),
                                      ("type(conn.modules.sys.path)", "<netref class 'builtins.list'>"),
                                      ("type(conn.modules.os.path.abspath)", "<netref class 'builtins.function'>"),
                                      ("isinstance(conn.modules.sys.path, list)", "True")]:
                    cell = cell_with_source(page, source)
                    expect(cell.locator(".jp-OutputArea-output")).to_have_text(shown)
                cell_with_source(page, "type(conn.modules.sys)").evaluate("cell => cell.scrollIntoView()")
                page.screenshot(path=str(SCREENSHOTS / "browser-01-netrefs.png"))

                # the tutorial's error: both sections, coloured, no rpyc frames
                error_cell = cell_with_source(page, "conn.modules.sys.path[300]")
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

                # completion from the server: a new cell, "rsys.pa", Tab
                page.locator(".jp-Notebook .jp-Cell").last.click()
                page.keyboard.press("Escape")
                page.keyboard.press("b")  # insert a code cell below, in command mode
                expect(page.locator(".jp-Notebook .jp-CodeCell")).to_have_count(lab.code_cells + 1)
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
                print(f"JupyterLab and notebook ready in {ran - start:.1f} s (run all included), "
                      f"checks and completion {done - ran:.1f} s")
            except BaseException:
                with contextlib.suppress(Exception):  # what was on screen when it failed
                    page.screenshot(path=str(SCREENSHOTS / "browser-01-failure.png"), timeout=10_000)
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
        lab = JupyterLab(tmp_path / "lab")
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
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                copy_cell = cell_with_source(page, f"%rpyc_get slow:{data} {tmp_path / 'copy.bin'}")
                bar = copy_cell.locator(".jp-OutputArea-output .widget-hprogress")
                expect(bar).to_be_visible(timeout=WAIT_MS)  # while it copies (connecting takes ~10 round trips)
                lab.note_processes()
                assert wait_until(lambda: all_cells_ran(page), 120, 0.25)
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
