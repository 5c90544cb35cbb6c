"""Remote execution under control, tested in real ipykernels through ``jupyter_client``.

Live output, interrupts, timeouts, busy/lost/stale connections, ``%rpyc_debug``,
``%%rpyc`` and threads: every test drives a real kernel from the ``ipyrpyc``
kernelspec against a real ``rpyc_classic`` (nothing of ours on the server) or the
embedded server, all on 127.0.0.1.  Timing bounds are the issue's 2 s for interrupts, the
next cell and reconnects (measured: 0.2-1.0 s), and the limit + 1.5 s for timeouts (see
TIMEOUT_SLACK).
"""

from __future__ import annotations

import ast
import os
import signal
import threading
import time
from pathlib import Path
from typing import List

import pytest
import rpyc

from tests.support.kernels import Run, fails, ok, run, state_of, usage_error, value
from tests.support.processes import StockServer, children_of, pid_alive, quiet_port, wait_until

BOUND = 2.0  # the bound for an interrupt, the next cell, a reconnect
NAME = "lab"  # a connection name that cannot appear in a message by accident


# -- a stock server whose own stdout we can read ----------------------------------------------
class LogServer(StockServer):
    """``rpyc_classic`` (unbuffered) on 127.0.0.1 with its stdout in a file we can read."""

    def __init__(self, log: Path, port: int = 0) -> None:
        self.log = log
        super().__init__(port=port, stdout=log)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None and pid_alive(self.pid)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def server(tmp_path):
    s = LogServer(tmp_path / "server.out")
    try:
        yield s
    finally:
        s.stop()


def connect(kernel, server: LogServer, extra: str = "") -> None:
    out = ok(kernel, f"%rpyc_connect {server.address} --name {NAME} {extra}").stdout
    assert f"pid {server.pid}" in out, out


def lines_in_order(res: Run) -> List[tuple]:
    """Completed lines of each stream, in the order their last piece arrived: [(name, line)]."""
    pending = {"stdout": "", "stderr": ""}
    out = []
    for _, name, text in res.streams:
        pending[name] += text
        while "\n" in pending[name]:
            line, pending[name] = pending[name].split("\n", 1)
            out.append((name, line))
    return out


# -- live output ------------------------------------------------------------------------------
TALK = """\
import sys, time
for i in range(3):
    print("out", i, flush=True)
    print("err", i, file=sys.stderr, flush=True)
    if i < 2:
        time.sleep(0.5)
"""
TALK_FUNCTION = "def talk():\n" + "".join("    " + line + "\n" for line in TALK.splitlines()) + "    return 42\n"
TALKED = [(name, f"{word} {i}") for i in range(3) for name, word in (("stdout", "out"), ("stderr", "err"))]


def check_live(res: Run, server: LogServer) -> None:
    """Three lines half a second apart: each arrives as printed, stdout and stderr apart and in order."""
    assert res.status == "ok", res
    assert res.stdout == "out 0\nout 1\nout 2\n", res
    assert res.stderr == "err 0\nerr 1\nerr 2\n", res
    assert lines_in_order(res) == TALKED, res
    first = res.streams[0][0]
    last = res.streams[-1][0]
    # the loop runs 1 s after its first print: batched output would arrive together at the end
    assert res.t_idle - first > 0.7, (first - res.t0, res.t_idle - res.t0)
    assert last - first > 0.7, (first - res.t0, last - res.t0)
    assert "out 0" not in server.output and "err 0" not in server.output  # sent to us, not also printed there


def test_live_output_of_a_rpyc_cell_and_of_a_remote_function(kernel, server):
    """The first stream message of a 1-s printing %%rpyc cell (and of a remote function called by an
    ordinary cell) arrives long before idle; stdout and stderr arrive apart and in order."""
    connect(kernel, server)
    check_live(run(kernel, "%%rpyc\n" + TALK), server)

    ok(kernel, f"{NAME}.execute({TALK_FUNCTION!r})")
    res = run(kernel, f"{NAME}.namespace['talk']()")
    check_live(res, server)
    assert res.result == "42"
    # the result is displayed after the output it produced
    assert [k for _, k, _, _ in res.msgs if k in ("stream", "execute_result")][-1] == "execute_result"


