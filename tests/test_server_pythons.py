"""Stock ``rpyc_classic`` servers on every Python from 3.8 up, driven from one real kernel.

The servers' environments hold rpyc from PyPI and nothing of ours: ``bash .ci/run`` builds them
(``.ci/envs/server-3.X``, from pyenv's CPythons; ``IPYRPYC_SERVER_ENVS`` names another folder).
Through each: display, completion, inspection, a remote error with its frame and source line,
``%%rpyc`` live output, an interrupt, and a bulk pull (``%%rpyc --pull``, as it is today).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.support.kernels import fails, ok, shell_request, value
from tests.support.processes import StockServer

ROOT = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("IPYRPYC_SERVER_ENVS", ROOT / ".ci" / "envs"))
REQUIRED = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]  # the pyenv CPythons every machine has
BOUND = 2.0  # seconds for an interrupt to reach idle


def server_pythons() -> List[Tuple[str, str]]:
    """(X.Y, interpreter) of every server environment; all of REQUIRED must be there."""
    found: Dict[str, str] = {}
    for env in sorted(ENVS.glob("server-3.*")):
        python = env / "bin" / "python"
        if (env / "bin" / "rpyc_classic").exists() and python.exists():
            found[env.name[len("server-"):]] = str(python)
    missing = [v for v in REQUIRED if v not in found]
    assert not missing, f"no stock server environment for Python {', '.join(missing)} in {ENVS}: run bash .ci/run"
    return sorted(found.items(), key=lambda item: tuple(int(n) for n in item[0].split(".")))


def nothing_of_ours(python: str) -> None:
    res = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('ipyrpyc') is None)"],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "True", f"{python} can import ipyrpyc: {res}"


def test_every_server_python_from_one_kernel(kernel):
    pythons = server_pythons()
    servers = []
    try:
        for version, python in pythons:
            nothing_of_ours(python)
            servers.append((version, StockServer(python=python)))
        report = []
        for version, server in servers:
            report.append(check_server(kernel, version, server))
        print("\n".join(report))
    finally:
        for _, server in servers:
            server.stop()


def check_server(kernel, version: str, server: StockServer) -> str:
    tag = "s" + version.replace(".", "")  # s38, s313 …
    ok(kernel, f"%rpyc_connect {server.address} --name {tag} --prefix {tag}_ --modules 'sys os time'")
    sys_, os_ = f"{tag}_sys", f"{tag}_os"
    assert value(kernel, f"{sys_}.version.split()[0].rsplit('.', 1)[0]") == version
    assert value(kernel, f"{os_}.getpid()") == server.pid

    # display: the remote object's own repr
    shown = ok(kernel, f"{sys_}.path").result
    assert shown.startswith("[") and "site-packages" in shown, shown
    assert ok(kernel, f"type({sys_}.path)").result == "<netref class 'builtins.list'>"

    # completion and inspection
    code = f"{sys_}.pa"
    reply, _ = shell_request(kernel, "complete", code)
    completed = [code[:reply["cursor_start"]] + m for m in reply["matches"]]  # IPython 8 sends "path"
    assert f"{sys_}.path" in completed, reply
    reply, _ = shell_request(kernel, "inspect", f"{os_}.getcwd", detail_level=0)
    assert reply["found"] and "getcwd" in reply["data"]["text/plain"], reply

    # a remote error: its frame and source line, from code sent with conn.execute
    ok(kernel, f"{tag}.execute('def ratio(a, b):\\n    return a / b\\n')")
    error = fails(kernel, f"{tag}.namespace['ratio'](1, 0)", "ZeroDivisionError")
    shown = error.plain_traceback
    assert "ratio" in shown and "return a / b" in shown, shown

    # %%rpyc: live output (the first line long before the end)
    res = ok(kernel, f"%%rpyc {tag}\nimport time\nfor i in range(3):\n    print('tick', i, flush=True)\n"
                     "    time.sleep(0.3)\n")
    assert res.stdout == "tick 0\ntick 1\ntick 2\n", res
    first = res.streams[0][0]
    assert first < res.t_idle - 0.4, res

    # an interrupt stops a remote loop; the connection answers at once after it
    res = fails(kernel, f"%%rpyc {tag}\nspins = 0\nwhile True:\n    spins += 1\n", "KeyboardInterrupt",
                interrupt_after=1.0)
    assert res.since_interrupt < BOUND and "stopped on the server" in res.evalue, res
    assert value(kernel, f"{os_}.getpid()") == server.pid

    # a bulk pull: 200,000 numbers copied back as a local list
    res = ok(kernel, f"%%rpyc {tag} --pull numbers\nnumbers = list(range(200000))")
    assert value(kernel, "type(numbers).__name__, len(numbers), numbers[-1]") == ("list", 200000, 199999)

    ok(kernel, f"%rpyc_disconnect {tag}")
    return f"Python {version} at {server.address}: display, completion, inspection, error, live output, interrupt, pull"


@pytest.mark.parametrize("version", REQUIRED)
def test_server_environments_hold_nothing_of_ours(version):
    """Each server environment has rpyc from PyPI and no ipyrpyc."""
    python = dict(server_pythons())[version]
    nothing_of_ours(python)
    res = subprocess.run([python, "-c", "import rpyc, sys; print(rpyc.__version__, sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.split()[0].startswith("6."), res
