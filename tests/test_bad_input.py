"""Property: no argument string makes an rpyc magic fail with anything but a UsageError.

Argument strings come from a grammar that mixes the real flags with valid, malformed and
hostile values.  Each call must either succeed or raise ``UsageError``; a failed call
must leave the user namespace, the open connections and the process table as they were.

Network safety: every address the grammar makes is loopback or malformed, and a guard
installed for each test refuses (and records) anything else: names that are not loopback
never reach ``getaddrinfo`` (the guard answers them with ``socket.gaierror``, which the
magics must report as a UsageError), connecting a socket to a non-loopback address fails
the test, and so does starting any program but the embedded server or an ``ssh`` (under
its tunnel keeper) to a loopback host with only the options ipyrpyc passes.
"""

from __future__ import annotations

import contextlib
import io
import keyword
import os
import shlex
import socket
import subprocess
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from tests.support.netguard import NetworkGuard
from tests.support.processes import children_of, free_port, wait_until


# -- network guard (tests.support.netguard; the network_guard fixture is conftest's) -----------
def test_network_guard_itself(network_guard):
    """The guard refuses what it must and lets loopback through (else the properties prove nothing)."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.invalid", 80)
    with pytest.raises(socket.gaierror):
        socket.create_connection(("192.0.2.1", 9), 1)
    assert network_guard.blocked == ["example.invalid", "192.0.2.1"]
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("192.0.2.1", 9))
    with socket.socket(socket.AF_INET6) as s, pytest.raises(OSError):
        s.connect_ex(("2001:db8::1", 9))
    with pytest.raises(OSError):
        subprocess.Popen(["ssh", "-o", "ProxyCommand=true", "127.0.0.1"])
    with pytest.raises(OSError):
        subprocess.Popen(["ssh", "example.invalid"])
    assert len(network_guard.violations) == 4
    network_guard.violations.clear()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), 1).close()
        assert socket.getaddrinfo("localhost", 80)
        assert socket.getaddrinfo(b"127.0.0.1", 80) and socket.getaddrinfo(None, 80)
    assert network_guard.violations == [] and len(network_guard.blocked) == 2


def test_network_guard_is_one_guard_for_every_use():
    """Installed and uninstalled by hand (as ``test_bad_input_cells`` does), it puts back
    exactly what it replaced."""
    before = (socket.getaddrinfo, socket.create_connection, socket.socket.connect, socket.socket.connect_ex,
              subprocess.Popen.__init__)
    with NetworkGuard() as guard:
        with pytest.raises(OSError):
            socket.getaddrinfo("example.invalid", 80)
        assert guard.blocked == ["example.invalid"]
    assert (socket.getaddrinfo, socket.create_connection, socket.socket.connect, socket.socket.connect_ex,
            subprocess.Popen.__init__) == before


def test_non_loopback_name_is_a_usage_error(shell, network_guard):
    with pytest.raises(UsageError, match="unknown host"):
        shell.run_line_magic("rpyc_connect", "no-such-host.invalid:1")
    assert network_guard.blocked == ["no-such-host.invalid"]
    assert not shell.magics_manager.registry["RpycMagics"].registry.sessions


# -- the grammar -----------------------------------------------------------------------------

GOOD, REFUSED = "@GOOD@", "@REFUSED@"  # replaced by the live server's port and a closed one

# stdlib modules with side effects on import (a browser, a window, a print): never generated
SIDE_EFFECT_MODULES = ("antigravity", "this", "turtle", "idlelib", "tkinter", "hello", "webbrowser")

odd_chars = st.sampled_from(list("\"'\\ =-:[]@/,.;#$`\t\n\x00é߀٣🙂\u202e\u3000") + ["\ud800"])
text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), odd_chars), max_size=12
).filter(lambda t: not any(m in t for m in SIDE_EFFECT_MODULES))

ports = st.sampled_from([GOOD, GOOD, REFUSED, "1", "0", "65536", "-1", "abc", "", "99999999999999999999",
                         " 1", "1e3", "٣", "0x50", "+1", "1.5", "65535"])
v4_hosts = st.sampled_from(["127.0.0.1", "localhost", "127.0.0.2", "127.255.255.254", "LOCALHOST"])
v6_hosts = st.sampled_from(["::1", "0:0:0:0:0:0:0:1"])
malformed_addresses = st.sampled_from([
    "[", "[]", "[::1", "[::1]x", "[::1]:", ":", ":80", "a b", "/tmp/x", "u@127.0.0.1", "[127.0.0.1]:1",
    "127.0.0.1:", "::1:1:", "[::1]:0", "127.0.0.1:0", "[[::1]]:1", "-oProxyCommand=x", "127.0.0.1:1:2",
])
addresses = st.one_of(
    st.builds("{}:{}".format, v4_hosts, ports),
    st.builds("[{}]:{}".format, v6_hosts, ports),
    v4_hosts,
    v6_hosts,
    malformed_addresses,
    text,  # anything: names that are not loopback meet the guard
)
timeouts = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "-1", "0", "-0", "1e-300", "1e-9", "1e309", "2", "0.5", "abc",
                     "", "1_0", "0x10", " 3 ", "1e7", "2147484", "1e6", "1e10", "9e15", "1e300", "1e-6", "0.0001",
                     "5e-324", "1e-100"]),
    st.floats().map(repr),
    st.integers().map(str),
)
names = st.one_of(
    st.sampled_from(["conn", "lab", "c2", "if", "class", "None", "True", "1x", "", "a-b", "ünï", "_", "In",
                     "get_ipython", "rsys", "ros", "__builtins__", "print", "exit", "ｃｏｎｎ"]),
    text,
)
module_specs = st.one_of(
    st.sampled_from(["sys", "sys os", "np=json", "os.path", "=json", "a=", "1abc", "sys..os", "import", "a=b=c",
                     "no_such_mod_q", "sys,os", ",,", "", " ", "json as j", "if=json", "sys.modules",
                     "os.path.join", "x=os.path", "builtins", "None=json", ".os", "os."]),
    text,
)
prefixes = st.one_of(st.sampled_from(["", "r", "s", "q_", "1", "if", " ", "ü", "-", "r.", "_", "None"]), text)
paths = st.one_of(st.sampled_from(["/nonexistent/x.pem", "", "/dev/null", ".", "-", "src"]), text)
# ssh resolves its host itself, out of the guard's reach (the guard refuses to start an ssh to
# anything but loopback, which fails the test): so these go to --ssh exactly as written, never
# re-quoted or split, and a bare --ssh never takes a random word as its value.
ssh_values = st.sampled_from([  # loopback or malformed only
    "127.0.0.1:1", "u@127.0.0.1:1", "[::1]:1", "localhost:1", "", "@", "u@", "a b", "[", "u@[::1",
    "127.0.0.1:0", "127.0.0.1:abc", ":22", "-oProxyCommand=false@127.0.0.1:1", "-oProxyCommand=false",
    "u@-p1", "x@@127.0.0.1:1", "-v", "-F/dev/null@localhost:1", "-p1@127.0.0.1:1", "u@-oBatchMode=no",
])
stray = st.sampled_from(["--", "-", "---", "--bogus", "--port=", "--name=", "--timeout=", "-t", "--all", "-x",
                         "--no-inject=1", "--help", "-h", "'", '"', "\\", "--force=yes", "-pn", "--=", "=",
                         "--modules", "-m"])  # never a bare --ssh: ssh would look up the random word after it


class Exact(str):
    """A token that reaches the magic exactly as written (``render`` leaves it alone)."""


def option(flags, values, exact: bool = False):
    """``--flag value``, ``-f value`` or ``--flag=value``; ``exact``: the value arrives as it is,
    always one argument, never re-quoted or split (what --ssh needs, see ``ssh_values``)."""
    if exact:
        spaced = st.tuples(st.sampled_from(flags), values).map(lambda fv: [fv[0], Exact(shlex.quote(fv[1]))])
        joined = st.tuples(st.sampled_from(flags[:1]), values).map(
            lambda fv: [Exact(shlex.quote(f"{fv[0]}={fv[1]}"))])
    else:
        spaced = st.tuples(st.sampled_from(flags), values).map(list)
        joined = st.tuples(st.sampled_from(flags[:1]), values).map(lambda fv: [f"{fv[0]}={fv[1]}"])
    return st.one_of(spaced, joined)


# The hostile part of a line, by kind ("slot").
SLOTS = {
    "address": addresses.map(lambda a: [a]),
    "port": option(["--port", "-p"], ports),
    "name": option(["--name", "-n"], names),
    "timeout": option(["--timeout", "-t"], timeouts),
    "modules": option(["--modules", "-m"], module_specs),
    "prefix": option(["--prefix"], prefixes),
    "tls": st.one_of(option(["--keyfile"], paths), option(["--certfile"], paths), option(["--ca-certs"], paths),
                     st.just(["--ssl"])),
    "ssh": st.one_of(option(["--ssh"], ssh_values, exact=True), option(["--ssh-key"], paths)),
    "stray": st.one_of(stray.map(lambda s: [s]), text.map(lambda t: [t])),
}
connect_fragments = st.one_of(
    *SLOTS.values(), st.sampled_from([["--ssl"], ["--no-inject"], ["--force"], ["--trust"]])
)


@st.composite
def render(draw, tokens: List[str]) -> str:
    """Join tokens as a user might: quoted properly, or raw (unbalanced quotes and all)."""
    out = []
    for token in tokens:
        out.append(token if isinstance(token, Exact) or not draw(st.booleans()) else shlex.quote(token))
    return " ".join(out)


@st.composite
def connect_lines(draw) -> str:
    """Anything: up to five parts of any kind, an address or not, or a raw line of text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(text)
    fragments = draw(st.lists(connect_fragments, max_size=5))
    if draw(st.integers(0, 5)):  # mostly with an address: without one the embedded server starts
        fragments.insert(draw(st.integers(0, len(fragments))), [draw(addresses)])  # between options
    return draw(render([t for frag in fragments for t in frag]))


