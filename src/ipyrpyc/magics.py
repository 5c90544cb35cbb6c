"""``%rpyc_connect`` and its family."""

from __future__ import annotations

import html
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Enum, Float, Int, List as ListTrait, TraitError, Unicode, observe, validate

from . import _compat

from .session import (
    ConnectError,
    Session,
    Target,
    check_identifier,
    parse_address,
    parse_modules,
    parse_port,
)

_MISSING = object()

# rpyc waits with poll(milliseconds), a C int: past ~24.8 days every call raises OverflowError.
MAX_TIMEOUT = 1e6


def _parse(magic: Callable, line: str) -> Any:
    """Parse a magic's argument string; every mistake is a one-line ``UsageError``."""
    try:
        argv = shlex.split(line)
    except ValueError as e:
        raise UsageError(f"{magic.__name__}: cannot parse arguments: {e}") from None
    parser = magic.parser  # set by @magic_arguments
    return parser.parse_args(argv)


def _warn(message: str) -> None:
    print(f"ipyrpyc: {message}", file=sys.stderr, flush=True)


class Registry:
    """The open sessions of one shell, and the names they own in its namespace."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.sessions: Dict[str, Session] = {}

    @property
    def user_ns(self) -> Dict[str, Any]:
        return self.shell.user_ns

    def owner_of(self, name: str, value: Any) -> Optional[Session]:
        for s in self.sessions.values():
            if s.injected.get(name, _MISSING) is value:
                return s
        return None

    def session_of(self, conn: Any) -> Optional[Session]:
        for s in self.sessions.values():
            if s.conn is conn:
                return s
        return None

    def can_bind(self, name: str) -> bool:
        value = self.user_ns.get(name, _MISSING)
        return value is _MISSING or self.owner_of(name, value) is not None

    def bind(self, session: Session, name: str, value: Any, force: bool) -> bool:
        """Bind ``name``; a user's own variable is only replaced with ``force``."""
        current = self.user_ns.get(name, _MISSING)
        owner = None if current is _MISSING else self.owner_of(name, current)
        if current is not _MISSING and owner is None and not force:
            return False
        if owner is not None and owner is not session:
            del owner.injected[name]
            _warn(f"{name} now belongs to connection {session.name!r} (was {owner.name!r})")
        self.user_ns[name] = value
        session.injected[name] = value
        return True

    def inject(self, session: Session, force: bool) -> Tuple[List[str], List[str]]:
        """Bind the connection and its modules; returns (bound, skipped) names."""
        bound: List[str] = []
        skipped: List[str] = []
        if self.bind(session, session.name, session.conn, force):
            bound.append(session.name)
        else:
            skipped.append(session.name)
            _warn(f"{session.name!r} is your own variable: left it alone (use --force to replace it)")
        for local, module in session.modules:
            if not force and not self.can_bind(local):
                skipped.append(local)
                _warn(f"{local!r} is your own variable: left it alone (use --force or --prefix)")
                continue
            try:
                value = session.conn.modules[module]
            except Exception as e:
                skipped.append(local)
                _warn(f"cannot import {module} on the server ({type(e).__name__}): {local} not injected")
                continue
            self.bind(session, local, value, force)
            bound.append(local)
        return bound, skipped

    def uninject(self, session: Session) -> List[str]:
        """Remove the names this session still owns; a reassigned name stays the user's."""
        removed = []
        for name, value in list(session.injected.items()):
            if self.user_ns.get(name, _MISSING) is value:
                del self.user_ns[name]
                removed.append(name)
        session.injected.clear()
        return removed

    def close(self, session: Session) -> List[str]:
        removed = self.uninject(session)
        session.close()
        self.sessions.pop(session.name, None)
        return removed

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            self.close(session)


class ConnectionTable:
    """What ``%rpyc_connections`` shows: HTML in notebooks, text in terminals."""

    columns = ("name", "address", "state", "latency", "server", "injected", "trusted")

    def __init__(self, rows: List[Tuple[str, ...]]) -> None:
        self.rows = rows

    def __repr__(self) -> str:
        if not self.rows:
            return "No open rpyc connections."
        table = [self.columns, *self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>No open rpyc connections.</p>"
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows
        )
        return f'<table class="ipyrpyc-connections"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


