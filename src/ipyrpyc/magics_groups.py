"""Many servers at once, for the user: ``%rpyc_discover``, and the group side of
``%rpyc_connect``, ``%rpyc_disconnect``, ``%rpyc_reconnect`` and ``%%rpyc``."""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.lib import pretty

from . import _rpyc, discovery, transfer
from .arguments import DEFAULT_PORT, check_identifier, check_timeout, format_hostport, parse, parse_address
from .display import Limits, remote_bundles
from .errors import DiscoveryError
from .groups import Group, Results, Runner, member_names, open_all
from .magics import MagicsPart, RpycMagics
from .magics_run import checked_cell
from .session import Session
from .text import Table

CELL_CHARS = 1000  # a value in the results table is cut after this many characters
CELL_LINES = 10  # … or lines
_MISSING = object()


class DiscoveredServers(Table):
    """What ``%rpyc_discover`` found; ``addresses`` lists the servers that answered."""

    columns = ("host", "port", "answers", "latency")
    empty = "No classic server found."

    def __init__(self, probes: Sequence[discovery.Probe], where: str) -> None:
        self.probes = list(probes)
        self.where = where
        super().__init__([
            (p.host, str(p.port), "yes" if p.latency is not None else f"no: {p.problem}",
             f"{p.latency * 1000:.1f} ms" if p.latency is not None else "-") for p in self.probes])

    @property
    def addresses(self) -> List[str]:
        return [p.address for p in self.probes if p.latency is not None]


