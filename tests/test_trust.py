"""The trust boundary: what a server can do to the kernel, by default and with ``--trust``.

One real kernel holds four connections: to its embedded server and to a stock ``rpyc_classic``,
each plain and ``--trust``.  Code on the server plays the attacker: it finds its own end of the
kernel's connection by walking its stack (as any server code can; no help from the kernel) and
tries to import modules in the kernel, run code there, read the attributes of a local object and
of a local function the kernel handed it, and unpickle a malicious object into the kernel through
``%%rpyc --pull``.  Whether code ran in the kernel is checked outside it: a marker file.
"""

from __future__ import annotations

import pytest

from tests.support.kernels import Kernel, ok, run, value
from tests.support.processes import StockServer, children_of, pid_alive, wait_until

SECRET = "hunter2-7f3a"  # held by the kernel's objects; must never reach the server by default

ATTACKER = r'''
import os, sys

def _my_end_of_the_kernel_connection():
    frame = sys._getframe(1)
    while frame is not None:
        conn = frame.f_locals.get("self")
        if frame.f_code.co_name == "_dispatch_request" and hasattr(conn, "_config"):
            return conn
        frame = frame.f_back
    raise RuntimeError("no serving connection on the stack")

def _attempt(fn):
    try:
        return ("got", repr(fn())[:300])
    except Exception as e:
        return ("refused", type(e).__name__)

def attack(marker, obj, func):
    """Everything a hostile server might try with what the kernel handed it."""
    c = _my_end_of_the_kernel_connection()
    import rpyc.utils.classic
    script = "open(%r, 'w').write('code from the server ran here')" % marker
    return (
        ("getmodule", _attempt(lambda: c.root.getmodule("os").getpid())),
        ("getmodule sys", _attempt(lambda: len(c.root.getmodule("sys").modules))),
        ("execute", _attempt(lambda: c.root.execute(script))),
        ("eval", _attempt(lambda: c.root.eval("__import__('os').getpid()"))),
        ("obj.secret", _attempt(lambda: obj.secret)),
        ("getattr(obj)", _attempt(lambda: getattr(obj, "secret"))),
        ("obj.__getattribute__", _attempt(lambda: obj.__getattribute__("secret"))),
        ("obj.__dict__", _attempt(lambda: dict(obj.__dict__))),
        ("obj.__class__.__init__.__globals__", _attempt(lambda: sorted(obj.__class__.__init__.__globals__))),
        ("obtain(obj)", _attempt(lambda: rpyc.utils.classic.obtain(obj).secret)),
        ("obj.__reduce_ex__", _attempt(lambda: obj.__reduce_ex__(2))),
        ("func.__globals__", _attempt(lambda: sorted(func.__globals__))),
        ("func.__globals__ sys.modules", _attempt(lambda: len(func.__globals__["sys"].modules))),
        ("func.__code__", _attempt(lambda: func.__code__.co_consts)),
        ("func.__closure__", _attempt(lambda: func.__closure__)),
        ("call func", _attempt(lambda: func(21))),  # allowed: calling what you were handed
    )

class Evil(object):
    """Unpickling this runs code: what a malicious server would hand to a pull."""
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        return (exec, ("open(%r, 'w').write('unpickled on the kernel')" % self.marker,))
'''

# name: (%rpyc_connect arguments without the name, trusted)
CONNECTIONS = {
    "emb": ("", False),
    "embt": ("--trust", True),
    "stock": ("{stock}", False),
    "stockt": ("{stock} --trust", True),
}


