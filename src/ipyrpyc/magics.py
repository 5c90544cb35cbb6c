"""The magics: ``%rpyc_connect`` and its family, their traits and their help."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Enum, Float, Int, List as ListTrait, TraitError, Unicode, observe, validate

from . import _rpyc
from .arguments import (
    MAX_TIMEOUT,
    check_identifier,
    check_timeout,
    parse,
    parse_modules,
    parse_port,
)
from .errors import ConnectError
from .registry import Registry, warn
from .session import Session
from .text import Table
from .transport import Target, make_target

DEFAULT_NAME = "conn"  # the connection %rpyc_connect opens without --name

class ConnectionTable(Table):
    """What ``%rpyc_connections`` shows: HTML in notebooks, text in terminals."""

    columns = ("name", "address", "state", "latency", "server", "injected", "trusted")
    empty = "No open rpyc connections."
    css_class = "ipyrpyc-connections"

    def __init__(self, rows: List[Tuple[str, ...]]) -> None:
        super().__init__(rows)
        if rows and len(rows[0]) > len(self.columns):
            self.columns = (*self.columns, "group")  # while a group is open


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
    discover_timeout = Float(
        2.0, help="Seconds to wait for an rpyc registry (and for each server it names) when discovering."
    ).tag(config=True)
    trace_max_rows = Int(40, help="Requests listed by %%rpyc_trace (the totals count every one).").tag(config=True)
    who_max_rows = Int(100, help="Names listed by %rpyc_who (the header counts every one).").tag(config=True)
    ssh_options = ListTrait(
        Unicode(), help="Extra ssh '-o' options for --ssh, e.g. ['UserKnownHostsFile=~/.ssh/lab_hosts']."
    ).tag(config=True)
    progress = Bool(
        True, help="Show a progress bar (bytes, rate, ETA) for copies of data and files that last over a second."
    ).tag(config=True)
    compress = Bool(
        False, help="zlib-compress copies of data and files (--pull/--push, %rpyc_get/%rpyc_put): only worth it "
        "on links slower than about 50 MB/s, for compressible data."
    ).tag(config=True)

    @validate("timeout", "connect_timeout", "display_timeout", "completion_timeout", "discover_timeout")
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
                _rpyc.set_call_timeout(session.conn, change["new"])

    @validate("display_max_chars", "display_max_bytes", "trace_max_rows", "who_max_rows")
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

    def __init__(self, shell: Any = None, registry: Optional[Registry] = None, **kwargs: Any) -> None:
        self.registry = registry or Registry(lambda: shell.user_ns)
        self.groups: Any = None  # the GroupMagics of the extension: groups of connections
        super().__init__(shell=shell, **kwargs)

    # -- helpers -----------------------------------------------------------------------------
    def session(self, name: Optional[str]) -> Session:
        """The open session ``name``; without a name the only one (UsageError otherwise)."""
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
        timeout = self.timeout if args.timeout is None else check_timeout(args.timeout)
        try:
            return make_target(
                args.address, port=args.port, ssl=args.ssl, keyfile=args.keyfile, certfile=args.certfile,
                ca_certs=args.ca_certs, ssh=args.ssh, ssh_key=args.ssh_key, ssh_options=list(self.ssh_options),
                trust=bool(args.trust or self.trust), timeout=timeout,
                connect_timeout=min(self.connect_timeout, timeout), live_output=self.live_output,
                explicit_timeout=args.timeout is not None, default_host=self.host or None,
                default_port=self.port or None,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    def _troubled(self) -> Optional[Session]:
        """The one open session that is lost or busy (found without a round trip), if exactly one is."""
        sessions = list(self.registry.sessions.values())
        if len(sessions) < 2:
            return None
        troubled = []
        for s in sessions:
            try:
                busy = s.record is not None and s.record.guard is not None and s.record.guard.busy(s.conn)
            except Exception:
                busy = True  # the guard found the connection lost
            if busy or s.lost():
                troubled.append(s)
        if len(troubled) == 1:
            return troubled[0]
        which = f"{', '.join(s.name for s in troubled)} are lost or busy" if troubled else "none is lost or busy"
        raise UsageError(f"several connections are open ({', '.join(self.registry.sessions)}) and {which}: name one")

    def reconnect_lost(self, sessions: Optional[List[Session]] = None) -> None:
        """Reopen every connection (of ``sessions``) whose server went away (no round trip to find out)."""
        for session in list(self.registry.sessions.values()):
            if sessions is not None and not any(session is s for s in sessions):
                continue
            if not session.lost():
                continue
            try:
                self.registry.reopen(session)
            except ConnectError as e:
                warn(f"automatic reconnect of {session.name} failed: {e}")
                continue
            bound, _ = self.registry.inject(session, False)
            warn(f"reconnected {session.name} to {session.summary()}; bound {', '.join(bound) or 'nothing'}")

    # -- magics ------------------------------------------------------------------------------
    @magic_arguments()
    @argument("address", nargs="*", metavar="HOST[:PORT]",
              help="server to connect to; without it an embedded local server is started; "
                   "several (MEMBER=HOST[:PORT] names one) with --group")
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
    @argument("--group", "-g", metavar="NAME",
              help="connect to every address (and --discover) at once, as a group bound to NAME")
    @argument("--discover", action="store_true", help="with --group: the servers an rpyc registry knows")
    @argument("--registry", metavar="HOST[:PORT]", help="with --discover: ask this registry (default: UDP broadcast)")
    @argument("--tcp", action="store_true", help="with --discover --registry: a TCP registry")
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
            %rpyc_connect node-a node-b node-c --group lab      # lab1, lab2, lab3, bound as lab
            %rpyc_connect --discover --group lab                # every server rpyc's registry knows

        A group's members connect at once and bind no names but the group's, a mapping of member
        names to connections; ``%%rpyc lab`` runs a cell on all of them in parallel.
        """
        args = parse(self.rpyc_connect, line)
        if self.groups is not None and self.groups.handles_connect(args):
            return self.groups.connect(args)
        args.address = args.address[0] if args.address else None
        name = args.name or "conn"
        prefix = self.prefix if args.prefix is None else args.prefix
        try:
            check_identifier(name, "--name")
            if prefix and not prefix.isidentifier():
                raise ValueError(f"--prefix must start a Python identifier, not {prefix!r}")
            spec = " ".join(self.modules) if args.modules is None else args.modules
            modules = [(check_identifier(prefix + alias, "an injected name"), module)
                       for alias, module in parse_modules(spec)]
        except ValueError as e:
            raise UsageError(str(e)) from None
        if self.groups is not None and name in self.groups.groups:
            raise UsageError(f"{name!r} is the name of a group: choose another --name")
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
        self.registry.add(session)
        bound, _ = self.registry.inject(session, args.force)
        modules_bound = [b for b in bound if b != name]
        injected = f"; injected {', '.join(modules_bound)}" if modules_bound else ""
        trusted = " [trusted: the server can run code in this kernel]" if target.trust else ""
        as_name = f" as {name}" if name in bound else f" (not bound: {name!r} is yours)"
        print(f"Connected to {session.summary()}{as_name}{injected}{trusted}")

    @magic_arguments()
    @argument("name", nargs="?", help="connection or group to close (default: the only connection)")
    @argument("--all", action="store_true", help="close every connection")
    @line_magic
    def rpyc_disconnect(self, line: str = "") -> None:
        """Close a connection, remove the names it injected and stop its embedded server.

        A group's name closes every member and removes the group's name.
        Usage: ``%rpyc_disconnect [NAME | GROUP | --all]``
        """
        args = parse(self.rpyc_disconnect, line)
        if self.groups is not None and args.name in self.groups.groups and not args.all:
            return self.groups.disconnect(args.name)
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
            sessions = [self.session(args.name)]
        for session in sessions:
            removed = self.registry.close(session, give_back=not args.all)
            gone = f"; removed {', '.join(removed)}" if removed else ""
            print(f"Disconnected {session.name} ({session.address}){gone}")
        if args.all and self.groups is not None and self.groups.groups:
            names = list(self.groups.groups)
            self.groups.forget_all()
            print(f"Removed the groups {', '.join(names)}")

    @magic_arguments()
    @argument("name", nargs="?", help="connection to reopen (default: the one that is lost or busy), or a group")
    @line_magic
    def rpyc_reconnect(self, line: str = "") -> None:
        """Open a fresh connection to the same place and re-bind its names.

        The embedded server is restarted if it died. Without NAME: the only connection,
        or the one connection that is lost or busy.  For a group, only the members whose
        server went away are reopened, all at once. Usage: ``%rpyc_reconnect [NAME | GROUP]``
        """
        args = parse(self.rpyc_reconnect, line)
        if self.groups is not None and args.name in self.groups.groups:
            return self.groups.reconnect(args.name)
        session = self._troubled() if args.name is None else None
        session = session or self.session(args.name)
        try:
            self.registry.reopen(session)
        except ConnectError as e:
            raise UsageError(f"{session.name}: {e}") from None
        # The old netrefs are still "ours", so rebinding replaces exactly the names we own.
        bound, _ = self.registry.inject(session, False)
        print(f"Reconnected {session.name} to {session.summary()}; bound {', '.join(bound) or 'nothing'}")

    @magic_arguments()
    @line_magic
    def rpyc_connections(self, line: str = "") -> ConnectionTable:
        """List the open connections: name, address, state, latency, server, injected names, trust."""
        parse(self.rpyc_connections, line)
        rows = []
        groups = {s.name: g.name for g in (self.groups.groups.values() if self.groups is not None else ())
                  for s in g.sessions}
        for s in self.registry.sessions.values():
            state, latency = s.state()
            rows.append(
                (
                    s.name,
                    s.address,
                    state,
                    f"{latency * 1000:.1f} ms" if latency is not None else "-",
                    f"Python {s.remote_python}, pid {s.remote_pid}, {s.remote_host}",
                    ", ".join(self.registry.bound_names(s)) or "-",
                    "yes" if s.target.trust else "no",
                    *([groups.get(s.name, "-")] if groups else []),
                )
            )
        return ConnectionTable(rows)


class MagicsPart(Magics):
    """Magics of another concern, sharing :class:`RpycMagics`' traits, registry and sessions."""

    def __init__(self, shell: Any, settings: RpycMagics) -> None:
        super().__init__(shell=shell)
        self.settings = settings

    @property
    def registry(self) -> Registry:
        return self.settings.registry

    def session(self, name: Optional[str]) -> Session:
        return self.settings.session(name)

    def default_session(self, name: Optional[str]) -> Session:
        """The session ``name``; without a name ``conn`` when it is open, else the only one."""
        if name is None and DEFAULT_NAME in self.registry.sessions:
            return self.registry.sessions[DEFAULT_NAME]
        return self.session(name)