def test_other_clients_of_the_server_keep_their_output(kernel, server):
    """Another client of the same server printing at the same time is not captured by the kernel's cell;
    after %rpyc_disconnect the server's sys.stdout/sys.stderr are the original objects again."""
    other = rpyc.classic.connect("127.0.0.1", server.port)
    try:
        probe = "(type(sys.stdout).__name__, sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__)"
        other.execute("import sys")
        original = other.eval(probe)
        assert original[1:] == (True, True), original

        connect(kernel, server)
        assert other.eval(probe) == ("Router", False, False)  # routing is installed for the kernel …

        printed = []  # when the other client printed

        def chatter():
            for i in range(8):
                other.execute(f"print('other {i}', flush=True); import sys; print('othererr {i}', file=sys.stderr)")
                printed.append(time.monotonic())
                time.sleep(0.15)

        talker = threading.Thread(target=chatter)
        code = ("%%rpyc\nimport time\nfor i in range(8):\n    print('kernel', i, flush=True)\n"
                "    time.sleep(0.15)\n")
        talker.start()  # prints for ~1.2 s, while the cell below prints for ~1.2 s
        try:
            res = ok(kernel, code)
        finally:
            talker.join(10)
        assert not talker.is_alive() and len(printed) == 8
        assert res.t0 < printed[3] < res.t_idle, "the other client did not print while the cell ran"
        # … but the other client's prints went to the server's own stdout/stderr, not to the cell
        assert res.stdout == "".join(f"kernel {i}\n" for i in range(8)), res
        assert res.stderr == "", res
        out = server.output
        assert all(f"other {i}\n" in out for i in range(8)), out
        assert "kernel" not in out, out

        ok(kernel, f"%rpyc_disconnect {NAME}")
        # the server puts its streams back when it sees the connection close, a moment later
        assert wait_until(lambda: other.eval(probe) == original, 5), other.eval(probe)
        other.execute("print('after disconnect', flush=True)")
        assert wait_until(lambda: "after disconnect\n" in server.output, 5)
    finally:
        other.close()


def test_live_output_off(kernel, server):
    """With RpycMagics.live_output = False a new connection routes nothing: prints stay on the server."""
    ok(kernel, "%config RpycMagics.live_output = False")
    connect(kernel, server)
    res = ok(kernel, "%%rpyc\nimport sys\nprint('quiet out', flush=True)\nprint('quiet err', file=sys.stderr)\n7")
    assert res.stdout == res.stderr == "" and res.result == "7", res
    assert wait_until(lambda: "quiet out\n" in server.output, 5), server.output
    probe = "(type(__import__('sys').stdout).__name__, __import__('sys').stdout is __import__('sys').__stdout__)"
    assert value(kernel, f"{NAME}.eval({probe!r})") == ("TextIOWrapper", True)


# -- interrupts -------------------------------------------------------------------------------
SPIN = "ticks = 0\ndef spin():\n    global ticks\n    while True:\n        ticks += 1\n"


def assert_stopped(kernel, server, counter: str) -> None:
    """The remote loop no longer runs: its counter stands still; the server lives."""
    first = value(kernel, counter)
    time.sleep(0.3)
    assert value(kernel, counter) == first
    assert first > 0
    assert server.alive()


def test_interrupt_stops_a_remote_python_loop(kernel, server):
    """Interrupting a remote `while True` (a conn.execute function, then a %%rpyc cell) raises KeyboardInterrupt
    naming the connection within 2 s; the loop stops; the next cell answers within 2 s; the server lives."""
    connect(kernel, server)
    ok(kernel, f"{NAME}.execute({SPIN!r})")
    latencies = []
    for code, counter in ((f"{NAME}.namespace['spin']()", f"{NAME}.namespace['ticks']"),
                          ("%%rpyc\ncells = 0\nwhile True:\n    cells += 1\n", f"{NAME}.namespace['cells']")):
        res = fails(kernel, code, "KeyboardInterrupt", interrupt_after=1.0)
        assert res.since_interrupt < BOUND, res
        assert NAME in res.evalue and "stopped on the server" in res.evalue, res
        nxt = ok(kernel, "ros.getpid()")
        assert nxt.elapsed < BOUND and nxt.result == str(server.pid), nxt
        latencies.append((round(res.since_interrupt, 3), round(nxt.elapsed, 3)))
        assert_stopped(kernel, server, counter)
    print("interrupt -> idle, next cell:", latencies)
    assert state_of(kernel, NAME) == "alive"


