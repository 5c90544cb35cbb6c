"""Real, separate hosts on one Linux machine for the tests: network namespaces on a private bridge.

The many-servers tests (discovery by UDP broadcast through rpyc's registry, groups of stock
``rpyc_classic`` servers on separate hosts) run their servers, their registry and even the
discovering IPython shell inside such hosts, so that broadcasts never touch the machine's real
interfaces.  Fixtures are in ``tests/test_groups_netns.py``; ``tests/test_netns.py`` checks the
guarantees below.

A :class:`Network` is a context manager that builds, and always takes down again::

    switch namespace  (<prefix><pid>-<n>-sw)      bridge br0, ports h1 .. hN; no address, no route
        h1 ──veth── eth0 in host namespace <prefix><pid>-<n>-h1   198.18.0.1/24
        h2 ──veth── eth0 in host namespace <prefix><pid>-<n>-h2   198.18.0.2/24
        ...

Each host namespace has ``lo`` and ``eth0`` up, the connected route of the subnet and, unless
``broadcast_route=False``, the route ``255.255.255.255/32 dev eth0``. There is no default route, no
NAT, and no link of any kind to the machine's own namespace (every interface is created directly
inside the namespaces, never in the caller's), so nothing can leave: a connection to any address
outside the subnet fails at once with ``ENETUNREACH`` ("Network is unreachable").

Why the broadcast route: with no default route, a datagram to the *limited* broadcast address
255.255.255.255 from a socket that is not bound to a local address finds no route and ``sendto()``
fails with ``ENETUNREACH``. That is what rpyc's ``UDPRegistryClient`` (used by ``rpyc_classic
--register`` and by ``rpyc.utils.factory.discover``) sends by default. The subnet broadcast
(198.18.0.255) works without it, through the connected route; so does 255.255.255.255 from a socket
bound to the host's address (the kernel then picks eth0 from the source address).

Processes run in a host with :meth:`Host.popen` / :meth:`Host.run` (``ip netns exec NAME argv...``;
``ip`` execs the command, so ``Popen.pid`` is the command's own pid). Every one of them is stopped
at teardown (SIGTERM and SIGCONT to its process group, SIGKILL after a grace period, reaped), and
then every process still inside one of the namespaces (grandchildren, daemons), found with
``ip netns pids``, is stopped the same way; all share one grace period. Then the namespaces are
deleted: deleting a host namespace destroys its veth pair, deleting the switch namespace destroys
the bridge. Teardown runs on any exception, KeyboardInterrupt included (also at interpreter exit
for a network never closed), and raises :class:`NetnsLeakError` (an AssertionError) if a namespace
of the network is still listed by ``ip netns list`` or one of its processes is alive. A run killed
by SIGTERM/SIGKILL cannot clean up: :func:`cleanup_stale` at the start of the next run does.

The test process itself stays in its own namespace; :meth:`Host.call` runs a function in a
short-lived thread that has entered the host's namespace (``setns(2)`` affects only that thread),
and :meth:`Host.socket` returns a socket created there: a socket belongs to the namespace it was
created in for its whole life, whichever thread uses it afterwards.

Names carry the creating pid and a per-process counter, so concurrent runs (pytest-xdist workers,
two terminals) never collide; :func:`cleanup_stale` removes what a crashed run (its pid gone) left.
Interface names are fixed and short (``br0``, ``hN``, ``eth0``) and live only inside the
namespaces, so the 15-character interface-name limit never applies to the per-run names.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ``ip``; :func:`netns_available` tells
whether this machine allows it, trying it for real once. Standard library only.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, cast

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SUBNET",
    "Host",
    "Network",
    "NetnsError",
    "NetnsLeakError",
    "cleanup_stale",
    "list_namespaces",
    "netns_available",
]

T = TypeVar("T")

DEFAULT_PREFIX = "nst"
"""Namespace names are ``<prefix><pid>-<counter>-sw`` and ``<prefix><pid>-<counter>-h<i>``."""

DEFAULT_SUBNET = "198.18.0.0/24"
"""RFC 2544 benchmarking space: never routed on the Internet, rarely used on real LANs."""

IP_TIMEOUT = 15.0
"""Seconds any single ``ip`` command may take."""

NETNS_RUN_DIR = "/run/netns"
"""Where ``ip netns add`` bind-mounts the namespaces (iproute2's NETNS_RUN_DIR)."""

CLONE_NEWNET = 0x40000000

_counter = itertools.count(1)
_counter_lock = threading.Lock()
_open_networks: "Dict[int, Network]" = {}  # started, not yet closed: closed at exit if forgotten
_available_lock = threading.Lock()
_available: Optional[List[Optional[str]]] = None  # [reason] once probed


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or a namespace could not be entered."""


class NetnsLeakError(AssertionError):
    """Teardown finished but something of the network is still there."""


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def _ip_path() -> str:
    """Absolute path of ``ip`` (so that a ``PATH``-less ``env`` for a host process still finds it)."""
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "ip"


def _ip(*args: str, check: bool = True, timeout: float = IP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise :class:`NetnsError` with its stderr if it fails and ``check``."""
    shown = " ".join(["ip", *args])
    try:
        res = subprocess.run([_ip_path(), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
    except FileNotFoundError as exc:
        raise NetnsError("`ip` (iproute2) is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{shown}` did not finish in {timeout:g} s") from exc
    if check and res.returncode != 0:
        detail = (res.stderr.strip() or res.stdout.strip() or f"exit status {res.returncode}").splitlines()[0]
        raise NetnsError(f"`{shown}` failed: {detail}")
    return res


def list_namespaces() -> List[str]:
    """Names of all named network namespaces (``ip netns list``), ours or not."""
    out = _ip("netns", "list").stdout
    # lines look like "name" or "name (id: 3)"
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _namespace_pids(name: str) -> List[int]:
    """Pids of the processes whose network namespace is ``name`` (``ip netns pids``)."""
    res = _ip("netns", "pids", name, check=False)
    if res.returncode != 0:
        return []
    return [int(p) for p in res.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _terminate(pids: Sequence[int]) -> None:
    """SIGTERM, then SIGCONT so that stopped (SIGSTOP/SIGTSTP) processes act on it."""
    _signal_pids(pids, signal.SIGTERM)
    _signal_pids(pids, signal.SIGCONT)


def _wait_gone(pids: Sequence[int], timeout: float) -> List[int]:
    """Wait until none of ``pids`` is alive; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _pid_alive(p)]
    return alive


def _stop_namespace_processes(names: Sequence[str], grace: float) -> Dict[str, List[int]]:
    """Stop every process inside the namespaces ``names``: SIGTERM, SIGKILL after ``grace`` s.

    All namespaces at once (one grace period in all). Returns ``{namespace: pids}`` of any
    process still there afterwards (only possible for processes stuck in the kernel).
    """

    def scan() -> Dict[str, List[int]]:
        return {name: pids for name in names for pids in [_namespace_pids(name)] if pids}

    found = scan()
    if not found:
        return {}
    pids = [p for ps in found.values() for p in ps]
    _terminate(pids)
    _wait_gone(pids, grace)
    for _ in range(3):  # SIGKILL the survivors, and anything forked in the meantime
        found = scan()
        if not found:
            return {}
        pids = [p for ps in found.values() for p in ps]
        _signal_pids(pids, signal.SIGKILL)
        _wait_gone(pids, 5.0)
    return scan()


def _restore_signals(sigs: Sequence[int], then: Optional[Callable[[], Any]]) -> None:
    """In a child between fork and exec: default disposition for ``sigs``, then ``then()``."""
    for sig in sigs:
        signal.signal(sig, signal.SIG_DFL)
    if then is not None:
        then()


def _signal_popen(proc: subprocess.Popen[Any], own_group: bool, sig: int) -> None:
    """Signal a started process (its whole process group if it leads one) unless already reaped.

    While ``returncode`` is None the pid has not been reaped, so neither it nor the group id
    can have been reused by another process: signalling by number is safe.
    """
    if proc.returncode is not None:
        return
    try:
        if own_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_popens(procs: Sequence[Tuple[subprocess.Popen[Any], bool]], grace: float) -> None:
    """SIGTERM (+SIGCONT) all, wait up to ``grace`` s in all, SIGKILL the rest; reap them all."""
    for proc, own_group in procs:
        _signal_popen(proc, own_group, signal.SIGTERM)
        _signal_popen(proc, own_group, signal.SIGCONT)
    deadline = time.monotonic() + grace
    for proc, own_group in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_popen(proc, own_group, signal.SIGKILL)
    for proc, _ in procs:
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            pass  # reported by the leak check


if hasattr(os, "setns"):  # Python >= 3.12

    def _setns(fd: int) -> None:
        os.setns(fd, CLONE_NEWNET)  # type: ignore[attr-defined]

else:
    _libc: Optional[Any] = None

    def _setns(fd: int) -> None:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")


def _call_in_namespace(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a new thread that has joined network namespace ``name``.

    Only that thread changes namespace (and it ends right after), so the caller's threads are
    untouched. Threads and sockets ``fn`` creates belong to the namespace.
    """
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return cast(T, box["value"])


# ----------------------------------------------------------------------------- hosts and networks


class Host:
    """One host of a :class:`Network`: a network namespace with ``eth0`` on the network's bridge."""

    def __init__(self, network: "Network", index: int, namespace: str, address: str) -> None:
        self.network = network
        self.index = index
        """1-based number of the host; its address is the subnet's ``index``-th address."""
        self.namespace = namespace
        """Name of the network namespace (``ip netns exec <namespace> ...``)."""
        self.address = address
        """IPv4 address of ``eth0``, e.g. ``"198.18.0.1"``."""
        self.ifname = "eth0"

    def __repr__(self) -> str:
        return f"<Host {self.namespace} {self.address}>"

    def exec_argv(self, argv: Sequence[str]) -> List[str]:
        """``argv`` prefixed so that it runs in this host: ``ip netns exec NAME argv...``."""
        return [_ip_path(), "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this host; stopped at teardown.

        ``kw`` go to :class:`subprocess.Popen`. Defaults: ``stdin=DEVNULL`` and
        ``start_new_session=True`` (a terminal's Ctrl-C reaches only the test process; teardown
        signals the whole process group). SIGINT and SIGQUIT start at their default disposition
        even when the test process ignores them (as a job started with ``&`` by a script does).
        """
        return self.network._popen(self, argv, **kw)

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        check: bool = False,
        input: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this host to completion; text stdout/stderr captured.

        The process is stopped (and :class:`subprocess.TimeoutExpired` raised) after ``timeout``.
        """
        proc = self.popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            _stop_popens([(proc, True)], 1.0)
            proc.communicate()
            raise
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            res.check_returncode()
        return res

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a thread inside this host's namespace; return its result.

        Sockets (and threads) ``fn`` creates stay in the namespace. Close them before teardown:
        an open socket keeps the namespace alive after ``ip netns del`` (invisible to
        ``ip netns list``); prefer :meth:`socket`, which teardown closes.
        """
        return _call_in_namespace(self.namespace, fn, *args, **kwargs)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        """A socket in this host's namespace, usable from any thread; closed at teardown."""
        sock = self.call(socket.socket, family, type, proto)
        self.network._sockets.append(sock)
        return sock

    def wait_tcp(self, address: str, port: int, timeout: float = 10.0) -> float:
        """Poll, from this host, until ``address:port`` accepts TCP; return seconds waited.

        Raises :class:`TimeoutError` if it does not within ``timeout``.
        """
        start = time.monotonic()
        deadline = start + timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            sock = self.call(socket.socket, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                sock.connect((address, port))
                return time.monotonic() - start
            except OSError as exc:
                last = exc
            finally:
                sock.close()
            time.sleep(0.02)
        raise TimeoutError(f"{address}:{port} not accepting TCP from {self.namespace} after {timeout:g} s: {last}")

    def pids(self) -> List[int]:
        """Pids of all processes currently inside this host's namespace."""
        return _namespace_pids(self.namespace)

    def stop(self, proc: subprocess.Popen[Any], grace: Optional[float] = None) -> Optional[int]:
        """Stop a process started here before teardown (as teardown would); return its exit status."""
        return self.network.stop(proc, grace)


class Network:
    """A switch (bridge) namespace and ``hosts`` host namespaces on it. Use as a context manager.

    :param hosts: number of hosts (1 .. number of addresses in ``subnet``)
    :param subnet: IPv4 subnet; host ``i`` gets its ``i``-th address (198.18.0.i by default)
    :param prefix: start of the namespace names; :func:`cleanup_stale` uses the same prefix
    :param broadcast_route: add ``255.255.255.255/32 dev eth0`` in each host so that limited
        broadcasts from unbound sockets are routable (see the module docstring)
    :param grace: seconds between SIGTERM and SIGKILL at teardown
    """

    def __init__(
        self,
        hosts: int = 2,
        subnet: str = DEFAULT_SUBNET,
        prefix: str = DEFAULT_PREFIX,
        broadcast_route: bool = True,
        grace: float = 3.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
            raise ValueError(f"prefix must be letters, digits or _ (it is parsed back): {prefix!r}")
        self.subnet = ipaddress.IPv4Network(subnet)
        if not 1 <= hosts <= self.subnet.num_addresses - 2:
            raise ValueError(f"{hosts} hosts do not fit in {self.subnet}")
        with _counter_lock:
            n = next(_counter)
        self.prefix = prefix
        self.tag = f"{prefix}{os.getpid()}-{n}"
        self.switch = f"{self.tag}-sw"
        """Name of the namespace that holds the bridge ``br0``."""
        self.broadcast = str(self.subnet.broadcast_address)
        """The subnet broadcast address, e.g. ``"198.18.0.255"``."""
        self.broadcast_route = broadcast_route
        self.grace = grace
        self.hosts: List[Host] = [
            Host(self, i, f"{self.tag}-h{i}", str(self.subnet.network_address + i)) for i in range(1, hosts + 1)
        ]
        self._created: List[str] = []  # namespaces whose creation was attempted, in order
        self._procs: List[Tuple[subprocess.Popen[Any], bool]] = []  # (process, leads its own group)
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._started = False

    def __repr__(self) -> str:
        return f"<Network {self.tag} {self.subnet} hosts={len(self.hosts)}>"

    @property
    def namespaces(self) -> List[str]:
        """All namespace names of this network: the switch first, then the hosts."""
        return [self.switch] + [h.namespace for h in self.hosts]

    # -- setup

    def start(self) -> "Network":
        """Create everything; on any failure (or interrupt) undo what was made and re-raise."""
        if self._started:
            raise RuntimeError("network already started")
        self._started = True
        _open_networks[id(self)] = self
        try:
            self._build()
        except BaseException:
            try:
                self.close()
            except BaseException:
                pass  # the setup error is the one to report
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        self._created.append(name)  # before: an interrupted `ip netns add` is still cleaned up
        _ip("netns", "add", name)

    def _build(self) -> None:
        sw = self.switch
        plen = str(self.subnet.prefixlen)
        self._add_namespace(sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for host in self.hosts:
            ns, port = host.namespace, f"h{host.index}"
            self._add_namespace(ns)
            # Both ends are born in namespaces of ours: nothing ever appears in the caller's.
            _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", host.ifname, "netns", ns)
            _ip("-n", sw, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{host.address}/{plen}", "brd", "+", "dev", host.ifname)
            _ip("-n", ns, "link", "set", host.ifname, "up")
            if self.broadcast_route:
                _ip("-n", ns, "route", "add", "255.255.255.255/32", "dev", host.ifname)

    def __enter__(self) -> "Network":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- processes

    def _popen(self, host: Host, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of arguments, not a string")
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        own_group = bool(kw["start_new_session"]) or kw.get("process_group") == 0
        # An ignored signal stays ignored across exec. A test runner started with `&` from a
        # script ignores SIGINT and SIGQUIT, and so would every server it starts: SIGINT
        # (KeyboardInterrupt, a clean shutdown for Python servers) would silently do nothing.
        ignored = [s for s in (signal.SIGINT, signal.SIGQUIT) if signal.getsignal(s) == signal.SIG_IGN]
        if ignored:
            kw["preexec_fn"] = functools.partial(_restore_signals, ignored, kw.get("preexec_fn"))
        with self._lock:  # a process is either refused or tracked, never started behind close()
            if self._closed or not self._started:
                raise RuntimeError(f"{self!r} is not running")
            proc = subprocess.Popen(host.exec_argv([os.fspath(a) for a in argv]), **kw)
            self._procs.append((proc, own_group))
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: Optional[float] = None) -> Optional[int]:
        """Stop one process started by a host of this network: SIGTERM (and SIGCONT) to its
        process group, SIGKILL after ``grace`` seconds (default: the network's), reaped.
        Returns its exit status (negative: killed by that signal)."""
        with self._lock:
            match = [(p, g) for p, g in self._procs if p is proc]
        if not match:
            raise ValueError(f"process {proc.pid} was not started by {self!r}")
        _stop_popens(match, self.grace if grace is None else grace)
        return proc.returncode

    # -- teardown

    def close(self) -> None:
        """Stop every process, delete every namespace, then check that nothing is left.

        Idempotent. Every step is attempted even if an earlier one fails or is interrupted; the
        first error is re-raised at the end, else :class:`NetnsLeakError` if anything is left.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _open_networks.pop(id(self), None)
        first: Optional[BaseException] = None

        def attempt(fn: Callable[..., Any], *args: Any) -> Any:
            nonlocal first
            try:
                return fn(*args)
            except BaseException as exc:  # KeyboardInterrupt too: keep cleaning
                if first is None:
                    first = exc
                return None

        for sock in self._sockets:
            attempt(sock.close)
        attempt(_stop_popens, list(reversed(self._procs)), self.grace)
        created = [ns for ns in self.namespaces if ns in self._created]
        survivors = attempt(_stop_namespace_processes, created, self.grace) or {}
        for ns in reversed(created):  # hosts first (each takes its veth pair along), then the switch
            attempt(_delete_namespace, ns)
        for proc, _ in self._procs:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    attempt(stream.close)

        listed = attempt(list_namespaces) or []
        leftovers = sorted(set(listed) & set(self.namespaces))
        alive = [p.pid for p, _ in self._procs if _pid_alive(p.pid) and p.returncode is None]
        if first is not None:
            raise first
        if leftovers or survivors or alive:
            raise NetnsLeakError(
                f"{self.tag} teardown left namespaces {leftovers}, processes in namespaces {survivors}, "
                f"started processes {alive}"
            )


def _delete_namespace(name: str) -> None:
    res = _ip("netns", "delete", name, check=False)
    if res.returncode != 0 and os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
        raise NetnsError(f"`ip netns delete {name}` failed: {res.stderr.strip()}")


# ----------------------------------------------------------------------------- module functions


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> List[str]:
    """Delete the namespaces named ``<prefix><pid>-...`` whose creating pid no longer runs.

    For the leftovers of a run that was SIGKILLed or crashed before its teardown. Processes
    still inside those namespaces are stopped first. Namespaces of live runs (this one included)
    are left alone. (If the dead run's pid has since been reused, its leftovers stay until that
    process ends.) Returns the names deleted.
    """
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)-\d+-(?:sw|h\d+)")
    stale: List[str] = []
    for name in list_namespaces():
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            stale.append(name)
    # hosts before switches, so veth pairs go with their host namespace
    stale.sort(key=lambda n: n.endswith("-sw"))
    _stop_namespace_processes(stale, 1.0)
    for name in stale:
        _delete_namespace(name)
    return stale


def netns_available(prefix: str = DEFAULT_PREFIX) -> Optional[str]:
    """``None`` if this process can build a :class:`Network`, else a one-line reason why not.

    Checks root and ``ip``, then builds a one-host network for real (namespace, bridge, veth,
    address, ``ip netns exec``) and takes it down. The answer is cached for the process.
    """
    global _available
    with _available_lock:
        if _available is None:
            _available = [_probe(prefix)]
        return _available[0]


def _probe(prefix: str) -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (platform {sys.platform})"
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()}): network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
    if _ip_path() == "ip":
        return "`ip` (iproute2) is not installed: apt-get install iproute2"
    true = shutil.which("true") or "/bin/true"
    try:
        with Network(hosts=1, prefix=prefix, grace=1.0) as net:
            res = net.hosts[0].run([true], timeout=IP_TIMEOUT)
            if res.returncode != 0:
                detail = (res.stderr.strip() or f"exit status {res.returncode}").splitlines()[0]
                return f"`ip netns exec` does not work here: {detail}"
            net.hosts[0].call(socket.socket).close()  # setns(2) from a thread
    except (NetnsError, OSError, subprocess.SubprocessError, AssertionError) as exc:
        return f"network namespaces unusable here: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


@atexit.register
def _close_forgotten_networks() -> None:
    """Networks never closed (no ``with``, no fixture finalizer) are taken down at exit."""
    for net in list(_open_networks.values()):
        try:
            net.close()
        except BaseException:
            pass