@magics_class
class GroupMagics(MagicsPart):
    """Find servers through rpyc's registry; connect, run on, reconnect and close groups of them."""

    def __init__(self, shell: Any, settings: RpycMagics) -> None:
        super().__init__(shell, settings)
        self.groups: Dict[str, Group] = {}
        self.limits = Limits(lambda name: getattr(settings, name))
        self.runner = Runner(self._describe, self._bind_results)
        settings.groups = self

    # -- %rpyc_discover ------------------------------------------------------------------------
    @magic_arguments()
    @argument("--registry", "-r", metavar="HOST[:PORT]",
              help="ask this registry (default: UDP broadcast to 255.255.255.255:18811)")
    @argument("--tcp", action="store_true", help="the registry is rpyc_registry --mode TCP (needs --registry)")
    @argument("--timeout", "-t", type=float,
              help="seconds to wait for the registry and for each server (default: RpycMagics.discover_timeout)")
    @line_magic
    def rpyc_discover(self, line: str = "") -> DiscoveredServers:
        """List the classic servers registered with an rpyc registry, and whether each answers.

        Servers register with ``rpyc_classic --register`` (UDP broadcast) or ``rpyc_classic
        --register --registry-type TCP --registry-host HOST``; the registry is ``rpyc_registry``.
        Each server found is pinged once (all at once): its round-trip latency, or why it
        does not answer.  ``%rpyc_connect --discover --group NAME`` connects to them all.

        Examples::

            %rpyc_discover
            %rpyc_discover --registry 10.0.0.1 --tcp
            servers = %rpyc_discover
            servers.addresses
        """
        args = parse(self.rpyc_discover, line)
        timeout = check_timeout(args.timeout) or self.settings.discover_timeout
        servers, where = self.discover(args.registry, args.tcp, timeout)
        return DiscoveredServers(discovery.probe_all(servers, timeout), where)

    def discover(self, registry: Optional[str], tcp: bool, timeout: float) -> Tuple[List[Tuple[str, int]], str]:
        try:
            where = discovery.registry_client(registry, tcp, timeout)[1]
            return discovery.discover(registry, tcp, timeout), where
        except DiscoveryError as e:
            raise UsageError(str(e)) from None

    # -- %rpyc_connect … --group ---------------------------------------------------------------
    @staticmethod
    def handles_connect(args: argparse.Namespace) -> bool:
        """Whether ``%rpyc_connect`` was asked for a group rather than one connection."""
        return bool(args.group or args.discover or args.registry or args.tcp or len(args.address) > 1)

    def connect(self, args: argparse.Namespace) -> None:
        """``%rpyc_connect HOST1 HOST2 … --group NAME`` and ``%rpyc_connect --discover --group NAME``."""
        name = self._check_group_args(args)
        entries = self._entries(args, name)
        old = self.groups.get(name)
        self._check_names(name, [m for m, _ in entries], old, args.force)
        targets = []
        for _, address in entries:
            one = copy.copy(args)
            one.address = address
            targets.append(self.settings._target(one))  # a bad address: UsageError before connecting anything
        if old is not None:
            self._close_group(old)
        sessions = [Session(member, target, []) for (member, _), target in zip(entries, targets)]
        start = time.monotonic()
        outcome = open_all(sessions)
        elapsed = time.monotonic() - start
        opened = [s for s in sessions if outcome[s.name] is None]
        for s in sessions:
            if outcome[s.name] is not None:
                print(f"{s.name}: {outcome[s.name]}", file=sys.stderr, flush=True)
        if not opened:
            raise UsageError(f"no member of {name} could connect ({len(sessions)} tried, each listed above)")
        for s in opened:
            self.registry.add(s)
        group = self.groups[name] = Group(name, opened, self._is_open, self.runner)
        bound = self._bind(name, group, args.force)
        members = ", ".join(f"{s.name} {s.address} (pid {s.remote_pid})" for s in opened)
        trusted = " [trusted: the servers can run code in this kernel]" if targets[0].trust else ""
        as_name = f"bound to {name}" if bound else f"not bound: {name!r} is yours"
        print(f"Connected {len(opened)} of {len(sessions)} members of {name} in {elapsed:.2f} s ({as_name}): "
              f"{members}{trusted}")

    def _check_group_args(self, args: argparse.Namespace) -> str:
        if not args.group:
            if args.discover:
                raise UsageError("--discover connects a group: add --group NAME")
            if args.registry or args.tcp:
                raise UsageError("--registry and --tcp go with --discover (or with %rpyc_discover)")
            raise UsageError(f"{len(args.address)} addresses: add --group NAME to connect them as a group")
        if (args.registry or args.tcp) and not args.discover:
            raise UsageError("--registry and --tcp go with --discover")
        if args.name:
            raise UsageError("--name names one connection; the members of a group are named after it "
                             "(NAME1, NAME2 …, or MEMBER=HOST)")
        if args.modules is not None or args.prefix is not None:
            raise UsageError("--modules and --prefix bind one connection's modules; the members of a group bind "
                             "none (use lab['lab1'].modules.sys)")
        try:
            return check_identifier(args.group, "--group")
        except ValueError as e:
            raise UsageError(str(e)) from None

    def _entries(self, args: argparse.Namespace, name: str) -> List[Tuple[str, str]]:
        """``[(member name, address)]``: ``MEMBER=HOST[:PORT]`` names one, the others are numbered."""
        given: List[Tuple[Optional[str], str]] = []
        for item in args.address:
            member, sep, address = item.rpartition("=")
            if sep:
                try:
                    check_identifier(member, "a member's name")
                except ValueError as e:
                    raise UsageError(f"{item}: {e}") from None
            given.append((member or None, address))
        if args.discover:
            servers, _ = self.discover(args.registry, args.tcp, self.settings.discover_timeout)
            seen = set()
            for _, address in given:
                try:
                    host, port = parse_address(address)
                    seen.add((host, port or self.settings.port or DEFAULT_PORT))
                except ValueError:
                    pass
            given += [(None, format_hostport(h, p)) for h, p in servers if (h, p) not in seen]
        if not given:
            raise UsageError(f"--group {name}: no server to connect to (give HOST1 HOST2 … or --discover)")
        numbered = iter(member_names(name, len(given)))
        taken = {m for m, _ in given if m}
        out = []
        for member, address in given:
            if member is None:
                member = next(n for n in numbered if n not in taken)
            out.append((member, address))
        names = [m for m, _ in out]
        if len(set(names)) < len(names):
            raise UsageError(f"--group {name}: a member's name is given twice")
        return out

    def _check_names(self, name: str, members: Sequence[str], old: Optional[Group], force: bool) -> None:
        sessions = self.registry.sessions
        if old is not None and not force:
            raise UsageError(f"a group named {name!r} is open ({len(old)} members): use %rpyc_reconnect {name}, "
                             "another --group, or --force")
        if name in sessions:
            raise UsageError(f"{name!r} is the name of an open connection: choose another --group")
        replaced = set(old) if old is not None else set()
        for member in members:
            if member in self.groups or member == name:
                raise UsageError(f"the member name {member!r} is the name of a group: choose another --group")
            if member in sessions and member not in replaced:
                raise UsageError(f"a connection named {member!r} is open ({sessions[member].address}): close it or "
                                 "choose another --group")
        value = self.shell.user_ns.get(name, _MISSING)
        if value is not _MISSING and not issubclass(type(value), Group) and not force:
            raise UsageError(f"{name!r} is already a variable of yours: choose another --group or pass --force")

    def _bind(self, name: str, group: Group, force: bool) -> bool:
        value = self.shell.user_ns.get(name, _MISSING)
        if value is _MISSING or issubclass(type(value), Group) or force:
            owner = self.registry.owner_of(name, value)
            if owner is not None:
                del owner.injected[name]  # a module name a connection bound: the group has it now
            self.shell.user_ns[name] = group
            return True
        return False

    def _is_open(self, session: Session) -> bool:
        return self.registry.sessions.get(session.name) is session

    # -- %rpyc_disconnect / %rpyc_reconnect GROUP ----------------------------------------------
    def _close_group(self, group: Group) -> List[str]:
        closed = []
        for session in group.sessions:
            self.registry.close(session)
            closed.append(session.name)
        self.groups.pop(group.name, None)
        if self.shell.user_ns.get(group.name) is group:
            del self.shell.user_ns[group.name]
        return closed

    def disconnect(self, name: str) -> None:
        group = self.groups[name]
        closed = self._close_group(group)
        print(f"Disconnected group {name} ({', '.join(closed) or 'no open member'}); removed {name}")

    def forget_all(self) -> None:
        """Every group goes (``%rpyc_disconnect --all`` and unloading close the members themselves)."""
        for group in list(self.groups.values()):
            self._close_group(group)

    def reconnect(self, name: str) -> None:
        group = self.groups[name]
        members = group.sessions
        lost = [s for s in members if s.lost()]
        if not members:
            raise UsageError(f"the group {name} has no open member: %rpyc_connect … --group {name} --force")
        if not lost:
            print(f"All {len(members)} members of {name} are connected: nothing to reconnect")
            return
        outcome = open_all(lost, self.registry.reopen, close_failed=False)
        for s in lost:
            if outcome[s.name] is not None:
                print(f"{s.name}: {outcome[s.name]}", file=sys.stderr, flush=True)
        again = [f"{s.name} {s.address} (pid {s.remote_pid})" for s in lost if outcome[s.name] is None]
        print(f"Reconnected {len(again)} of the {len(lost)} lost members of {name}" + (f": {', '.join(again)}"
                                                                                         if again else ""))

    # -- %%rpyc GROUP / a,b,c / --all -----------------------------------------------------------
    def wants(self, args: argparse.Namespace) -> bool:
        """Whether a ``%%rpyc`` cell is for several connections."""
        name = args.name
        return bool(args.all) or (name is not None and ("," in name or name not in self.registry.sessions))

    def members(self, args: argparse.Namespace) -> List[Session]:
        """The sessions a ``%%rpyc`` cell runs on: a group's, those named ``a,b,c``, or all."""
        sessions = self.registry.sessions
        if args.all:
            if args.name:
                raise UsageError("give a connection, a group, a,b,c or --all, not two of them")
            if not sessions:
                raise UsageError("no rpyc connection is open; open one with %rpyc_connect")
            return list(sessions.values())
        out: List[Session] = []
        for item in args.name.split(","):
            item = item.strip()
            if not item:
                raise UsageError(f"{args.name!r}: an empty name between commas")
            if item in self.groups:
                found = self.groups[item].sessions
                if not found:
                    raise UsageError(f"the group {item} has no open member: %rpyc_connect … --group {item} --force")
            elif item in sessions:
                found = [sessions[item]]
            else:
                known = ", ".join([*self.groups, *sessions]) or "none"
                raise UsageError(f"no connection or group named {item!r} (open: {known})")
            out.extend(s for s in found if s not in out)
        return out

    def run_cell(self, args: argparse.Namespace, cell: str) -> Any:
        """``%%rpyc`` on several connections at once (see ``RunMagics.rpyc``)."""
        sessions = self.members(args)
        push, pull = checked_cell(args, cell)
        values = {}
        trusted = all(s.target.trust for s in sessions)
        for name in push:  # all checked before anything is sent
            if name not in self.shell.user_ns:
                raise UsageError(f"--push {name}: no such variable here")
            try:
                transfer.Outgoing(self.shell.user_ns[name], trusted)
            except (TypeError, ValueError) as e:
                hint = (", so it is not copied" if trusted else
                        "; copying it needs pickle, which only --trust connections use")
                raise UsageError(f"--push {name}: {e}{hint}") from None
            values[name] = self.shell.user_ns[name]
        copy = {"compress": self.settings.compress, "progress": self.settings.progress}
        results = self.runner.run_cell(sessions, cell, values, pull, args.timeout, copy)
        return results if results.has_value else None

    # -- results ------------------------------------------------------------------------------
    def _bind_results(self, results: Results) -> None:
        ns = self.shell.user_ns
        ns["_rpyc_results"] = results
        if not results.errors:
            ns.update(results.pulled)

    def _describe(self, results: Results) -> Dict[str, str]:
        """The text of each value: remote ones through the display path, all requests at once."""
        remote = [(m, v) for m, v in results.items() if _rpyc.is_netref(v)]
        texts = {}
        for (member, _), bundle in zip(remote, remote_bundles([v for _, v in remote], self.registry, self.limits,
                                                              rich=False)):
            texts[member] = bundle[0]["text/plain"]
        for member, value in results.items():
            if member not in texts:
                try:
                    texts[member] = pretty.pretty(value, max_width=100)
                except Exception as e:
                    texts[member] = f"<repr raised {type(e).__name__}>"
        return {m: _cap(t, m) for m, t in texts.items()}


def _cap(text: str, member: str) -> str:
    lines = text.splitlines()
    cut = "\n".join(lines[:CELL_LINES])[:CELL_CHARS]
    if cut == text:
        return text
    return f"{cut}… [whole value: _rpyc_results[{member!r}]]"