def test_interrupt_during_a_c_sleep_then_busy_then_reconnect(kernel, server):
    """Interrupting a remote time.sleep(30) raises KeyboardInterrupt within 2 s; the next use fails within 2 s
    with BusyError naming the connection and %rpyc_reconnect; the table says busy; %rpyc_reconnect works at once."""
    connect(kernel, server)
    ok(kernel, "x = 41")
    res = fails(kernel, "%%rpyc\nimport time\ntime.sleep(30)\n", "KeyboardInterrupt", interrupt_after=1.0)
    assert res.since_interrupt < BOUND, res
    assert NAME in res.evalue and "still running on the server" in res.evalue, res

    busy = fails(kernel, "ros.getpid()", "BusyError", timeout=10)
    assert busy.elapsed < BOUND, busy
    assert NAME in busy.evalue and server.address in busy.evalue and f"%rpyc_reconnect {NAME}" in busy.evalue, busy
    assert state_of(kernel, NAME) == "busy"
    fails(kernel, f"%%rpyc {NAME}\n1", "BusyError", timeout=10)  # %%rpyc says the same

    again = ok(kernel, f"%rpyc_reconnect {NAME}")
    assert again.elapsed < BOUND, again
    nxt = ok(kernel, "ros.getpid(), x")
    assert nxt.elapsed < BOUND and ast.literal_eval(nxt.result) == (server.pid, 41), nxt
    assert state_of(kernel, NAME) == "alive"
    assert server.alive()
    print("interrupt -> idle", round(res.since_interrupt, 3), "busy", round(busy.elapsed, 3),
          "reconnect", round(again.elapsed, 3))


# -- lost servers, stale netrefs, automatic reconnect -----------------------------------------
def test_killed_server_then_reconnect_to_a_restarted_server(kernel, tmp_path):
    """A killed server gives ConnectionLostError naming the connection, the address and %rpyc_reconnect,
    user variables intact, state lost; %rpyc_reconnect to a server restarted on the same port restores rsys;
    a netref of the old connection raises StaleNetrefError."""
    port = quiet_port()
    first = LogServer(tmp_path / "first.out", port)
    second = None
    try:
        connect(kernel, first)
        ok(kernel, "x = 41; old_path = rsys.path; old_path[0]")
        first.kill()
        lost = fails(kernel, "rsys.path[0]", "ConnectionLostError")
        assert lost.elapsed < BOUND, lost
        for part in (f"'{NAME}'", f"127.0.0.1:{port}", f"%rpyc_reconnect {NAME}"):
            assert part in lost.evalue, lost
        assert "\n" not in lost.evalue
        # one clear error: not rpyc's EOFError with ours "during handling" of it
        shown = lost.plain_traceback
        assert "EOFError" not in shown and "During handling" not in shown, shown
        assert value(kernel, "x") == 41
        assert state_of(kernel, NAME) == "lost"

        second = LogServer(tmp_path / "second.out", port)  # rpyc_classic binds with SO_REUSEADDR
        assert second.port == port
        again = ok(kernel, f"%rpyc_reconnect {NAME}")
        assert again.elapsed < BOUND and f"pid {second.pid}" in again.stdout, again
        assert value(kernel, "ros.getpid()") == second.pid
        assert isinstance(value(kernel, "rsys.path[0]"), str)
        stale = fails(kernel, "old_path[0]", "StaleNetrefError")
        assert f"'{NAME}'" in stale.evalue, stale
        assert value(kernel, "x") == 41
        assert state_of(kernel, NAME) == "alive"
        ok(kernel, f"{NAME}.close()")  # closing it yourself is quiet too
        assert state_of(kernel, NAME) == "lost"
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_auto_reconnect_after_the_embedded_server_dies(kernel):
    """With RpycMagics.auto_reconnect, the first cell after the embedded server is killed reconnects
    transparently to a new server (new pid) and rsys works."""
    pids = []
    try:
        ok(kernel, "%config RpycMagics.auto_reconnect = True")
        ok(kernel, "%rpyc_connect")
        old = value(kernel, "ros.getpid()")
        pids.append(old)
        assert old in children_of(kernel.pid)
        ok(kernel, "rsys.path[0]")
        os.kill(old, signal.SIGKILL)  # started by this test's kernel
        assert wait_until(lambda: not pid_alive(old), 5)  # all its threads gone: its socket is closed

        res = ok(kernel, "ros.getpid(), rsys.path[0]")
        new, first = ast.literal_eval(res.result)
        pids.append(new)
        assert new != old and new in children_of(kernel.pid), (old, new)
        assert isinstance(first, str)
        assert "reconnected conn" in res.stderr, res
        assert state_of(kernel, "conn") == "alive"
    finally:
        pids.extend(children_of(kernel.pid) if pid_alive(kernel.pid) else [])
        kernel.shutdown()
        assert all(wait_until(lambda p=p: not pid_alive(p), 10) for p in pids), pids