good_options = st.sampled_from([
    ["--name", "c2"], ["--prefix", "p"], ["--modules", "sys json"], ["--timeout", "5"], ["--no-inject"],
    ["--force"], ["--trust"], ["-m", "os"],
])


@st.composite
def one_hostile_part(draw, slot: Optional[str]) -> str:
    """A line that would work but for one hostile part of kind ``slot``: it gets past the checks
    that come before that part's, so what follows them is explored too."""
    tokens: List[str] = []
    if slot != "address":
        address = draw(st.sampled_from(["127.0.0.1:@GOOD@", "localhost:@GOOD@", "127.0.0.1:@REFUSED@",
                                        "[::1]:@REFUSED@", None, None]))
        if address is not None:
            tokens.append(shlex.quote(address))
    for fragment in draw(st.lists(good_options, max_size=2)):
        tokens += [shlex.quote(t) for t in fragment]
    if slot is not None:
        tokens.append(draw(render(draw(SLOTS[slot]))))
    return " ".join(draw(st.permutations(tokens)))


def name_lines(extra_flags: List[str]):
    @st.composite
    def lines(draw) -> str:
        if draw(st.integers(0, 9)) == 0:
            return draw(text)
        fragments = st.one_of(names.map(lambda n: [n]), stray.map(lambda s: [s]),
                              st.sampled_from([[f] for f in extra_flags] or [["--"]]), text.map(lambda t: [t]))
        tokens = [t for frag in draw(st.lists(fragments, max_size=4)) for t in frag]
        return draw(render(tokens))

    return lines()


