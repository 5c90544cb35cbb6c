"""Many servers at once: groups of connections, and one call on every member in parallel.

A :class:`Group` is a set of named sessions opened together and bound to one name; it maps
member names to their connections.  :func:`open_all` opens sessions side by side (rpyc
connects and shakes hands synchronously, so each gets a thread of its own).  :class:`Runner`
runs a cell, or a function, on several sessions: each member gets one asynchronous request of
rpyc's own (``AsyncResult``), all of them are sent before any answer is awaited, and one loop
serves every member's connection until each has answered, failed, timed out or been lost, so
that live output arrives as it is printed, labelled by member.  The semantics of each member's
request are those of :class:`~.calls.CallGuard`: a busy connection fails at once, a call that
runs out of time or is interrupted is stopped on the server, a lost server is reported, and the
other members carry on.  Nothing here knows IPython: the magics (``magics_groups``) talk to the
user.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _rpyc, transfer
from .calls import SETTLE_SECONDS
from .errors import CallInterrupted, ConnectError, GroupError, RemoteTimeoutError, SessionError
from .remote.codec import export
from .session import Session
from .text import first_line

CONNECT_THREADS = 32  # sessions opened at the same time
POLL_SECONDS = 0.05  # longest wait between two looks at the members while nothing arrives
MESSAGES_PER_LOOK = 100  # messages served for one member before the next member's turn


def member_names(group: str, count: int) -> List[str]:
    """``lab1``, ``lab2`` … (``node1_1`` … when the group's name ends with a digit)."""
    sep = "_" if group[-1:].isdigit() else ""
    return [f"{group}{sep}{i}" for i in range(1, count + 1)]


def open_all(sessions: Sequence[Session], opener: Optional[Callable[[Session], Any]] = None,
             close_failed: bool = True) -> Dict[str, Optional[str]]:
    """Open the sessions side by side (``opener(session)``, default ``session.open()``); member
    name -> None when it opened, else the one-line reason (and, with ``close_failed``, the
    session is closed).  Interrupted, it closes them all and re-raises."""

    def one(session: Session) -> Optional[str]:
        try:
            (opener or Session.open)(session)
            return None
        except ConnectError as e:
            reason = str(e)
        except Exception as e:  # a server that breaks the protocol, an SSH failure …
            reason = f"cannot connect to {session.address}: {type(e).__name__}: {first_line(e)}"
        if close_failed:
            session.close()
        return reason

    if not sessions:
        return {}
    try:
        with ThreadPoolExecutor(min(CONNECT_THREADS, len(sessions)), thread_name_prefix="ipyrpyc-connect") as pool:
            return dict(zip([s.name for s in sessions], pool.map(one, sessions)))
    except BaseException:
        for session in sessions:
            session.close()
        raise


def function_source(f: Any) -> Tuple[str, str]:
    """``(name, source of its def)`` of a function to define on the servers; ``ValueError`` with
    the reason when it cannot be sent (a lambda, a closure, no source)."""
    name = getattr(f, "__name__", None)
    code = getattr(f, "__code__", None)
    if not inspect.isfunction(f) or name is None or code is None:
        raise ValueError(f"only a function defined with def (or the name of one on the servers) can be sent, "
                         f"not {type(f).__name__}")
    if name == "<lambda>":
        raise ValueError("a lambda cannot be sent: define the function with def")
    if code.co_freevars:
        raise ValueError(f"{name} uses variables of the function around it ({', '.join(code.co_freevars)}): "
                         "define it at the top level")
    try:
        source = textwrap.dedent(inspect.getsource(f))
    except (OSError, TypeError) as e:
        raise ValueError(f"the source of {name} is not available ({first_line(e)})") from None
    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not defs:
        raise ValueError(f"the source of {name} is not a plain def")
    lines = source.splitlines(True)
    return name, "".join(lines[defs[0].lineno - 1:defs[0].end_lineno])  # without its decorators


# -- what a parallel call gave ------------------------------------------------------------------------
class Results(Mapping):
    """Member name -> value, for every member whose call succeeded, in member order.

    ``errors`` maps the other members to their exception (``raise results.errors[name]`` shows
    that one's traceback in full); ``members`` lists every member that took part.  Displayed as
    a table: each remote value through the one-round-trip display path, capped.
    """

    def __init__(self, values: Dict[str, Any], errors: Dict[str, BaseException], members: Sequence[str],
                 describe: Optional[Callable[["Results"], Dict[str, str]]] = None) -> None:
        self._values = values
        self.errors = errors
        self.members = list(members)
        self._describe = describe
        self._texts: Optional[Dict[str, str]] = None
        self.has_value = True  # a cell that ends with a statement gives None on every member
        self.pulled: Dict[str, Dict[str, Any]] = {}  # %%rpyc --pull: name -> {member: value}

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # -- display -------------------------------------------------------------------------------
    def texts(self) -> Dict[str, str]:
        """member -> the text shown for its value or error (fetched once, all at the same time)."""
        if self._texts is None:
            texts = self._describe(self) if self._describe is not None else {m: repr(v) for m, v in self.items()}
            for name, error in self.errors.items():
                texts[name] = f"<failed: {type(error).__name__}: {first_line(error)}>"
            self._texts = {m: texts[m] for m in self.members if m in texts}
        return self._texts

    def __repr__(self) -> str:
        texts = self.texts()
        if not texts:
            return "<no results>"
        width = max(len(m) for m in texts)
        rows = []
        for member, text in texts.items():
            lines = text.splitlines() or [""]
            rows.append(f"{member.ljust(width)}  {lines[0]}")
            rows.extend(f"{'':{width}}  {line}" for line in lines[1:])
        return "\n".join(rows)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{html.escape(m)}</td><td style=\"text-align:left\"><pre>{html.escape(t)}</pre></td></tr>"
            for m, t in self.texts().items())
        return (f'<table class="ipyrpyc-results"><thead><tr><th>member</th><th>value</th></tr></thead>'
                f"<tbody>{rows}</tbody></table>")