@pytest.mark.parametrize("when", ["during the cell", "as the next cell starts"])
def test_auto_reconnect_after_a_cell_that_lost_its_server(kernel, when):
    """A cell that loses its embedded server fails with one ConnectionLostError saying that
    auto_reconnect reopens the connection when the cell ends; it does so right after the cell
    (stderr says so, the cell's own code ran once) and the next cell works on a new server.  A
    server killed just before a cell starts, while it is still exiting, is either seen by the
    check before the cell or lost by the cell: either way the cell after it works."""
    pids = []
    try:
        ok(kernel, "%config RpycMagics.auto_reconnect = True")
        ok(kernel, "%rpyc_connect")
        old = value(kernel, "ros.getpid()")
        pids.append(old)
        ok(kernel, "import os, signal, time; runs = 0")
        if when == "during the cell":
            res = run(kernel, "runs += 1\nos.kill(ros.getpid(), signal.SIGKILL)\ntime.sleep(0.5)\nros.getpid()")
            assert res.status == "error" and res.ename == "ConnectionLostError", res
            assert "auto_reconnect opens a new one when this cell ends (the cell is not run again)" in res.evalue, res
            assert "%rpyc_reconnect" not in res.evalue and "\n" not in res.evalue, res
            assert "reconnected conn to embedded server" in res.stderr, res
        else:
            kill = ok(kernel, "runs += 1; os.kill(ros.getpid(), signal.SIGKILL)")
            res = run(kernel, "ros.getpid()")  # at once: the server may still be exiting
            # seen after the killing cell, before this one, or lost by this one and reopened after it
            assert (kill.stderr + res.stderr).count("reconnected conn to embedded server") == 1, (kill, res)
            if res.status == "ok":
                assert res.result != str(old), res
            else:
                assert res.ename == "ConnectionLostError" and "auto_reconnect" in res.evalue, res
        assert value(kernel, "runs") == 1
        new = value(kernel, "ros.getpid()")
        pids.append(new)
        assert new != old and new in children_of(kernel.pid) and not pid_alive(old), (old, new)
        assert state_of(kernel, "conn") == "alive"
    finally:
        pids.extend(children_of(kernel.pid) if pid_alive(kernel.pid) else [])
        kernel.shutdown()
        assert all(wait_until(lambda p=p: not pid_alive(p), 10) for p in pids), pids


# Run on the embedded server: 0.2 s later, shut down every socket (our connection, its listener),
# then exit 1 s later: a server whose connections are gone while its process still exits.
SLOW_EXIT = """
import os, socket, threading, time
def _die():
    time.sleep(0.2)
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink('/proc/self/fd/' + fd).startswith('socket:'):
                socket.fromfd(int(fd), socket.AF_UNIX, socket.SOCK_STREAM).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    time.sleep(1)
    os._exit(3)
threading.Thread(target=_die, daemon=False).start()
"""


def test_auto_reconnect_waits_for_a_server_still_exiting(kernel):
    """The check before a cell finds the connection closed while the embedded server's process
    has not exited yet: the reconnect waits for that exit and starts a new server."""
    ok(kernel, "%config RpycMagics.auto_reconnect = True")
    ok(kernel, "%rpyc_connect")
    old = value(kernel, "ros.getpid()")
    ok(kernel, f"conn.execute({SLOW_EXIT!r})")
    time.sleep(0.6)
    assert pid_alive(old)
    res = ok(kernel, "ros.getpid()")
    assert "reconnected conn to embedded server" in res.stderr and res.result != str(old), res
    assert not pid_alive(old)


def test_without_auto_reconnect_a_lost_cell_names_rpyc_reconnect(kernel):
    """auto_reconnect off (the default): the error names %rpyc_reconnect and nothing reopens."""
    ok(kernel, "%rpyc_connect")
    old = value(kernel, "ros.getpid()")
    res = run(kernel, "import os, signal, time\nos.kill(ros.getpid(), signal.SIGKILL)\ntime.sleep(0.5)\nros.getpid()")
    assert res.ename == "ConnectionLostError" and "%rpyc_reconnect conn opens a new one" in res.evalue, res
    assert "reconnected" not in res.stderr, res
    assert wait_until(lambda: not pid_alive(old), 5)
    assert state_of(kernel, "conn") == "lost"