@magics_class
class RpycMagics(Magics):
    """Open, inspect and close RPyC classic connections from IPython."""

    host = Unicode("", help="Default server for %rpyc_connect; empty starts the embedded local server.").tag(
        config=True
    )
    port = Int(0, help="Default TCP port; 0 means rpyc's: 18812, or 18821 with --ssl.").tag(config=True)
    timeout = Float(30.0, help="Seconds a remote call may take before it fails (rpyc's sync_request_timeout).").tag(
        config=True
    )
    connect_timeout = Float(5.0, help="Seconds to wait for a server while connecting.").tag(config=True)
    modules = ListTrait(
        Unicode(), default_value=["sys", "os"], help="Remote modules to inject; 'alias=module' renames one."
    ).tag(config=True)
    prefix = Unicode("r", help="Prefix of injected module names: 'r' gives rsys, ros.").tag(config=True)
    trust = Bool(
        False,
        help="Expose this kernel to the server (rpyc's full-duplex ClassicService). Off: the server "
        "cannot import modules or run code in the kernel.",
    ).tag(config=True)

    traceback = Enum(
        ["both", "remote", "local", "raw"],
        default_value="both",
        help="Remote errors show the remote and the local traceback ('both'), one of them, or "
        "rpyc's unmodified text ('raw').",
    ).tag(config=True)
    display_max_chars = Int(
        20_000, help="Longest text/plain shown for a remote object; the true length is stated."
    ).tag(config=True)
    display_max_bytes = Int(
        100_000, help="Largest rich output (HTML, PNG, SVG …) shown per mime type for a remote object."
    ).tag(config=True)
    display_timeout = Float(5.0, help="Seconds display and inspection of a remote object may take.").tag(
        config=True
    )
    completion_timeout = Float(1.0, help="Seconds tab completion may wait for the server.").tag(config=True)
    auto_reconnect = Bool(
        False, help="Before each cell, reopen connections whose server went away and re-bind their names."
    ).tag(config=True)
    live_output = Bool(
        True, help="Show what the server prints while serving this connection in the calling cell."
    ).tag(config=True)
    rich_display = Bool(
        True, help="Ask remote objects for rich output (_repr_html_, _repr_png_, figures)."
    ).tag(config=True)
    ssh_options = ListTrait(
        Unicode(), help="Extra ssh '-o' options for --ssh, e.g. ['UserKnownHostsFile=~/.ssh/lab_hosts']."
    ).tag(config=True)

    @validate("timeout", "connect_timeout", "display_timeout", "completion_timeout")
    def _positive(self, proposal: Any) -> float:
        value = proposal["value"]
        if not (0 < value <= MAX_TIMEOUT):
            raise TraitError(
                f"{proposal['trait'].name} must be a positive number of seconds, at most {MAX_TIMEOUT:.0f}"
            )
        return value

    @observe("timeout")
    def _apply_timeout(self, change: Any) -> None:
        """A new default applies at once to open connections opened without --timeout."""
        for session in self.registry.sessions.values():
            if session.target.explicit_timeout:
                continue
            session.target.timeout = change["new"]
            if session.conn is not None:
                _compat.set_call_timeout(session.conn, change["new"])

    @validate("display_max_chars", "display_max_bytes")
    def _positive_size(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    @validate("port")
    def _valid_port(self, proposal: Any) -> int:
        value = proposal["value"]
        if value == 0:
            return 0
        try:
            return parse_port(value)
        except ValueError as e:
            raise TraitError(str(e)) from None

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.registry = Registry(shell)

    # -- helpers -----------------------------------------------------------------------------
    def _session(self, name: Optional[str]) -> Session:
        sessions = self.registry.sessions
        if name is None:
            if len(sessions) == 1:
                return next(iter(sessions.values()))
            if not sessions:
                raise UsageError("no rpyc connection is open; open one with %rpyc_connect")
            raise UsageError(f"several connections are open ({', '.join(sessions)}): name one")
        if name not in sessions:
            known = ", ".join(sessions) or "none"
            raise UsageError(f"no connection named {name!r} (open: {known})")
        return sessions[name]

    def _target(self, args: Any) -> Target:
        host: Optional[str] = self.host or None
        port: Optional[int] = None
        if args.address is not None:
            try:
                host, port = parse_address(args.address)
            except ValueError as e:
                raise UsageError(str(e)) from None
        if args.port is not None:
            try:
                p = parse_port(args.port)
            except ValueError as e:
                raise UsageError(f"--port: {e}") from None
            if port is not None and port != p:
                raise UsageError(f"the address says port {port} but --port says {p}")
            port = p
        if host is not None and port is None and self.port:
            port = self.port
        timeout = self.timeout
        if args.timeout is not None:
            if not (0 < args.timeout <= MAX_TIMEOUT):
                raise UsageError(
                    f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT:.0f}, not {args.timeout}"
                )
            timeout = args.timeout
        tls = args.ssl or bool(args.certfile or args.ca_certs or args.keyfile)
        if args.keyfile and not args.certfile:
            raise UsageError("--keyfile needs --certfile")
        if args.ssh is not None:
            user, _, hostport = args.ssh.rpartition("@")
            try:
                parse_address(hostport)
            except ValueError as e:
                raise UsageError(f"--ssh expects [USER@]HOST[:PORT]: {e}") from None
            if user.startswith("-") or hostport.startswith("-"):
                # ssh would read "-oProxyCommand=…@host" as an option and run that command here
                raise UsageError(f"--ssh: USER and HOST cannot start with '-': {args.ssh!r}")
            if tls:
                raise UsageError("--ssh and --ssl cannot be combined: the SSH tunnel already encrypts")
        if args.ssh_key and args.ssh is None:
            raise UsageError("--ssh-key needs --ssh")
        if host is None and args.ssh is None:
            if tls:
                raise UsageError("--ssl needs a HOST: the embedded server is reached over a private local socket")
            if port is not None:
                raise UsageError("--port needs a HOST (without one, the embedded server is started)")
        return Target(
            host=host,
            port=port,
            ssl=tls,
            keyfile=args.keyfile,
            certfile=args.certfile,
            ca_certs=args.ca_certs,
            ssh=args.ssh,
            ssh_key=args.ssh_key,
            ssh_options=list(self.ssh_options),
            trust=bool(args.trust or self.trust),
            timeout=timeout,
            connect_timeout=min(self.connect_timeout, timeout),
            live_output=self.live_output,
            explicit_timeout=args.timeout is not None,
        )

    def reconnect_lost(self) -> None:
        """Reopen every connection whose server went away (no round trip to find out)."""
        for session in list(self.registry.sessions.values()):
            if not session.lost():
                continue
            try:
                session.reopen()
            except ConnectError as e:
                _warn(f"automatic reconnect of {session.name} failed: {e}")
                continue
            bound, _ = self.registry.inject(session, False)
            _warn(f"reconnected {session.name} to {session.summary()}; bound {', '.join(bound) or 'nothing'}")

    # -- magics ------------------------------------------------------------------------------
    @magic_arguments()
    @argument("address", nargs="?", metavar="HOST[:PORT]",
              help="server to connect to; without it an embedded local server is started")
    @argument("--port", "-p", help="TCP port (default 18812, 18821 with --ssl)")
    @argument("--name", "-n", help="name of the connection and of its variable (default: conn)")
    @argument("--timeout", "-t", type=float, help="seconds a remote call may take (default: RpycMagics.timeout)")
    @argument("--ssl", action="store_true", help="connect with SSL, verifying the server's certificate")
    @argument("--keyfile", help="client private key (PEM), with --certfile")
    @argument("--certfile", help="client certificate (PEM), for servers that require one")
    @argument("--ca-certs", help="CA bundle that signed the server's certificate (default: the system's)")
    @argument("--ssh", metavar="[USER@]HOST[:PORT]",
              help="tunnel through SSH; HOST:PORT is then as seen from the SSH host (default localhost)")
    @argument("--ssh-key", metavar="PATH", help="private key for --ssh (default: ssh's own choice)")
    @argument("--modules", "-m", help='remote modules to inject, e.g. "sys os np=numpy" (default: RpycMagics.modules)')
    @argument("--prefix", help="prefix of the injected module names (default: r, giving rsys, ros)")
    @argument("--no-inject", action="store_true", help="bind only the connection, no modules")
    @argument("--force", action="store_true", help="replace existing variables and a connection of the same name")
    @argument("--trust", action="store_true",
              help="let the server import modules and run code in this kernel (off by default)")
    @line_magic
    def rpyc_connect(self, line: str = "") -> None:
        """Open an RPyC classic connection and bind it (and remote modules) to variables.

        Without HOST an embedded classic server is started on a private local
        socket; it stops with the connection or the kernel. The connection is
        bound to ``conn`` (or ``--name``); ``sys`` and ``os`` of the server are
        bound to ``rsys`` and ``ros``. Variables of yours are never replaced
        without ``--force``. The server cannot reach into this kernel unless you
        pass ``--trust``.

        Examples::

            %rpyc_connect
            %rpyc_connect lab-pc:18812 --name lab --timeout 10
            %rpyc_connect [::1]:18812 --modules "sys os np=numpy"
            %rpyc_connect gpu-box --ssl --ca-certs ca.pem
        """
        args = _parse(self.rpyc_connect, line)
        name = args.name or "conn"
        prefix = self.prefix if args.prefix is None else args.prefix
        try:
            check_identifier(name, "--name")
            if prefix and not prefix.isidentifier():
                raise ValueError(f"--prefix must start a Python identifier, not {prefix!r}")
            spec = " ".join(self.modules) if args.modules is None else args.modules
            modules = [(check_identifier(prefix + alias, "an injected name"), mod) for alias, mod in parse_modules(spec)]
        except ValueError as e:
            raise UsageError(str(e)) from None
        if any(local == name for local, _ in modules) and not args.no_inject:
            raise UsageError(f"--name {name} is also the name of an injected module: choose another --name or --prefix")
        target = self._target(args)
        old = self.registry.sessions.get(name)
        if old is not None and not args.force:
            raise UsageError(
                f"a connection named {name!r} is open ({old.address}): "
                f"use %rpyc_reconnect {name}, --name, or --force"
            )
        if old is None and not args.force and not self.registry.can_bind(name):
            raise UsageError(f"{name!r} is already a variable of yours: choose --name or pass --force")
        session = Session(name, target, modules if not args.no_inject else [])
        try:
            session.open()
        except ConnectError as e:
            session.close()
            raise UsageError(str(e)) from None
        if old is not None:
            self.registry.close(old)
        self.registry.sessions[name] = session
        bound, _ = self.registry.inject(session, args.force)
        modules_bound = [b for b in bound if b != name]
        injected = f"; injected {', '.join(modules_bound)}" if modules_bound else ""
        trusted = " [trusted: the server can run code in this kernel]" if target.trust else ""
        as_name = f" as {name}" if name in bound else f" (not bound: {name!r} is yours)"
        print(f"Connected to {session.summary()}{as_name}{injected}{trusted}")

    @magic_arguments()
    @argument("name", nargs="?", help="connection to close (default: the only one)")
    @argument("--all", action="store_true", help="close every connection")
    @line_magic
    def rpyc_disconnect(self, line: str = "") -> None:
        """Close a connection, remove the names it injected and stop its embedded server.

        Usage: ``%rpyc_disconnect [NAME | --all]``
        """
        args = _parse(self.rpyc_disconnect, line)
        if args.all:
            if args.name:
                raise UsageError("give a NAME or --all, not both")
            sessions = list(self.registry.sessions.values())
            if not sessions:
                print("No open rpyc connections.")
        else:
            if args.name is None and not self.registry.sessions:
                print("No open rpyc connections.")
                return
            sessions = [self._session(args.name)]
        for session in sessions:
            removed = self.registry.close(session)
            gone = f"; removed {', '.join(removed)}" if removed else ""
            print(f"Disconnected {session.name} ({session.address}){gone}")

    @magic_arguments()
    @argument("name", nargs="?", help="connection to reopen (default: the only one)")
    @line_magic
    def rpyc_reconnect(self, line: str = "") -> None:
        """Open a fresh connection to the same place and re-bind its names.

        The embedded server is restarted if it died. Usage: ``%rpyc_reconnect [NAME]``
        """
        args = _parse(self.rpyc_reconnect, line)
        session = self._session(args.name)
        try:
            session.reopen()
        except ConnectError as e:
            raise UsageError(f"{session.name}: {e}") from None
        # The old netrefs are still "ours", so rebinding replaces exactly the names we own.
        bound, _ = self.registry.inject(session, False)
        print(f"Reconnected {session.name} to {session.summary()}; bound {', '.join(bound) or 'nothing'}")

    @magic_arguments()
    @argument("name", nargs="?", help="connection to run on (default: the only one)")
    @argument("--timeout", "-t", type=float, help="seconds this cell may take (default: the connection's)")
    @argument("--push", default="", metavar="a,b", help="local variables to copy to the server first")
    @argument("--pull", default="", metavar="c,d", help="server variables to copy back here afterwards")
    @cell_magic
    def rpyc(self, line: str, cell: str) -> Any:
        """Run the cell on the server, in the connection's remote namespace.

        The last expression is displayed like a normal cell's; what the server prints
        appears here as it happens; errors show the cell's own lines. ``--push`` and
        ``--pull`` copy plain data (numbers, strings, lists, dicts, numpy arrays …)
        without pickle; on a ``--trust`` connection anything picklable can be pulled.

        Example::

            %%rpyc lab --push n --pull total
            total = sum(i * i for i in range(n))
            total
        """
        from .transfer import export, rebuild

        args = _parse(self.rpyc, line)
        session = self._session(args.name)
        if session.conn is None:
            raise UsageError(f"{session.name} is not connected: %rpyc_reconnect {session.name}")
        if session.helper is None:
            raise UsageError(f"{session.address} cannot run ipyrpyc's helper, so %%rpyc is not available there")
        try:
            push = [check_identifier(n.strip(), "--push") for n in args.push.split(",") if n.strip()]
            pull = [check_identifier(n.strip(), "--pull") for n in args.pull.split(",") if n.strip()]
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.timeout is not None and not (0 < args.timeout <= MAX_TIMEOUT):
            raise UsageError(
                f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT:.0f}, not {args.timeout}"
            )
        if "\0" in cell:
            raise UsageError("the cell contains a null character (\\x00), which Python source cannot contain")
        trees = {}
        for name in push:
            if name not in self.shell.user_ns:
                raise UsageError(f"--push {name}: no such variable here")
            try:
                trees[name] = export(self.shell.user_ns[name])
            except (TypeError, ValueError) as e:
                raise UsageError(f"--push {name}: {e}; only plain data and numpy arrays are copied") from None
        conn, helper = session.conn, session.helper
        namespace = conn.namespace
        saved = _compat.call_timeout(conn)
        if args.timeout is not None:
            _compat.set_call_timeout(conn, args.timeout)
        try:
            for name, tree in trees.items():
                helper.push(namespace, name, tree)
            session.cells += 1
            has_value, value = helper.run_cell(cell, f"<{session.name}.cell-{session.cells}>", namespace)
        except BaseException as e:
            if _compat.remote_tb_text(e) is not None:
                e._ipyrpyc_cell = True  # type: ignore[attr-defined]  # its remote frames say it all
            raise
        finally:
            _compat.set_call_timeout(conn, saved)
        pulled = {}  # all or nothing: a --pull that fails binds none of the names
        for name in pull:
            try:
                pulled[name] = rebuild(helper.pull(namespace, name))
            except NameError:
                raise UsageError(f"--pull {name}: not defined on the server") from None
            except TypeError as e:
                if not session.target.trust:
                    raise UsageError(f"--pull {name}: {e}; copying it needs pickle, which lets the server "
                                     "run code in this kernel: only on a --trust connection") from None
                import rpyc.utils.classic

                pulled[name] = rpyc.utils.classic.obtain(namespace[name])
        self.shell.user_ns.update(pulled)
        return value if has_value else None

    @magic_arguments()
    @argument("name", nargs="?", help="connection (default: the only one)")
    @line_magic
    def rpyc_debug(self, line: str = "") -> None:
        """Post-mortem debugger on the server, at the last remote exception of a connection.

        pdb runs on the server, on the real remote frames; its prompts arrive here as
        input requests (``p x``, ``l``, ``u``/``d``, ``q``). Usage: ``%rpyc_debug [NAME]``
        """
        args = _parse(self.rpyc_debug, line)
        session = self._session(args.name)
        if session.conn is None or session.helper is None:
            raise UsageError(f"{session.name} is not connected (or cannot run ipyrpyc's helper)")

        def readline(prompt: str) -> str:
            try:
                return input(prompt) + "\n"
            except (EOFError, KeyboardInterrupt):
                return "q\n"

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        conn = session.conn
        saved = _compat.call_timeout(conn)
        _compat.set_call_timeout(conn, None)  # a debugging session takes as long as it takes
        try:
            what = session.helper.debug(readline, write)
        finally:
            _compat.set_call_timeout(conn, saved)
        if what is None:
            print(f"No remote exception on {session.name} to debug.")

    @magic_arguments()
    @argument("expression", nargs="+", help="an expression whose value is a netref, e.g. rsys.path")
    @line_magic
    def rpyc_info(self, line: str = "") -> None:
        """Show the plumbing of a netref: its own slots, connection, remote id, type and refcount.

        This is what ``dir()`` showed in the RPyC tutorial (``____conn__``, ``____oid__``,
        called ``____id_pack__`` since rpyc 4); the remote ``dir()`` follows, one round trip.
        Usage: ``%rpyc_info rsys.path``
        """
        from . import _compat
        from .helper import helper_for

        args = _parse(self.rpyc_info, line)
        expression = " ".join(args.expression)
        try:
            obj = self.shell.ev(expression)
        except Exception as e:
            raise UsageError(f"cannot evaluate {expression!r}: {type(e).__name__}: {e}") from None
        if not _compat.is_netref(obj):
            raise UsageError(f"{expression} is a local {type(obj).__name__}, not a netref")
        conn = _compat.connection_of(obj)
        type_name, type_id, obj_id = _compat.id_pack(obj)
        session = self.registry.session_of(conn)
        where = f"{session.name} ({session.address})" if session else (_compat.peer_address(conn) or "?")
        slots = [n for n in _compat.BaseNetref.__slots__ if n.startswith("____")]
        print(f"{expression}: netref to a remote {type_name}")
        print(f"  ____conn__      the connection: {where}{' (closed)' if conn is None or _compat.is_closed(conn) else ''}")
        print(f"  ____id_pack__   ({type_name!r}, {type_id}, {obj_id}): remote type, id of the type, "
              "id of the object (the tutorial's ____oid__)")
        print(f"  ____refcount__  {_compat.refcount(obj)}: references this client holds to the remote object")
        print(f"  netref slots    {', '.join(slots)}")
        helper = helper_for(conn)
        names: Any = ()
        if helper is not None:
            try:
                names = helper.complete(obj, (), 5000, self.display_timeout)[1]
            except Exception as e:
                names = f"<no answer: {type(e).__name__}>"
        print(f"  dir() on the server ({len(names) if isinstance(names, tuple) else '?'} names): {names}")

    @magic_arguments()
    @line_magic
    def rpyc_connections(self, line: str = "") -> ConnectionTable:
        """List the open connections: name, address, state, latency, server, injected names, trust."""
        _parse(self.rpyc_connections, line)
        rows = []
        for s in self.registry.sessions.values():
            state, latency = s.state()
            rows.append(
                (
                    s.name,
                    s.address,
                    state,
                    f"{latency * 1000:.1f} ms" if latency is not None else "-",
                    f"Python {s.remote_python}, pid {s.remote_pid}, {s.remote_host}",
                    ", ".join(n for n in s.injected if self.registry.user_ns.get(n, _MISSING) is s.injected[n])
                    or "-",
                    "yes" if s.target.trust else "no",
                )
            )
        return ConnectionTable(rows)
