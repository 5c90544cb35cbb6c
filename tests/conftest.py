"""Fixtures with real components: stock classic servers, kernels, shells, a network guard.

Every process a fixture starts is stopped in its finalizer, and the finalizer
checks that it is gone.  The helpers live in ``tests.support``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import Callable, Iterator, List

import pytest
import rpyc
from rpyc.core.service import ClassicClient, SlaveService
from rpyc.utils.factory import connect_stream

from tests.support import netns
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
def pair() -> Iterator[rpyc.Connection]:
    """A plain ClassicClient connection to SlaveService (what rpyc_classic serves), served on a
    thread of this process over a socket pair: the server's side without a server process."""
    a, b = socket.socketpair()
    server_conn = SlaveService._connect(rpyc.Channel(rpyc.SocketStream(b)), {})
    thread = threading.Thread(target=server_conn.serve_all, daemon=True)
    thread.start()
    client = connect_stream(rpyc.SocketStream(a), service=ClassicClient)
    try:
        yield client
    finally:
        client.close()
        thread.join(5)
        assert not thread.is_alive()


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


# -- network namespaces: real separate hosts (tests.support.netns) ------------------------------
def _links() -> List[str]:
    """Interface names of the namespace the tests run in."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


@pytest.fixture(scope="session")
def netns_ok() -> None:
    """Network namespaces must work here: a test that needs them fails, by name, with the reason.

    ``IPYRPYC_SKIP_NETNS=1`` turns that failure into a skip with the same reason (shown by
    ``-ra``), for machines that refuse namespaces; the loopback tests run either way.
    """
    reason = netns.netns_available()
    if reason is not None:
        if os.environ.get("IPYRPYC_SKIP_NETNS"):
            pytest.skip(f"network namespaces refused here: {reason}")
        pytest.fail(f"network namespaces refused here: {reason} (IPYRPYC_SKIP_NETNS=1 skips these tests)",
                    pytrace=False)
    removed = netns.cleanup_stale()
    if removed:
        print(f"\nremoved leftovers of crashed runs: {removed}")


@pytest.fixture
def network_factory(netns_ok: None) -> Iterator[Callable[..., netns.Network]]:
    """``make(hosts, **kw)`` -> a started Network; all closed (and checked) at teardown, and the
    test's own namespace must have neither gained nor lost an interface."""
    before = _links()
    made: List[netns.Network] = []

    def make(hosts: int = 5, **kw) -> netns.Network:
        net = netns.Network(hosts=hosts, **kw).start()
        made.append(net)
        return net

    try:
        yield make
    finally:
        errors = []
        for net in reversed(made):
            try:
                net.close()  # raises NetnsLeakError if anything is left
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        ours = [n for n in netns.list_namespaces() if n.startswith(f"{netns.DEFAULT_PREFIX}{os.getpid()}-")]
        assert ours == [], f"namespaces left behind: {ours}"
        assert _links() == before, "the test's own namespace gained or lost interfaces"


@pytest.fixture
def net(network_factory) -> netns.Network:
    """Five hosts 198.18.0.1 .. 198.18.0.5 on one bridge."""
    return network_factory(5)