# -- %rpyc_debug --------------------------------------------------------------------------------
def test_rpyc_debug_answered_through_stdin(kernel, server):
    """%rpyc_debug after a remote error opens pdb on the server's frame: `p x` prints the remote local, `q` returns."""
    connect(kernel, server)
    ok(kernel, f"{NAME}.execute('def fail(n):\\n    x = \"secret-%d\" % (n * 2)\\n    raise ValueError(\"bad\")')")
    fails(kernel, f"{NAME}.namespace['fail'](21)", "ValueError")
    res = ok(kernel, "%rpyc_debug", answers=["p x", "q"])
    assert res.prompts == ["(Pdb) ", "(Pdb) "], res.prompts
    assert "'secret-42'\n" in res.stdout, res
    assert "fail()" in res.stdout and 'raise ValueError("bad")' in res.stdout, res
    assert value(kernel, "ros.getpid()") == server.pid  # the connection serves again


# -- timeouts ---------------------------------------------------------------------------------
# How much later than the limit a timed-out call may fail.  The issue says "~1 s"; the floor is
# the limit + 0.5 s (calls.SETTLE_SECONDS: how long we wait to see a stopped call end) + opening
# the control connection.  Measured: 1.16-1.66 s (Python loop) and 1.52-1.87 s (C sleep) for a
# 1 s limit on a 2-core machine under a load average of 3-5, hence 1.5 s.
TIMEOUT_SLACK = 1.5


def check_timeout(res: Run, limit: float, setting: str, where: str) -> None:
    assert res.status == "error" and res.ename == "RemoteTimeoutError", res
    assert limit - 0.1 < res.elapsed < limit + TIMEOUT_SLACK, res
    assert NAME in res.evalue and f"within {limit:g} s" in res.evalue and where in res.evalue, res
    assert setting in res.evalue, res


def test_timeout_per_connection_stops_a_python_loop(kernel, server):
    """%rpyc_connect --timeout 1: a remote loop fails with RemoteTimeoutError (a TimeoutError) naming the
    setting within 2 s, is stopped on the server, and the next call works."""
    connect(kernel, server, "--timeout 1")
    ok(kernel, f"{NAME}.execute({SPIN!r})")
    res = run(kernel, f"{NAME}.namespace['spin']()")
    check_timeout(res, 1.0, "%rpyc_connect --timeout", "stopped on the server")
    assert value(kernel, "import sys; isinstance(sys.last_value, TimeoutError)") is True
    nxt = ok(kernel, "ros.getpid()")
    assert nxt.elapsed < BOUND and nxt.result == str(server.pid), nxt
    assert_stopped(kernel, server, f"{NAME}.namespace['ticks']")
    print("timeout (loop):", round(res.elapsed, 3))


def test_timeout_per_rpyc_cell_during_a_c_sleep(kernel, server):
    """%%rpyc --timeout 1 around time.sleep(3.5): RemoteTimeoutError naming the setting within 2 s, then
    BusyError until the sleep ends, then the connection works with its own timeout again."""
    connect(kernel, server)
    res = run(kernel, "%%rpyc --timeout 1\nimport time\ntime.sleep(3.5)\n")
    check_timeout(res, 1.0, "%%rpyc --timeout", "still running on the server")
    busy = fails(kernel, "ros.getpid()", "BusyError")
    assert busy.elapsed < BOUND and f"%rpyc_reconnect {NAME}" in busy.evalue, busy
    assert wait_until(lambda: run(kernel, "ros.getpid()").status == "ok", 5, 0.2)
    assert time.monotonic() - res.t0 > 3.4  # it waited for the sleep to end
    # the cell's limit was for that cell only: the connection's 30 s apply again
    ok(kernel, "%%rpyc\nimport time\ntime.sleep(1.3)\n")
    print("timeout (sleep):", round(res.elapsed, 3), "busy", round(busy.elapsed, 3))


def test_timeout_from_the_trait(kernel, server):
    """%config RpycMagics.timeout = 1 applies to connections opened afterwards: a remote sleep fails with
    RemoteTimeoutError naming the trait, BusyError while it runs, then works."""
    ok(kernel, "%config RpycMagics.timeout = 1")
    connect(kernel, server)
    res = run(kernel, "rtime = " + NAME + ".modules.time; rtime.sleep(3.5)")
    check_timeout(res, 1.0, "%config RpycMagics.timeout", "still running on the server")
    fails(kernel, "rtime.time()", "BusyError")
    assert wait_until(lambda: run(kernel, "rtime.time()").status == "ok", 5, 0.2)
    assert time.monotonic() - res.t0 > 3.4


