"""``python -m ipyrpyc demo``: a scripted IPython session against the embedded server;
``python -m ipyrpyc lab``: JupyterLab on the teaching notebooks."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

FIRST_NOTEBOOK = "01-netrefs-and-exceptions.ipynb"
WORKDIR = "lab-notebooks"  # in the repository, git-ignored
SETTINGS = ".jupyterlab-settings"  # in the working folder: JupyterLab's user settings for the demo
# JupyterLab's settings for the demo: no "get notified about official Jupyter news?" pop-up, no update check
LAB_SETTINGS = {("apputils-extension", "notification"): {"fetchNews": "false", "checkForUpdates": False}}


def prepare(notebooks: Path, workdir: Path) -> List[str]:
    """Copy the notebooks ``workdir`` does not have yet (a copy there is the reader's: it is
    never overwritten) and write the demo's JupyterLab settings.  Returns the names copied."""
    workdir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(notebooks.glob("*.ipynb")):
        target = workdir / source.name
        if not target.exists():
            shutil.copyfile(source, target)
            copied.append(source.name)
    for (extension, plugin), values in LAB_SETTINGS.items():
        path = workdir / SETTINGS / "@jupyterlab" / extension / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=1) + "\n")
    return copied


def lab(argv: Sequence[str] = ()) -> int:
    """JupyterLab on 127.0.0.1 (with a token) on copies of ``notebooks/``, at the tutorial notebook.

    The copies live in a working folder (``--workdir PATH``, default ``lab-notebooks/`` in the
    repository, which git ignores), so running the notebooks never changes the repository.
    Other arguments go to JupyterLab (e.g. ``--no-browser``, ``--ServerApp.port=8899``).
    """
    argv = list(argv)
    workdir = Path.cwd() / WORKDIR
    if "--workdir" in argv:
        i = argv.index("--workdir")
        if i + 1 >= len(argv):
            print("--workdir needs a folder", file=sys.stderr)
            return 2
        workdir = Path(argv[i + 1]).resolve()
        del argv[i:i + 2]
    notebooks = Path.cwd() / "notebooks"
    if not (notebooks / FIRST_NOTEBOOK).is_file():
        print("run this from the ipyrpyc repository: no notebooks/ folder here", file=sys.stderr)
        return 2
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print("JupyterLab is missing: pip install 'ipyrpyc[notebooks]'", file=sys.stderr)
        return 2
    try:
        copied = prepare(notebooks, workdir)
    except OSError as e:
        print(f"cannot prepare the working folder {workdir}: {e}", file=sys.stderr)
        return 2
    kept = "" if copied else " (your copies from an earlier run; delete one to get a fresh copy)"
    print(f"Working folder: {workdir}{kept}; the repository's notebooks/ stay as they are", flush=True)
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={workdir}",
           "--LabApp.news_url=None", str(workdir / FIRST_NOTEBOOK)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines often run as root
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        cmd.append("--no-browser")  # headless: open the printed http://127.0.0.1:…?token=… link yourself
    cmd += argv
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(workdir / SETTINGS))
    os.chdir(workdir)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


CELLS: List[str] = [
    "%load_ext ipyrpyc",
    "%rpyc_connect",
    "type(rsys.path)",
    "isinstance(rsys.path, list)",
    "rsys.path[0]",
    "%%rpyc_trace\nlen(rsys.path), rsys.path[0]   # every request a cell sends, in plain words",
    "import os\nros.getpid() != os.getpid()   # rsys and ros live in another process",
    "%rpyc_connections",
    # The trust boundary: server-side code tries to import os in this kernel through its connection.
    "conn.execute('def reach_back(c):\\n    return c.root.getmodule(\"os\").getpid()')\n"
    "try:\n"
    "    conn.namespace['reach_back'](conn.root.getconn())\n"
    "    print('the server reached into this process!')\n"
    "except Exception as e:\n"
    "    print('the server could not reach back:', type(e).__name__)",
    "%rpyc_connect --name bad 127.0.0.1:9",
    "%rpyc_disconnect",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo cells in a terminal-style shell, echoing each one."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    failed = 0
    for number, cell in enumerate(CELLS, 1):
        lines = cell.splitlines()
        print(f"\nIn [{number}]: {lines[0]}")
        for line in lines[1:]:
            print(f"   ...: {line}")
        sys.stdout.flush()
        result = shell.run_cell(cell, store_history=True)
        sys.stdout.flush()
        sys.stderr.flush()
        if result.error_in_exec is not None and "bad" not in cell:
            failed += 1
    shell.run_line_magic("unload_ext", "ipyrpyc")
    return 1 if failed else 0