LINES = {
    "rpyc_connect": connect_lines(),
    "rpyc_disconnect": name_lines(["--all"]),
    "rpyc_reconnect": name_lines([]),
    "rpyc_connections": name_lines([]),
    "rpyc_who": name_lines(["*", "x*", "[", "[!a]*", "?", "_*", "**", "[]]", "conn"]),
    "rpyc_trace": name_lines(["on", "off", "ON", "on off"]),
}

# Known-hostile lines, always run (whatever the random draw), one list per magic.
HOSTILE = {
    "rpyc_connect": [
        "'unbalanced", '"also', "\\", "127.0.0.1:@GOOD@ --name if", "127.0.0.1:@GOOD@ --name ''",
        "127.0.0.1:@REFUSED@", "127.0.0.1:@REFUSED@ --force", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:abc",
        "127.0.0.1 --port 99999999999999999999", "127.0.0.1:1 --port 2", "[::1", "[::1]x", "a b",
        "127.0.0.1:@GOOD@ --timeout nan", "127.0.0.1:@GOOD@ --timeout -inf", "127.0.0.1:@GOOD@ --timeout=inf",
        "127.0.0.1:@GOOD@ --timeout 1e7", "--timeout 1e-300", "127.0.0.1:@GOOD@ --timeout 1e-300",
        "127.0.0.1:@GOOD@ --modules '=json a=b=c'", "127.0.0.1:@GOOD@ --modules 'sys..os'",
        "127.0.0.1:@GOOD@ --prefix 1", "127.0.0.1:@GOOD@ --prefix i --modules f", "--port 5",
        "--ssl", "127.0.0.1:@GOOD@ --keyfile k.pem", "127.0.0.1:@GOOD@ --ssl --ca-certs /nonexistent",
        "127.0.0.1:@GOOD@ --certfile /dev/null", "--ssh-key k", "--ssh '' ", "--ssh u@127.0.0.1:1 --ssl",
        "--ssh u@127.0.0.1:1", "--ssh '-oProxyCommand=false@127.0.0.1:1'", "--ssh=-oProxyCommand=false@127.0.0.1:1",
        "--ssh=-oProxyCommand=false", "--ssh=u@-oProxyCommand=false",
        "no-such-host.invalid", "a\x00b:1", "\ud800:1", "-- 127.0.0.1:@GOOD@ extra", "127.0.0.1:@GOOD@ --all",
        "--name=", "--modules", "127.0.0.1:@GOOD@ --name get_ipython", "127.0.0.1:@GOOD@ --name In --force",
        "127.0.0.1:@GOOD@ --force --name ros", "127.0.0.1:@GOOD@ --help",
    ],
    "rpyc_disconnect": ["'", "nosuch", "if", "conn --all", "--all extra", "a b", "--bogus", "conn conn", ""],
    "rpyc_reconnect": ["'", "nosuch", "if", "--all", "a b", "--", "", "conn"],
    "rpyc_connections": ["'", "x", "--all", "--", ""],
    "rpyc_who": ["'", "nosuch", "conn", "conn *", "nosuch *", "[", "conn [", "a b c", "--all", "\x00", "", "*",
                 "_*", "conn ''"],
    "rpyc_trace": ["'", "maybe", "on off", "ON", "--all", "", "on", "off", "off", "\x00", "on on"],
}