def group_error(results: Results, what: str, kind: str) -> GroupError:
    """The error of a parallel call in which some members failed."""
    failed = list(results.errors)
    return GroupError(f"{len(failed)} of {len(results.members)} members failed {what}: {', '.join(failed)}",
                      results, kind)


# -- live output, labelled ----------------------------------------------------------------------------
class StreamLabels:
    """Writes each member's output with ``[stdout:NAME]`` / ``[stderr:NAME]`` above it whenever
    the member or the stream changes, as ipyparallel's ``%%px --stream`` does.  Output is passed
    on line by line as it arrives (members print at the same time, their words must not
    interleave); a last line without its newline follows when the call ends."""

    def __init__(self) -> None:
        self.last: Optional[str] = None
        self.at_line_start = True
        self.pending: Dict[Tuple[str, str], str] = {}
        self.lock = threading.Lock()

    def writer(self, member: str) -> Callable[[str, str], None]:
        def write(name: str, text: str) -> None:
            self.write(member, name, text)

        return write

    def write(self, member: str, name: str, text: str) -> None:
        name = "stderr" if name == "stderr" else "stdout"
        with self.lock:
            head, sep, tail = (self.pending.pop((member, name), "") + text).rpartition("\n")
            if tail:
                self.pending[(member, name)] = tail
            if sep:
                self._emit(member, name, head + sep)

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, {}
            for (member, name), text in pending.items():
                self._emit(member, name, text)

    def _emit(self, member: str, name: str, text: str) -> None:
        prefix = f"[{name}:{member}]"
        if prefix != self.last:
            text = ("" if self.at_line_start else "\n") + prefix + "\n" + text
            self.last = prefix
        self.at_line_start = text.endswith("\n")
        stream = sys.stderr if name == "stderr" else sys.stdout
        stream.write(text)
        stream.flush()


@contextmanager
def labelled(sessions: Sequence[Session]) -> Iterator[StreamLabels]:
    labels = StreamLabels()
    for s in sessions:
        s.sink.redirect = labels.writer(s.name)
    try:
        yield labels
    finally:
        for s in sessions:
            s.sink.redirect = None
        labels.flush()


