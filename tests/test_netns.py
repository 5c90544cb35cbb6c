"""The network-namespace harness (``tests.support.netns``) and the rpyc facts the many-servers
code relies on, measured across real separate hosts.

Every host is a network namespace with eth0 = 198.18.0.N/24 on a private bridge; nothing can
leave.  The stock ``rpyc_registry`` and ``rpyc_classic`` scripts of the installed rpyc run inside
the hosts; the discovering side runs inside a host too (an IPython shell for UDP, ``python -c``
for TCP).  Needs root and iproute2: where namespaces are refused every test here fails with the
reason (``IPYRPYC_SKIP_NETNS=1`` makes that a skip); see ``netns_ok`` in conftest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests.support import netns
from tests.support.netns import Host, Network
from tests.support.rpyc_hosts import (
    ACK,
    CLASSIC_PORT,
    ENV,
    UDP_REGISTRATION,
    classic,
    registry,
    script,
    tcp_registration,
)

PY = sys.executable
SUPPORT = str(Path(netns.__file__).resolve().parent)  # netns.py is stdlib-only: importable on its own
TCP_REGISTRATION = tcp_registration("198.18.0.1")


def run_json(host: Host, code: str, *args: str, timeout: float = 60.0) -> dict:
    """Run a Python snippet in ``host``; it prints one line RESULT=<json>."""
    res = host.run([PY, "-c", code, *args], timeout=timeout, env=ENV)
    m = re.search(r"^RESULT=(.*)$", res.stdout, re.M)
    assert m, f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return json.loads(m.group(1))


# A probe that records what each call returned or raised, and how long it took.
PROBE = r'''
import json, sys, time, rpyc
from rpyc.utils.factory import discover, list_services
from rpyc.utils.registry import UDPRegistryClient, TCPRegistryClient
out = {}
def probe(label, fn):
    t = time.monotonic()
    try:
        value, error = fn(), None
    except Exception as exc:
        value, error = None, f"{type(exc).__name__}: {exc}"
    out[label] = {"value": value, "error": error, "seconds": round(time.monotonic() - t, 3)}
'''


# ----------------------------------------------------------------------------- the network itself


def test_hosts_are_separate_and_connected(net: Network) -> None:
    h1, h2 = net.hosts[0], net.hosts[1]
    assert [h.address for h in net.hosts] == [f"198.18.0.{i}" for i in range(1, 6)]
    out = h2.run(["ip", "-4", "-o", "addr", "show"], check=True).stdout
    assert re.findall(r"inet (\S+)", out) == ["127.0.0.1/8", "198.18.0.2/24"]
    routes = h2.run(["ip", "route", "show"], check=True).stdout
    assert "default" not in routes and "255.255.255.255 dev eth0" in routes

    # TCP between two hosts, from the test process itself, through sockets made in the namespaces.
    listener = h2.socket()
    listener.bind(("0.0.0.0", 5555))
    listener.listen()
    client = h1.socket()
    client.settimeout(5)
    t = time.monotonic()
    client.connect((h2.address, 5555))
    conn, peer = listener.accept()
    with conn:
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    print(f"\nfirst TCP connect h1->h2 right after setup: {1000 * (time.monotonic() - t):.1f} ms")
    assert peer[0] == h1.address
    # The same port is free in every other host: separate stacks.
    other = net.hosts[2].socket()
    other.bind(("0.0.0.0", 5555))


def test_nothing_can_leave(net: Network) -> None:
    host = net.hosts[0]
    for addr in ["1.1.1.1", "8.8.8.8", "10.0.0.1", "192.168.1.1", "172.17.0.1"]:
        sock = host.socket()
        sock.settimeout(5)
        t = time.monotonic()
        with pytest.raises(OSError) as info:
            sock.connect((addr, 443))
        assert info.value.errno == 101, info.value  # ENETUNREACH, "Network is unreachable"
        assert time.monotonic() - t < 0.5
        udp = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError, match="Network is unreachable"):
            udp.sendto(b"x", (addr, 53))
    # and from a process started in the host
    res = host.run([PY, "-c", "import socket; socket.create_connection(('1.1.1.1', 80), timeout=5)"])
    assert "OSError: [Errno 101] Network is unreachable" in res.stderr
    # the switch namespace has no address and no route at all
    sw = subprocess.run(["ip", "-n", net.switch, "-4", "addr", "show"], capture_output=True, text=True, check=True)
    assert sw.stdout.strip() == ""
    sw = subprocess.run(["ip", "-n", net.switch, "route", "show"], capture_output=True, text=True, check=True)
    assert sw.stdout.strip() == ""


def test_python_and_ipython_run_in_a_host(net: Network) -> None:
    host = net.hosts[4]
    t = time.monotonic()
    res = host.run([PY, "-c", "import socket, rpyc; print(socket.gethostname(), rpyc.__version__)"], check=True)
    print(f"\npython -c in a namespace: {time.monotonic() - t:.2f} s -> {res.stdout.strip()}")
    # `ip netns exec` execs the command: the Popen pid is the command's own pid.
    proc = host.popen([PY, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert int(out) == proc.pid
    assert host.pids() == []  # finished, nothing left in the namespace

    t = time.monotonic()
    shell = host.run(
        [script("ipython"), "--quick", "--no-banner", "--colors=NoColor", "--simple-prompt",
         "--HistoryManager.enabled=False"],
        input="import os\nprint('PID', os.getpid())\n!ip -4 -o addr show dev eth0\n",
        timeout=60,
    )
    print(f"IPython shell in a namespace: {time.monotonic() - t:.2f} s")
    assert shell.returncode == 0, shell.stderr
    assert "PID " in shell.stdout and "inet 198.18.0.5/24" in shell.stdout


# ----------------------------------------------------------------------------- rpyc discovery


def test_udp_discovery_from_an_ipython_shell(net: Network) -> None:
    """UDP registry on h1, stock classic servers on h2..h4 registering by broadcast, IPython on h5."""
    t0 = time.monotonic()
    reg = registry(net.hosts[0], "UDP", "--listing", "true")  # NB: "--listing false" also enables it
    t_reg = time.monotonic() - t0
    servers = {h.address: classic(h, *UDP_REGISTRATION) for h in net.hosts[1:4]}
    timings: Dict[str, float] = {}
    for addr, srv in servers.items():
        srv.wait_for(ACK)
        registered = reg.wait_for(rf"registering {re.escape(addr)}:{CLASSIC_PORT} as SLAVE")
        timings[addr] = registered + reg.started - srv.started
    log = servers["198.18.0.2"].text()
    assert "REGCLNT/UDP" in log and "registering on 255.255.255.255:18811" in log

    session = r"""
