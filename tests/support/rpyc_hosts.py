"""rpyc's own programs on the hosts of a :class:`tests.support.netns.Network`.

The stock ``rpyc_registry`` and ``rpyc_classic`` scripts of the installed rpyc, started in a
host with their log (stderr, where rpyc logs) collected line by line with timestamps, so that a
test can wait for "registered" or "acknowledged" instead of sleeping.  Facts about rpyc 6.0.2
that shape the switches (measured in ``tests/test_netns.py``):

- ``rpyc_classic --registry-type UDP`` does not work (plumbum lower-cases the value, rpyc
  compares it with "UDP" and takes its TCP branch): UDP registration is ``--register`` alone;
- ``rpyc_registry --listing false`` turns listing *on* (``bool("false")``): omit it to disable;
- ``rpyc_classic`` serves ``SlaveService``, registered as ``SLAVE``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

from .netns import Host

BIN = Path(sys.executable).parent  # the venv's bin: rpyc_registry, rpyc_classic, ipython
STARTUP = 20.0  # seconds a server may take to start / to register
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
CLASSIC_PORT = 18812
REGISTRY_PORT = 18811
UDP_REGISTRATION = ("--register",)
ACK = r"REGCLNT/(UDP|TCP).*registry \S+ acknowledged"


def tcp_registration(registry_host: str) -> Tuple[str, ...]:
    return ("--register", "--registry-type", "TCP", "--registry-host", registry_host)


def script(name: str) -> str:
    """A console script installed next to this interpreter."""
    path = shutil.which(name, path=str(BIN))
    assert path, f"{name} is not installed next to {sys.executable}"
    return path


class Logged:
    """A process in a host whose stderr (rpyc logs there) is collected with timestamps."""

    def __init__(self, host: Host, argv: List[str], name: str) -> None:
        self.name = name
        self.host = host
        self.started = time.monotonic()
        self.proc = host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        self.lines: List[Tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                with self._cond:
                    self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                    self._cond.notify_all()
        except (ValueError, OSError):  # stream closed at teardown
            pass

    def wait_for(self, pattern: str, timeout: float = STARTUP) -> float:
        """Seconds from start until a log line matched ``pattern`` (waits for it, at most ``timeout``)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, line in self.lines:
                    if rx.search(line):
                        return t
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._cond.wait(0.2)):
                    log = "\n".join(line for _, line in self.lines[-30:])
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r} (exit {self.proc.returncode}):\n{log}")
                self._cond.wait(min(left, 0.2))

    def text(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)


def registry(host: Host, mode: str = "UDP", *extra: str) -> Logged:
    """Stock rpyc_registry in ``host`` (binds 0.0.0.0:18811), once its socket is bound."""
    reg = Logged(host, [script("rpyc_registry"), "--mode", mode, *extra], f"registry-{mode}@{host.address}")
    reg.wait_for(r"server started on")  # logged after the socket is bound
    return reg


def classic(host: Host, *registration: str, bind: str = "0.0.0.0") -> Logged:
    """Stock rpyc_classic in ``host`` on 18812 with the given registration switches."""
    argv = [script("rpyc_classic"), "--host", bind, "--port", str(CLASSIC_PORT), *registration]
    return Logged(host, argv, f"classic@{host.address}")