# -- the property ----------------------------------------------------------------------------


def quietly(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


class Harness:
    """Runs one magic call and checks the property; puts the shell back afterwards."""

    def __init__(self, ip, guard: NetworkGuard, server, base: bool) -> None:
        self.ip = ip
        self.guard = guard
        self.server = server
        self.refused = free_port()
        self.base = base
        self.base_names = ("conn", "rsys", "ros")
        self.base_objects: Dict[str, Any] = {}
        quietly(ip.run_line_magic, "config", "RpycMagics.connect_timeout = 1")
        if base:
            self.open_base()

    @property
    def registry(self):
        return self.ip.magics_manager.registry["RpycMagics"].registry

    def open_base(self) -> None:
        quietly(self.ip.run_line_magic, "rpyc_connect", self.server.address)
        self.base_objects = {n: self.ip.user_ns[n] for n in self.base_names}
        self.base_session = self.registry.sessions["conn"]

    def base_intact(self) -> bool:
        ns = self.ip.user_ns
        return (
            self.registry.sessions.get("conn") is self.base_session
            and self.base_session.conn is self.base_objects["conn"]
            and not self.base_objects["conn"].closed
            and all(ns.get(n, None) is v for n, v in self.base_objects.items())
        )

    def check(self, magic: str, line: str) -> None:
        ip, ns = self.ip, self.ip.user_ns
        line = line.replace(GOOD, str(self.server.port)).replace(REFUSED, str(self.refused))
        full = dict(ns)
        visible = {k: v for k, v in ns.items() if not k.startswith("_")}
        sessions = dict(self.registry.sessions)
        conns = {n: s.conn for n, s in sessions.items()}
        injected = {n: dict(s.injected) for n, s in sessions.items()}
        kids = set(children_of(os.getpid()))
        self.guard.violations.clear()  # each example answers for its own (shrinking needs that)
        try:
            try:
                quietly(ip.run_line_magic, magic, line)
            except UsageError as e:
                failed: Optional[str] = str(e)
            else:
                failed = None
            assert self.guard.violations == [], (line, self.guard.violations)
            if failed is not None:
                assert failed.strip(), line
                if "\n" not in line:  # what a cell can hold: the error is one line too
                    assert "\n" not in failed, (line, failed)
                self.assert_unchanged(line, visible, sessions, conns, injected, kids)
            else:
                self.assert_success_is_real(line, visible, kids)
        finally:
            self.restore(full)

    def assert_unchanged(self, line, visible, sessions, conns, injected, kids) -> None:
        ns = self.ip.user_ns
        now = {k: v for k, v in ns.items() if not k.startswith("_")}
        assert now.keys() == visible.keys(), (line, now.keys() ^ visible.keys())
        for k, v in visible.items():
            assert now[k] is v, (line, k)
        assert self.registry.sessions.keys() == sessions.keys(), line
        for name, s in sessions.items():
            assert self.registry.sessions[name] is s and s.conn is conns[name], (line, name)
            assert s.injected.keys() == injected[name].keys(), (line, name)
            assert all(s.injected[k] is v for k, v in injected[name].items()), (line, name)
        assert wait_until(lambda: set(children_of(os.getpid())) <= kids, 5), (line, "a process was left behind")
        if self.base:
            assert self.base_intact(), line
            assert ns["ros"].getpid() == self.server.pid, line  # and it still works

    def assert_success_is_real(self, line, visible, kids) -> None:
        ns = self.ip.user_ns
        for name, value in ns.items():  # every name it bound is one the user can type
            if not name.startswith("_") and (name not in visible or visible[name] is not value):
                assert name.isidentifier() and not keyword.iskeyword(name), (line, name)
        # every connection a successful call leaves open answers a call
        for name, s in list(self.registry.sessions.items()):
            assert s.conn is not None and not s.conn.closed, (line, name)
            timeout = s.conn._config["sync_request_timeout"]
            if timeout is not None and timeout < 5:  # a tiny --timeout is the user's choice: not a failure
                s.conn._config["sync_request_timeout"] = 5
            assert s.conn.eval("6 * 7") == 42, (line, name)
        quietly(self.ip.run_line_magic, "rpyc_disconnect", "--all")
        assert not self.registry.sessions, line
        leftover = {k for k in self.ip.user_ns if not k.startswith("_")} - visible.keys()
        assert not leftover, (line, leftover)  # closing everything removed every name it added
        assert wait_until(lambda: set(children_of(os.getpid())) <= kids, 10), (line, "a process was left behind")

    def restore(self, full: Dict[str, Any]) -> None:
        """Close what the call opened, and give the shell back its namespace (and the base connection)."""
        ns = self.ip.user_ns
        intact = self.base and self.base_intact()
        for s in list(self.registry.sessions.values()):
            if not (intact and s is self.base_session):
                quietly(self.registry.close, s)
        ns.clear()
        ns.update(full)
        if self.base and not intact:
            for n in self.base_names:
                if ns.get(n, None) is self.base_objects[n]:
                    del ns[n]
            self.open_base()


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)