# -- one request per member, all in flight --------------------------------------------------------------
class Call:
    """One member's part of a parallel call."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.name = session.name
        self.conn = session.conn
        self.record = session.record
        self.result: Any = None
        self.limit: Optional[float] = None
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.filename = ""
        self.chunk: Any = None
        if self.conn is None or self.record is None or self.record.guard is None:
            self.error = SessionError(f"{self.name} is not connected: %rpyc_reconnect {self.name}")
        elif self.record.helper is None:
            self.error = SessionError(f"{session.address} cannot run ipyrpyc's helper, so it cannot run "
                                      "code in parallel")

    @property
    def helper(self) -> Any:
        assert self.record is not None
        return self.record.helper

    @property
    def guard(self) -> Any:
        assert self.record is not None
        return self.record.guard


def _each(calls: Sequence[Call], step: Callable[[Call], Any]) -> bool:
    """``step(call)`` for each member still without an error, one after the other; a failure is
    that member's error.  Returns False when Ctrl-C stopped it (the members not reached are
    then stopped too)."""
    for i, call in enumerate(calls):
        if call.error is not None:
            continue
        try:
            step(call)
        except KeyboardInterrupt:
            for rest in calls[i:]:
                if rest.error is None:
                    rest.error = CallInterrupted(f"interrupted a copy on {rest.name}")
            return False
        except Exception as e:
            call.error = e
    return True


def _pulled_into(pulled: Dict[str, Dict[str, Any]], call: Call, results: Sequence[Any]) -> None:
    """Keep the copies one member gave for ``--pull``; its first problem is its error."""
    for result in results:
        if result.problem == "missing":
            raise SessionError(f"--pull {result.name}: not defined on {call.name}")
        if result.problem is not None:
            message = result.message if call.session.target.trust else transfer.pickle_refusal(result.message)
            raise SessionError(f"--pull {result.name} on {call.name}: {message}")
    for result in results:
        pulled[result.name][call.name] = result.value


def gather(calls: Sequence[Call], send: Callable[[Call], Any], timeout: Optional[float], timeout_hint: str) -> bool:
    """Send one asynchronous request to each call's member (``send(call)`` returns rpyc's
    ``AsyncResult``) and serve every member's connection until each call has its value or its
    error.  ``timeout``: seconds each member may take (default: its connection's timeout).
    Returns False when Ctrl-C stopped it (the members still running are then stopped)."""
    running: List[Call] = []
    try:
        for call in calls:
            if call.error is not None:
                continue
            if _rpyc.is_closed(call.conn) or _rpyc.peer_closed(call.conn):
                call.error = call.guard.lost(None)  # its server went away since: not worth a send that fails
                continue
            try:
                call.guard.check_busy(call.conn)
                call.limit = timeout if timeout is not None else _rpyc.call_timeout(call.conn)
                call.result = send(call)
                call.result.set_expiry(call.limit)
            except Exception as e:
                call.error = call.guard.lost(e) if _rpyc.is_closed(call.conn) else e
            else:
                running.append(call)
        while running:
            _rpyc.wait_readable([c.conn for c in running], POLL_SECONDS)
            expired = []
            for call in list(running):
                state = _look(call)
                if state != "running":
                    running.remove(call)
                if state == "expired":
                    expired.append(call)
            if expired:
                _abandon(expired, "the call that timed out")
                for call in expired:
                    call.error = RemoteTimeoutError(
                        f"{call.name}: no answer from {call.session.address} within {call.limit:g} s "
                        f"({_where(call)}); {timeout_hint}")
    except KeyboardInterrupt:
        _abandon(running, "the interrupted call")
        for call in calls:
            if call.error is not None or (call.result is not None and call not in running):
                continue  # failed, or finished before the interrupt
            if call.result is None:
                call.error = CallInterrupted(f"interrupted before {call.name} was asked")
                continue
            if _rpyc.result_arrived(call.result):
                _take(call)  # it finished, or the interrupt stopped it
                if not isinstance(call.error, KeyboardInterrupt):
                    continue
            call.error = CallInterrupted(f"interrupted {call.name} ({_where(call)})")
        return False
    return True


def _stopped(call: Call, stopped: bool) -> bool:
    """Whether Ctrl-C interrupted ``call`` and it was ``stopped`` (or is still running)."""
    return isinstance(call.error, CallInterrupted) and (call.guard.pending is None) == stopped


def _where(call: Call) -> str:
    return "still running on the server" if call.guard.pending is not None else "stopped on the server"


def _take(call: Call) -> None:
    try:
        call.value = call.result.value
    except BaseException as e:  # the server's answer: an exception of the remote code (even KeyboardInterrupt)
        call.error = e


def _serve(conn: Any, most: int) -> None:
    """Serve up to ``most`` messages that already arrived (replies, and the server's requests:
    live output); EOFError when the connection ended."""
    for _ in range(most):
        if not conn.poll(0):
            return


def _look(call: Call) -> str:
    """Serve what arrived for one member; ``running``, ``done`` or ``expired``."""
    conn = call.conn
    ended = False
    try:
        _serve(conn, MESSAGES_PER_LOOK)
        if not _rpyc.result_arrived(call.result) and (_rpyc.is_closed(conn) or _rpyc.peer_closed(conn)):
            ended = True
            _serve(conn, 100_000)  # what the server sent before it went away comes first
    except EOFError:
        ended = True
    except Exception as e:  # rpyc could not make sense of what the server sent
        try:
            conn.close()
        except Exception:
            pass
        call.error = call.guard.lost(f"the server sent a malformed message, {type(e).__name__}: {first_line(e)}")
        return "done"
    if _rpyc.result_arrived(call.result):
        _take(call)
        return "done"
    if ended or _rpyc.is_closed(conn):
        call.error = call.guard.lost(None)
        return "done"
    if call.result.expired:
        return "expired"
    return "running"


def _abandon(calls: Sequence[Call], why: str) -> None:
    """Stop the remote work of ``calls`` (each member through its own control connection, all at
    once), then wait up to SETTLE_SECONDS in all for the servers to confirm; what still runs is
    remembered by each guard, so the member's next call says it is busy."""
    calls = [c for c in calls if c.result is not None and not _rpyc.result_arrived(c.result)]
    for call in calls:
        seq = _rpyc.pending_seq(call.conn, call.result)
        if seq is not None:
            call.guard.pending, call.guard.pending_why = seq, why
    calls = [c for c in calls if c.guard.pending is not None]
    try:
        threads = [threading.Thread(target=c.record.interrupt_remote, daemon=True, name="ipyrpyc-interrupt")
                   for c in calls]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 3.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        deadline = time.monotonic() + SETTLE_SECONDS
        busy = list(calls)
        while busy and time.monotonic() < deadline:
            _rpyc.wait_readable([c.conn for c in busy], POLL_SECONDS)
            for call in list(busy):
                try:
                    if not call.guard.busy(call.conn):
                        busy.remove(call)
                except Exception as e:  # lost while stopping
                    call.error = e
                    busy.remove(call)
    except (KeyboardInterrupt, Exception):
        pass  # best effort: each member's next call reports its state


# -- running on many members ----------------------------------------------------------------------------
class Runner:
    """Runs a cell, or a function, on several sessions at once (see the module's docstring).

    ``describe(results)`` gives the text of each value for the results table; ``bind(results)``
    is called with the results of every run (the magics bind them to ``_rpyc_results``).
    """

    def __init__(self, describe: Callable[[Results], Dict[str, str]], bind: Callable[[Results], None]) -> None:
        self.describe = describe
        self.bind = bind

    def run_cell(self, sessions: Sequence[Session], cell: str, push: Dict[str, Any], pull: Sequence[str],
                 timeout: Optional[float], copy: Dict[str, Any]) -> Results:
        """Push, run ``cell`` and pull on every session.

        The cell runs on all members at once; the copies of ``--push``/``--pull`` go through
        :mod:`.transfer` (at link speed, pickle only on a trusted connection), member after
        member, with ``copy``'s options (compress, progress).  The results map each member to
        the cell's value; ``has_value`` tells whether the cell ends with an expression,
        ``pulled`` maps each pulled name to ``{member: value}``.  A member that fails a step
        skips the rest.  Raises GroupError when a member failed, CallInterrupted on Ctrl-C;
        the results are bound either way.
        """
        calls = [Call(s) for s in sessions]
        hint = "raise the limit with %%rpyc --timeout or %config RpycMagics.timeout"
        values: Dict[str, Any] = {}
        pulled: Dict[str, Dict[str, Any]] = {name: {} for name in pull}
        with labelled(sessions):
            done = _each(calls, lambda c: [transfer.push_value(transfer.link_of(c.conn), c.conn.namespace, name,
                                                               value, **copy) for name, value in push.items()])
            if done:
                for c in calls:
                    c.session.cells += 1
                    c.filename = f"<{c.name}.cell-{c.session.cells}>"
                done = gather(calls, lambda c: c.helper.start("run_cell", cell, c.filename, c.conn.namespace),
                              timeout, hint)
                for c in calls:
                    if c.error is None:
                        values[c.name] = c.value
                    elif c.record is not None and _rpyc.remote_tb_text(c.error) is not None:
                        c.record.last_cell_error = c.error  # drawn with its remote frames only
            if done and pull:
                done = _each(calls, lambda c: _pulled_into(pulled, c, transfer.pull_values(
                    transfer.link_of(c.conn), c.conn.namespace, pull, **copy)))
        return self._finish(calls, {n: v[1] for n, v in values.items()}, "the cell", done,
                            has_value=any(v[0] for v in values.values()), pulled=pulled)

    def call(self, sessions: Sequence[Session], f: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
             chunks: Optional[Sequence[Sequence[Any]]] = None, timeout: Optional[float] = None) -> Results:
        """``f(*args, **kwargs)`` on every session (``chunks``: ``f(item, …)`` for each item of the
        member's chunk, a tuple of values).  ``f`` is a function defined with def (its source is
        run in each member's namespace, as a ``%%rpyc`` cell would) or the name of one there."""
        if isinstance(f, str):
            if not all(part.isidentifier() for part in f.split(".")):
                raise ValueError(f"{f!r} is not the name of a function on the servers")
            name, source = f, None
        else:
            name, source = function_source(f)
        try:
            trees = export(tuple(args)), export(dict(kwargs))
            chunk_trees = [export(tuple(chunk)) for chunk in chunks] if chunks is not None else None
        except (TypeError, ValueError) as e:
            raise TypeError(f"{e}: only plain data and numpy arrays are sent to the servers") from None
        calls = [Call(s) for s in sessions]
        for i, c in enumerate(calls):
            c.chunk = chunk_trees[i] if chunk_trees is not None else None
            c.session.cells += 1
            c.filename = f"<{c.name}.apply-{c.session.cells}>"

        def send(c: Call) -> Any:
            return c.helper.start("call", source, c.filename, name, c.conn.namespace, trees[0], trees[1], c.chunk)

        with labelled(sessions):
            done = gather(calls, send, timeout, "raise the limit with %config RpycMagics.timeout")
        values = {c.name: c.value for c in calls if c.error is None}
        return self._finish(calls, values, f"calling {name}", done)

    def _finish(self, calls: Sequence[Call], values: Dict[str, Any], what: str, done: bool,
                has_value: bool = True, pulled: Optional[Dict[str, Dict[str, Any]]] = None) -> Results:
        results = Results(values, {c.name: c.error for c in calls if c.error is not None},
                          [c.name for c in calls], self.describe)
        results.has_value = has_value
        results.pulled = pulled or {}
        self.bind(results)
        if not done:
            parts = []
            for label, names in (("stopped on the server", [c.name for c in calls if _stopped(c, True)]),
                                 ("still running on the server", [c.name for c in calls if _stopped(c, False)]),
                                 ("finished", list(values))):
                if names:
                    parts.append(f"{label}: {', '.join(names)}")
            raise CallInterrupted(f"interrupted {what} ({'; '.join(parts) or 'nothing ran'}); "
                                  "what finished is in _rpyc_results")
        if results.errors:
            raise group_error(results, what, "execute" if what == "the cell" else "apply")
        return results


# -- the group itself -----------------------------------------------------------------------------------
class Group(Mapping):
    """Connections opened together and bound to one name: member name -> rpyc connection.

    ``%%rpyc NAME`` runs a cell on every member at once; ``apply`` and ``map`` run a function.
    A member closed on its own (``%rpyc_disconnect lab2``) leaves the group.
    """

    def __init__(self, name: str, sessions: Sequence[Session], is_open: Callable[[Session], bool],
                 runner: Runner) -> None:
        self.name = name
        self._sessions = {s.name: s for s in sessions}
        self._is_open = is_open
        self._runner = runner

    @property
    def sessions(self) -> List[Session]:
        """The members still open, in member order."""
        return [s for s in self._sessions.values() if self._is_open(s)]

    @property
    def addresses(self) -> Dict[str, str]:
        """Member name -> where it is connected (``host:port``)."""
        return {s.name: s.address for s in self.sessions}

    def __getitem__(self, name: str) -> Any:
        session = self._sessions.get(name)
        if session is None or not self._is_open(session):
            raise KeyError(name)
        return session.conn

    def __iter__(self) -> Iterator[str]:
        return iter([s.name for s in self.sessions])

    def __len__(self) -> int:
        return len(self.sessions)

    def __repr__(self) -> str:
        members = ", ".join(f"{s.name} ({s.address})" for s in self.sessions) or "no open member"
        return f"<rpyc group {self.name}: {members}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _members(self) -> List[Session]:
        sessions = self.sessions
        if not sessions:
            raise SessionError(f"the group {self.name} has no open member")
        return sessions

    def apply(self, f: Any, *args: Any, **kwargs: Any) -> Results:
        """``f(*args, **kwargs)`` on every member at once: member name -> value.

        ``f`` is a function defined with ``def`` (its source runs in each member's namespace, so
        its globals are the server's) or the name of a function defined there; arguments and
        keywords are plain data or numpy arrays.  Raises GroupError if a member failed.
        """
        return self._runner.call(self._members(), f, args, kwargs)

    def map(self, f: Any, items: Any) -> List[Any]:
        """``[f(item) for item in items]``, the items shared out among the members in contiguous
        chunks (ipyparallel's block partition), every member at once; results in item order."""
        sessions = self._members()
        items = list(items)
        n = len(sessions)
        bounds = [len(items) * i // n for i in range(n + 1)]
        chunks = [items[bounds[i]:bounds[i + 1]] for i in range(n)]
        results = self._runner.call(sessions, f, (), {}, chunks)
        return [value for s in sessions for value in results[s.name]]
