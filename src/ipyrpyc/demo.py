"""``python -m ipyrpyc demo``: a scripted IPython session against the embedded server;
``python -m ipyrpyc lab``: JupyterLab on the teaching notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

FIRST_NOTEBOOK = "01-netrefs-and-exceptions.ipynb"


def lab(argv: Sequence[str] = ()) -> int:
    """Open ``notebooks/`` in JupyterLab on 127.0.0.1 (with a token), at the tutorial notebook.

    Extra arguments go to JupyterLab (e.g. ``--no-browser``, ``--ServerApp.port=8899``).
    """
    notebooks = Path.cwd() / "notebooks"
    if not (notebooks / FIRST_NOTEBOOK).is_file():
        print("run this from the ipyrpyc repository: no notebooks/ folder here", file=sys.stderr)
        return 2
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        print("JupyterLab is missing: pip install 'ipyrpyc[notebooks]'", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={notebooks}", str(notebooks / FIRST_NOTEBOOK)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines often run as root
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        cmd.append("--no-browser")  # headless: open the printed http://127.0.0.1:…?token=… link yourself
    cmd += list(argv)
    os.execv(sys.executable, cmd)
    return 0  # not reached

CELLS: List[str] = [
    "%load_ext ipyrpyc",
    "%rpyc_connect",
    "type(rsys.path)",
    "isinstance(rsys.path, list)",
    "rsys.path[0]",
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
