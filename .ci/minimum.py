"""The declared minimums, installed alone: ipyrpyc works with exactly them.

Run by ``.ci/run`` with the Python of ``.ci/envs/minimum`` (``uv pip install --resolution
lowest-direct -e .``: no test tools, which need newer traitlets and jupyter_client).  Checks that
the installed versions are the floors of ``pyproject.toml``, then loads the extension in a shell
(connect, display, completion, inspection, a remote error) and runs a cell in a real kernel of
the ``ipyrpyc`` kernelspec.  Prints one line per check; exits non-zero on the first failure.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floors() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    deps = text[text.index("dependencies = ["):]
    deps = deps[:deps.index("]")]
    return {m.group(1): m.group(2) for m in re.finditer(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)', deps)}


def padded(v: str) -> tuple:
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main() -> int:
    for name, floor in sorted(floors().items()):
        installed = version(name)
        assert padded(installed) == padded(floor), f"{name}: {installed} installed, {floor} declared"
        print(f"ok {name} {installed} (declared >={floor})")

    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "ipyrpyc")
    ip.run_line_magic("rpyc_connect", "")
    try:
        rsys = ip.user_ns["rsys"]
        data, _ = ip.display_formatter.format(rsys.path)
        assert data["text/plain"].startswith("["), data
        print("ok display", data["text/plain"][:40])
        _, matches = ip.complete("rsys.pa")
        assert "path" in [m.rsplit(".", 1)[-1] for m in matches], matches
        print("ok completion", matches)
        info = ip.object_inspect("ros.getcwd")
        assert info["found"] and info["name"] == "ros.getcwd", info
        print("ok inspection", info["type_name"])
        result = ip.run_cell("conn.eval('1 / 0')")
        assert type(result.error_in_exec).__name__ == "ZeroDivisionError", result
        print("ok remote error", result.error_in_exec)
    finally:
        ip.run_line_magic("rpyc_disconnect", "--all")
        ip.run_line_magic("unload_ext", "ipyrpyc")

    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="ipyrpyc", startup_timeout=60)
    try:
        reply = kc.execute_interactive("%rpyc_connect\nros.getpid()", timeout=60, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        print("ok kernel: %rpyc_connect in a kernel of the ipyrpyc kernelspec")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    print(f"minimum versions work on Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