# -- %%rpyc -----------------------------------------------------------------------------------
def test_rpyc_cell_semantics(kernel, server):
    """%%rpyc displays its last expression (netrefs through the netref display), --push copies plain data,
    --pull brings back local copies, pulling a module needs --trust, errors show the cell's own line."""
    connect(kernel, server)
    other = rpyc.classic.connect("127.0.0.1", server.port)
    try:
        path = other.eval("repr(__import__('sys').path)")
    finally:
        other.close()
    assert ok(kernel, "%%rpyc\nimport sys; sys.path").result == path
    assert ok(kernel, "%%rpyc\nsix = 6\nsix * 7").result == "42"
    assert ok(kernel, "%%rpyc\nseven = 7\n").results == []

    ok(kernel, "lst = [1, 2, 3]; d = {'a': 1, 'b': [2, 3], 'c': (None, True, 1.5, b'z')}; s = 'hi'; n = 10")
    res = ok(kernel, "%%rpyc --push lst,d,s,n --pull total,out,back,kinds\n"
                     "total = sum(lst) + d['a'] + n\n"
                     "out = [s, d['b'], total]\n"
                     "back = d\n"
                     "kinds = (type(lst).__name__, type(d).__name__, type(d['b']).__name__)\n"
                     "total\n")
    assert res.result == "17"
    got = value(kernel, "(type(total).__name__, total, type(out).__name__, out, type(back).__name__, "
                        "back == d and back is not d, kinds)")
    assert got == ("int", 17, "list", ["hi", [2, 3], 17], "dict", True, ("list", "dict", "list"))
    assert value(kernel, "type(out) is list and type(out[1]) is list and type(back['b']) is list") is True

    line = usage_error(kernel, "%%rpyc --pull mod\nimport os as mod\n")
    assert "--pull mod" in line and "--trust" in line, line
    assert usage_error(kernel, "%%rpyc --pull nothing_here\n1\n")

    err = fails(kernel, "%%rpyc\na = 1\nb = {'k': 1}\nc = b['missing_key']\nd = 2\n", "KeyError")
    assert "c = b['missing_key']" in err.plain_traceback, err.plain_traceback
    assert "missing_key" in err.evalue
    err = fails(kernel, "%%rpyc\nimport math\nmath.sqrt(-1)\n", "ValueError")
    assert "math.sqrt(-1)" in err.plain_traceback, err.plain_traceback


# -- threads ----------------------------------------------------------------------------------
WORKERS = r'''
import threading
NAME.execute("def echo(v):\n    return v")
echo = NAME.namespace["echo"]
SERVER_PID, PATH0 = ros.getpid(), rsys.path[0]
errors, done = [], []

def worker(k):
    try:
        for i in range(200):
            assert ros.getpid() == SERVER_PID
            assert rsys.path[0] == PATH0
            arg = ("worker", k, i, "x" * (i % 7))
            got = echo(arg)
            assert got == arg, (got, arg)
        done.append(k)
    except BaseException as e:
        errors.append("%s: %r" % (k, e))

threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
for t in threads:
    t.start()
'''.replace("NAME", NAME)


def test_threads_and_cells_share_a_connection(kernel, server):
    """4 kernel threads x 200 rounds of remote calls (each echo checked against its own argument) while
    the main thread runs cells with remote calls: all complete within 60 s, no crossed replies, no errors."""
    connect(kernel, server)
    ok(kernel, WORKERS)
    deadline = time.monotonic() + 60
    cells = 0
    while True:
        assert time.monotonic() < deadline, "the threads did not finish within 60 s"
        cells += 1
        got = value(kernel, f"(ros.getpid(), echo(('main', {cells})), sum(t.is_alive() for t in threads))")
        assert got[:2] == (server.pid, ("main", cells)), got
        res = ok(kernel, f"%%rpyc\nimport os\nmain_{cells} = ({cells}, os.getpid())\nmain_{cells}")
        assert ast.literal_eval(res.result) == (cells, server.pid)
        if got[2] == 0:
            break
    assert cells >= 2, "the main thread ran no cell while the threads worked"
    got = value(kernel, "[t.join(60) for t in threads]; (sorted(done), errors, [t.is_alive() for t in threads])")
    assert got == ([0, 1, 2, 3], [], [False] * 4), got