@pytest.fixture
def harness(shell, classic_server, network_guard):
    return Harness(shell, network_guard, classic_server, base=False)


@pytest.fixture
def harness_with_base(shell, classic_server, network_guard):
    return Harness(shell, network_guard, classic_server, base=True)


@pytest.mark.parametrize("magic", sorted(HOSTILE))
@pytest.mark.parametrize("base", [False, True], ids=["nothing-open", "one-open"])
def test_known_hostile_lines(shell, classic_server, network_guard, magic, base):
    h = Harness(shell, network_guard, classic_server, base=base)
    for line in HOSTILE[magic]:
        h.check(magic, line)


@settings(max_examples=150, **SETTINGS)
@given(line=LINES["rpyc_connect"])
@example(line="'")
def test_connect_never_raises_anything_but_usage_error(harness, line):
    harness.check("rpyc_connect", line)


@pytest.mark.parametrize("slot", [None, *SLOTS])
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_connect_with_one_hostile_part(harness, slot, data):
    harness.check("rpyc_connect", data.draw(one_hostile_part(slot)))


@pytest.mark.parametrize("slot", [None, *SLOTS])
@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_connect_leaves_an_open_connection_alone(harness_with_base, slot, data):
    harness_with_base.check("rpyc_connect", data.draw(one_hostile_part(slot)))


@pytest.mark.parametrize("magic", ["rpyc_disconnect", "rpyc_reconnect", "rpyc_connections", "rpyc_who",
                                   "rpyc_trace"])
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_other_magics_never_raise_anything_but_usage_error(harness, magic, data):
    harness.check(magic, data.draw(LINES[magic]))


@pytest.mark.parametrize("magic", ["rpyc_disconnect", "rpyc_reconnect", "rpyc_connections", "rpyc_who",
                                   "rpyc_trace"])
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_other_magics_leave_an_open_connection_alone(harness_with_base, magic, data):
    harness_with_base.check(magic, data.draw(LINES[magic]))