import json, time, rpyc
from rpyc.utils.factory import discover, list_services
from rpyc.utils.registry import UDPRegistryClient
%time limited = discover("SLAVE", registrar=UDPRegistryClient(ip="255.255.255.255", port=18811))
t = time.monotonic()
subnet = discover("SLAVE", registrar=UDPRegistryClient(ip="198.18.0.255", port=18811))
t = time.monotonic() - t
services = list_services(registrar=UDPRegistryClient(ip="255.255.255.255"))
pids = {}
for host, port in limited:
    conn = rpyc.classic.connect(host, port)
    pids[host] = conn.modules.os.getpid()
    conn.close()

got = {"limited": sorted(limited), "subnet": sorted(subnet), "subnet_s": t, "services": services, "pids": pids}
print("RESULT=" + json.dumps(got))
"""
    t = time.monotonic()
    shell = net.hosts[4].run(
        [script("ipython"), "--quick", "--no-banner", "--colors=NoColor", "--simple-prompt",
         "--HistoryManager.enabled=False"],
        input=session, timeout=60, env=ENV,
    )
    t_shell = time.monotonic() - t
    m = re.search(r"RESULT=(.*)", shell.stdout)
    assert m, shell.stdout + shell.stderr
    got = json.loads(m.group(1))
    expected = sorted([addr, CLASSIC_PORT] for addr in servers)
    assert got["limited"] == expected and got["subnet"] == expected
    assert got["services"] == ["SLAVE"]  # SlaveService registers only as SLAVE, not CLASSIC
    assert got["pids"] == {addr: srv.proc.pid for addr, srv in servers.items()}
    assert got["subnet_s"] < 0.5
    print(f"\nUDP registry up in {t_reg:.2f} s; server start -> registered: "
          + ", ".join(f"{a} {s:.2f} s" for a, s in timings.items())
          + f"; IPython session (start, 2 discovers, list, 3 connects) {t_shell:.2f} s; "
          f"one discover {1000 * got['subnet_s']:.1f} ms")
    assert max(timings.values()) < 5.0


def test_tcp_discovery(net: Network) -> None:
    """TCP registry on h1, servers on h2..h4 registering over TCP, a python client on h5."""
    reg = registry(net.hosts[0], "TCP", "--listing", "true")
    servers = {h.address: classic(h, *TCP_REGISTRATION) for h in net.hosts[1:4]}
    timings = {}
    for addr, srv in servers.items():
        srv.wait_for(ACK)
        registered = reg.wait_for(rf"registering {re.escape(addr)}:{CLASSIC_PORT} as SLAVE")
        timings[addr] = registered + reg.started - srv.started
    assert "REGCLNT/TCP" in servers["198.18.0.3"].text()
    code = PROBE + r'''
probe("discover", lambda: sorted(discover("SLAVE", registrar=TCPRegistryClient("198.18.0.1"))))
probe("list", lambda: list_services(registrar=TCPRegistryClient("198.18.0.1")))
probe("list_filtered", lambda: list_services(registrar=TCPRegistryClient("198.18.0.1"), filter_host="198.18.0.3"))
pids = {}
for host, port in out["discover"]["value"]:
    conn = rpyc.classic.connect(host, port)
    pids[host] = conn.modules.os.getpid()
    conn.close()
out["pids"] = pids
print("RESULT=" + json.dumps(out))
'''
    got = run_json(net.hosts[4], code)
    assert got["discover"]["value"] == sorted([a, CLASSIC_PORT] for a in servers)
    assert got["list"]["value"] == ["SLAVE"] and got["list_filtered"]["value"] == ["SLAVE"]
    assert got["pids"] == {addr: srv.proc.pid for addr, srv in servers.items()}
    print("\nTCP: server start -> registered: " + ", ".join(f"{a} {s:.2f} s" for a, s in timings.items())
          + f"; discover {1000 * got['discover']['seconds']:.1f} ms")


def test_registry_failure_modes(net: Network) -> None:
    """What a missing, silent, refusing or unreachable registry looks like to the client."""
    tcp = registry(net.hosts[0], "TCP", "--listing", "true")
    registry(net.hosts[1], "UDP")  # listing disabled (the default)
    tcp.proc.send_signal(signal.SIGSTOP)  # the kernel still accepts TCP connections; nobody answers
    code = PROBE + r'''
probe("udp_nobody", lambda: discover("SLAVE", registrar=UDPRegistryClient(ip="198.18.0.4", timeout=1)))
probe("udp_nobody_list", lambda: list_services(registrar=UDPRegistryClient(ip="198.18.0.4", timeout=1)))
probe("udp_unknown_name", lambda: discover("NOPE", registrar=UDPRegistryClient(ip="198.18.0.2")))
probe("udp_listing_disabled", lambda: list_services(registrar=UDPRegistryClient(ip="198.18.0.2")))
probe("udp_offnet", lambda: discover("SLAVE", registrar=UDPRegistryClient(ip="10.9.9.9")))
probe("tcp_refused", lambda: discover("SLAVE", registrar=TCPRegistryClient("198.18.0.3")))
probe("tcp_silent", lambda: discover("SLAVE", registrar=TCPRegistryClient("198.18.0.1", timeout=1)))
probe("tcp_silent_list", lambda: list_services(registrar=TCPRegistryClient("198.18.0.1", timeout=1)))
probe("tcp_no_such_host", lambda: discover("SLAVE", registrar=TCPRegistryClient("198.18.0.99", timeout=1)))
probe("tcp_offnet", lambda: discover("SLAVE", registrar=TCPRegistryClient("10.9.9.9")))
print("RESULT=" + json.dumps(out))
'''
    got = run_json(net.hosts[4], code)
    print("\n" + "\n".join(f"  {k:22} {v['seconds']:6.3f} s  {v['error'] or repr(v['value'])}" for k, v in got.items()))

    def check(label: str, error: Optional[str], lo: float, hi: float, value=None) -> None:
        r = got[label]
        assert r["error"] == error and r["value"] == value and lo <= r["seconds"] <= hi, (label, r)

    check("udp_nobody", "DiscoveryError: no servers exposing 'SLAVE' were found", 0.9, 1.6)
    check("udp_nobody_list", None, 0.9, 1.6, value=[])  # silence is an empty list, not an error
    check("udp_unknown_name", "DiscoveryError: no servers exposing 'NOPE' were found", 0, 0.5)
    check("udp_listing_disabled", "ForbiddenError: Registry doesn't allow listing", 0, 0.5)
    check("udp_offnet", "OSError: [Errno 101] Network is unreachable", 0, 0.5)
    check("tcp_refused", "ConnectionRefusedError: [Errno 111] Connection refused", 0, 0.5)
    check("tcp_silent", "DiscoveryError: no servers exposing 'SLAVE' were found", 0.9, 1.6)
    check("tcp_silent_list", None, 0.9, 1.6, value=[])
    timed_out = "TimeoutError" if sys.version_info >= (3, 10) else "timeout"  # socket.timeout's name before 3.10
    check("tcp_no_such_host", f"{timed_out}: timed out", 0.9, 1.6)  # ARP gives up only after ~3 s
    check("tcp_offnet", "OSError: [Errno 101] Network is unreachable", 0, 0.5)


def test_limited_broadcast_needs_a_route(network_factory) -> None:
    """Without a default route, 255.255.255.255 is unroutable unless the socket is bound or a route exists."""
    net = network_factory(4, broadcast_route=False)
    h1, h2, h3, h4 = net.hosts
    reg = registry(h1, "UDP")
    unbound = classic(h2, *UDP_REGISTRATION)  # --host 0.0.0.0: registration socket not bound to an address
    bound = classic(h3, *UDP_REGISTRATION, bind=h3.address)  # source address picks eth0: works
    bound.wait_for(ACK)
    unbound.wait_for(r"OSError: \[Errno 101\] Network is unreachable")  # logged with a traceback, retried every 1 s
    code = PROBE + r'''
probe("limited", lambda: discover("SLAVE", registrar=UDPRegistryClient(ip="255.255.255.255")))
probe("subnet", lambda: discover("SLAVE", registrar=UDPRegistryClient(ip="198.18.0.255")))
print("RESULT=" + json.dumps(out))
'''
    got = run_json(h4, code)
    assert got["limited"]["error"] == "OSError: [Errno 101] Network is unreachable"  # not a DiscoveryError
    assert got["subnet"]["value"] == [["198.18.0.3", CLASSIC_PORT]]
    # The fix, live: the server's next retry (every second) gets through.
    t = time.monotonic()
    h2.run(["ip", "route", "add", "255.255.255.255/32", "dev", "eth0"], check=True)
    reg.wait_for(r"registering 198\.18\.0\.2:18812 as SLAVE", timeout=5)
    print(f"\nregistered {time.monotonic() - t:.2f} s after adding the broadcast route")


def test_unregistration_on_sigint_but_not_sigterm(net: Network) -> None:
    reg = registry(net.hosts[0], "UDP")
    a = classic(net.hosts[1], *UDP_REGISTRATION)
    b = classic(net.hosts[2], *UDP_REGISTRATION)
    a.wait_for(ACK)
    b.wait_for(ACK)
    # "acknowledged" comes from the registration thread, possibly before the main thread has
    # entered the try/except KeyboardInterrupt around its accept loop: a SIGINT then kills it
    # (exit -2) without unregistering. A served connection proves the main thread is in the loop.
    net.hosts[4].wait_tcp(net.hosts[1].address, CLASSIC_PORT)
    a.wait_for(r"\[MainThread\]: accepted")
    a.proc.send_signal(signal.SIGINT)  # KeyboardInterrupt -> server.close() -> registrar.unregister()
    assert a.proc.wait(10) == 0, a.text()
    assert net.hosts[2].stop(b.proc) == -signal.SIGTERM  # dies without unregistering
    reg.wait_for(r"unregistering 198\.18\.0\.2:18812")
    code = PROBE + r'''
probe("discover", lambda: discover("SLAVE", registrar=UDPRegistryClient()))
probe("connect", lambda: rpyc.classic.connect("198.18.0.3", 18812) and None)
print("RESULT=" + json.dumps(out))
'''
    got = run_json(net.hosts[4], code)
    # the SIGTERMed server stays listed until the registry prunes it (--timeout, default 240 s)
    assert got["discover"]["value"] == [["198.18.0.3", CLASSIC_PORT]]
    assert got["connect"]["error"] == "ConnectionRefusedError: [Errno 111] Connection refused"


# ----------------------------------------------------------------------------- teardown guarantees


def test_teardown_stops_everything_even_on_interrupt(netns_ok: None) -> None:
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with Network(hosts=2, grace=1.0) as net:
            names = net.namespaces
            h1, h2 = net.hosts
            # a grandchild in the background, a process ignoring SIGTERM, a stopped process
            shell = h1.popen(["sh", "-c", "sleep 300 & sleep 300"])
            ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
            stubborn = h2.popen([PY, "-c", ignore_term])
            stopped = h2.popen(["sleep", "300"])
            time.sleep(0.3)
            stopped.send_signal(signal.SIGSTOP)
            inside = h1.pids() + h2.pids()
            assert {shell.pid, stubborn.pid, stopped.pid} < set(inside), inside  # + the sleeps sh forked
            raise KeyboardInterrupt
    elapsed = time.monotonic() - t
    assert not any(netns._pid_alive(p) for p in inside)
    assert shell.returncode is not None and stubborn.returncode == -signal.SIGKILL
    assert not set(names) & set(netns.list_namespaces())
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)
    print(f"\nsetup + teardown with a SIGTERM-proof process (grace 1 s): {elapsed:.2f} s")


@pytest.mark.parametrize("error", [netns.NetnsError("injected failure"), KeyboardInterrupt()],
                         ids=["NetnsError", "KeyboardInterrupt"])
def test_setup_failure_leaves_nothing(netns_ok: None, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """An `ip` command failing (or Ctrl-C) half-way through setup: all made is removed, the error kept."""
    real = netns._ip
    addr_calls = []

    def failing(*args: str, **kw):
        if "addr" in args:
            addr_calls.append(args)
            if len(addr_calls) == 2:  # the second host's address
                raise error
        return real(*args, **kw)

    monkeypatch.setattr(netns, "_ip", failing)
    net = Network(hosts=3)
    with pytest.raises(type(error)):
        net.start()
    monkeypatch.setattr(netns, "_ip", real)
    assert not set(net.namespaces) & set(netns.list_namespaces())


def test_cleanup_stale_removes_a_crashed_runs_leftovers(netns_ok: None) -> None:
    here = SUPPORT
    prefix = f"crash{os.getpid()}x"  # not the default: concurrent runs of this file stay apart
    crash = (
        f"import sys, os, subprocess; sys.path.insert(0, {here!r}); import netns\n"
        f"net = netns.Network(hosts=2, prefix={prefix!r}).start()\n"
        "p = net.hosts[0].popen(['sleep', '300'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(' '.join(net.namespaces), p.pid, flush=True)\n"
        "os._exit(9)  # no teardown, no atexit: as if SIGKILLed\n"
    )
    res = subprocess.run([PY, "-c", crash], capture_output=True, text=True, timeout=30)
    *names, sleeper = res.stdout.split()
    assert res.returncode == 9 and set(names) <= set(netns.list_namespaces()), res
    assert netns._pid_alive(int(sleeper))
    mine = Network(hosts=1, prefix=prefix).start()  # a live run's namespaces are left alone
    try:
        removed = netns.cleanup_stale(prefix)
        assert sorted(removed) == sorted(names)
        assert set(mine.namespaces) <= set(netns.list_namespaces())
    finally:
        mine.close()
    assert not netns._pid_alive(int(sleeper))
    assert not set(names) & set(netns.list_namespaces())


def test_netns_available_is_cached(netns_ok: None) -> None:
    t = time.monotonic()
    assert netns.netns_available() is None
    assert time.monotonic() - t < 0.01


@pytest.mark.parametrize(
    "wrapper, reason",
    [
        ("nobody", r"not root \(euid 65534\): network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"),
        # a user namespace: euid 0, but no real privilege (like many container sandboxes)
        ("unshare -Ur", r"network namespaces unusable here: `ip netns add PREFIX\d+-1-sw` failed: "
                        r"mount --make-shared /run/netns failed: Operation not permitted"),
        ("setpriv --bounding-set -sys_admin --inh-caps -sys_admin",
         r"network namespaces unusable here: `ip netns add PREFIX\d+-1-sw` failed: .*Operation not permitted"),
        # namespaces allowed, interfaces not: the probe must also clean up what it made
        ("setpriv --bounding-set -net_admin --inh-caps -net_admin",
         r"network namespaces unusable here: `ip -n PREFIX\d+-1-sw link add br0 type bridge .*` failed: "
         r"RTNETLINK answers: Operation not permitted"),
    ],
    ids=["nobody", "user-namespace", "no-CAP_SYS_ADMIN", "no-CAP_NET_ADMIN"],
)
def test_netns_available_explains_refusals(netns_ok: None, wrapper: str, reason: str) -> None:
    here = SUPPORT
    system_python = shutil.which("python3", path="/usr/bin:/bin")  # netns.py is stdlib-only
    argv = wrapper.split() if wrapper != "nobody" else []
    assert system_python is not None, "needs /usr/bin/python3 (netns.py must work with the standard library alone)"
    assert not argv or shutil.which(argv[0]) is not None, f"needs {argv[0]} (util-linux)"
    as_nobody: Dict[str, Any] = {"user": 65534, "group": 65534} if wrapper == "nobody" else {}
    prefix = f"refused{os.getpid()}x"  # not the default: concurrent runs of this file stay apart
    code = f"import sys; sys.path.insert(0, {here!r}); import netns; print(netns.netns_available({prefix!r}))"
    res = subprocess.run([*argv, system_python, "-c", code], capture_output=True, text=True, timeout=60, cwd="/",
                         **as_nobody)
    assert re.fullmatch(reason.replace("PREFIX", re.escape(prefix)), res.stdout.strip()), res
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]  # the probe cleaned up
