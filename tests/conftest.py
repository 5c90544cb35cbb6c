"""Fixtures with real components: stock classic servers, kernels, shells, a network guard.

Every process a fixture starts is stopped in its finalizer, and the finalizer
checks that it is gone.  The helpers live in ``tests.support``.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.support.kernels import Kernel
from tests.support.netguard import NetworkGuard
from tests.support.processes import StockServer, children_of, wait_until
from tests.support.shells import global_shell


@pytest.fixture
def classic_server() -> Iterator[StockServer]:
    """A stock ``rpyc_classic`` server on a free loopback port."""
    server = StockServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shell():
    """A clean terminal-style ``InteractiveShell`` with ipyrpyc loaded; unloaded afterwards.

    ``RpycMagics`` settings made with ``%config`` live in the global shell's config, so
    they are dropped before and after; no process the test started may outlive it.
    """
    ip = global_shell()
    ip.config.pop("RpycMagics", None)
    ip.reset(new_session=False)
    ip.run_line_magic("load_ext", "ipyrpyc")
    magics = ip.magics_manager.registry["RpycMagics"]
    before = set(children_of(os.getpid()))
    try:
        yield ip
    finally:
        ip.run_line_magic("unload_ext", "ipyrpyc")
        ip.config.pop("RpycMagics", None)
        assert not magics.registry.sessions
        assert wait_until(lambda: not (set(children_of(os.getpid())) - before), 10), "a process outlived the test"


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A real kernel with the extension pre-loaded by the ipyrpyc kernelspec."""
    k = Kernel()
    try:
        yield k
    finally:
        k.shutdown()


@pytest.fixture
def network_guard() -> Iterator[NetworkGuard]:
    """Loopback only (see ``tests.support.netguard``); the test fails on any violation."""
    guard = NetworkGuard()
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()
    assert guard.violations == []