@pytest.fixture(scope="module")
def tk(tmp_path_factory):
    """A kernel with the four connections, a local object and function to hand out, and the attacker
    code on each server."""
    stock = StockServer()
    kernel = None
    servers = []
    try:
        kernel = Kernel()
        kernel.markers = tmp_path_factory.mktemp("markers")
        kernel.kernel_pid = value(kernel, "__import__('os').getpid()")
        ok(kernel, f"SECRET = {SECRET!r}\nimport sys\n"
                   "class Box:\n    def __init__(self):\n        self.secret = SECRET\n"
                   "box = Box()\ndef double(n):\n    return 2 * n\n")
        for name, (args, trusted) in CONNECTIONS.items():
            out = ok(kernel, f"%rpyc_connect {args.format(stock=stock.address)} --name {name} --no-inject").stdout
            assert f" as {name}" in out and ("[trusted" in out) == trusted, out
            ok(kernel, f"{name}.execute({ATTACKER!r})")
        servers = children_of(kernel.pid)
        assert len(servers) == 2, servers  # one embedded server per embedded connection
        yield kernel
    finally:
        if kernel is not None:
            kernel.shutdown()
        stock.stop()
        assert all(wait_until(lambda p=p: not pid_alive(p), 10) for p in servers)


@pytest.mark.parametrize("name", ["emb", "stock"])
def test_by_default_the_server_gets_nothing_of_the_kernel(tk, name):
    marker = tk.markers / f"{name}-attack"
    outcome = dict(value(tk, f"{name}.namespace['attack']({str(marker)!r}, box, double)"))
    assert outcome.pop("call func") == ("got", "42"), outcome  # the one thing handed over: a call
    got = {what: result for what, result in outcome.items() if result[0] != "refused"}
    assert not got, got
    assert not marker.exists()
    assert SECRET not in repr(outcome) and str(tk.kernel_pid) not in repr(outcome)
    print(name, "refused:", {what: result[1] for what, result in outcome.items()})


@pytest.mark.parametrize("name", ["embt", "stockt"])
def test_trusted_connections_let_the_server_in(tk, name):
    """Documented: with --trust the server can import modules, run code and evaluate in the kernel."""
    marker = tk.markers / f"{name}-attack"
    outcome = dict(value(tk, f"{name}.namespace['attack']({str(marker)!r}, box, double)"))
    assert outcome["getmodule"] == ("got", str(tk.kernel_pid)), outcome
    assert outcome["eval"] == ("got", str(tk.kernel_pid)), outcome
    assert outcome["execute"][0] == "got", outcome
    assert marker.read_text() == "code from the server ran here"
    assert outcome["obj.secret"] == ("got", repr(SECRET)), outcome
    assert outcome["call func"] == ("got", "42"), outcome


@pytest.mark.parametrize("name", ["emb", "stock"])
def test_pull_never_unpickles_by_default(tk, name):
    """%%rpyc --pull of an object whose unpickling runs code: refused with a UsageError naming --trust,
    also nested in plain data; the kernel ran nothing (no marker) and its namespace is unchanged."""
    for i, cell in enumerate(["evil = Evil({marker!r})", "evil = [1, {{'k': (Evil({marker!r}),)}}]"]):
        marker = tk.markers / f"{name}-pull-{i}"
        res = run(tk, f"%%rpyc {name} --pull evil\n{cell.format(marker=str(marker))}\n")
        assert res.status == "error" and res.ename == "UsageError" and not res.errors, res
        assert "--pull evil" in res.stderr and "--trust" in res.stderr and len(res.stderr.splitlines()) == 1, res
        assert not marker.exists()
        assert value(tk, "'evil' in globals()") is False
    # plain data still comes back as local copies
    ok(tk, f"%%rpyc {name} --pull plain\nplain = {{'a': [1, 2.5, None], 'b': (b'x', 'y')}}\n")
    assert value(tk, "type(plain).__name__, plain") == ("dict", {"a": [1, 2.5, None], "b": (b"x", "y")})


@pytest.mark.parametrize("name", ["embt", "stockt"])
def test_pull_of_a_picklable_object_works_when_trusted(tk, name):
    ok(tk, f"%%rpyc {name} --pull frac\nimport fractions\nfrac = fractions.Fraction(1, 3)\n")
    got = value(tk, "import fractions, rpyc\n(type(frac) is fractions.Fraction, frac == fractions.Fraction(1, 3), "
                    "isinstance(frac, rpyc.BaseNetref))")
    assert got == (True, True, False)


def test_trust_column(tk):
    text = ok(tk, "%rpyc_connections").results[0]["text/plain"]
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[2:]}
    assert rows == {"emb": "no", "embt": "yes", "stock": "no", "stockt": "yes"}, text
