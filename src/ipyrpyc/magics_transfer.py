"""``%rpyc_get`` and ``%rpyc_put``: files and directories to and from the server, like ``scp``."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import transfer
from .arguments import parse
from .errors import TransferError
from .magics import MagicsPart
from .session import Session


def split_remote(text: str) -> Tuple[Optional[str], str]:
    """``NAME:PATH`` -> (NAME, PATH); a path without a connection name -> (None, PATH).

    NAME is a Python identifier; a letter followed by ``:\\`` is a Windows drive, not a name.
    """
    if len(text) >= 3 and text[0].isalpha() and text[1] == ":" and text[2] == "\\":
        return None, text
    name, sep, path = text.partition(":")
    if sep and name.isidentifier():
        return name, path
    return None, text


@magics_class
class TransferMagics(MagicsPart):
    """Copy files and directories between this kernel and the server."""

    def _remote(self, text: str) -> Tuple[Session, str]:
        name, path = split_remote(text)
        try:
            session = self.session(name)
        except UsageError as e:
            if name is not None and len(name) == 1:
                raise UsageError(f"{e} ({name}:\\… would be a Windows drive)") from None
            raise
        if session.conn is None:
            raise UsageError(f"{session.name} is not connected: %rpyc_reconnect {session.name}")
        return session, path

    def _link(self, session: Session) -> transfer.Link:
        try:
            return transfer.link_of(session.conn)
        except TransferError as e:
            raise UsageError(str(e)) from None

    @magic_arguments()
    @argument("remote", metavar="[NAME:]REMOTE", help="the server's file or directory; NAME: picks the connection")
    @argument("local", nargs="?", metavar="LOCAL", help="where it goes here (default: its name, here)")
    @argument("-r", "--recursive", action="store_true", help="copy a directory and everything in it")
    @argument("-f", "--force", action="store_true", help="replace a file (or merge into a directory) that exists")
    @argument("--compress", action="store_true", help="zlib-compress the data (slow links; default: "
              "RpycMagics.compress)")
    @line_magic
    def rpyc_get(self, line: str = "") -> Any:
        """Copy a file (with -r, a directory) from the server, like scp.

        Sizes and modification times are kept and a sha256 of the data is compared at the end;
        the copy is written under a temporary name and renamed once complete, so an interrupted
        or failed copy leaves nothing behind; an existing file is only replaced with --force.
        Without ``NAME:`` the connection is the only one open (``C:\\data`` is a Windows path).

        Examples::

            %rpyc_get lab:/data/run1.h5
            %rpyc_get lab:/data/run1.h5 results/
            %rpyc_get -r lab:~/runs/2024 local_runs
        """
        args = parse(self.rpyc_get, line)
        session, remote = self._remote(args.remote)
        link = self._link(session)
        label = f"{session.name}:{remote}"
        try:
            copied = transfer.get(link, remote, args.local, recursive=args.recursive, force=args.force,
                                  compress=args.compress or self.settings.compress,
                                  progress=self.settings.progress, label=label)
        except TransferError as e:
            raise UsageError(str(e)) from None
        print(copied)

    @magic_arguments()
    @argument("local", metavar="LOCAL", help="the file or directory here")
    @argument("remote", metavar="[NAME:]REMOTE", help="where it goes on the server (an existing directory "
              "receives it under its name; NAME: alone is the server's working directory)")
    @argument("-r", "--recursive", action="store_true", help="copy a directory and everything in it")
    @argument("-f", "--force", action="store_true", help="replace a file (or merge into a directory) that exists")
    @argument("--compress", action="store_true", help="zlib-compress the data (slow links; default: "
              "RpycMagics.compress)")
    @line_magic
    def rpyc_put(self, line: str = "") -> Any:
        """Copy a file (with -r, a directory) to the server, like scp.

        Sizes and modification times are kept and a sha256 of the data is compared on the
        server; the file appears under its name only once complete, and an existing one is
        only replaced with --force.

        Examples::

            %rpyc_put config.yaml lab:/etc/myapp/
            %rpyc_put -r calibration lab:~/runs/
        """
        args = parse(self.rpyc_put, line)
        session, remote = self._remote(args.remote)
        link = self._link(session)
        label = f"{session.name}:{remote}"
        try:
            copied = transfer.put(link, args.local, remote, recursive=args.recursive, force=args.force,
                                  compress=args.compress or self.settings.compress,
                                  progress=self.settings.progress, label=label)
        except TransferError as e:
            raise UsageError(str(e)) from None
        print(copied)
