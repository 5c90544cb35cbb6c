"""ipyrpyc for scripts: the same connections as the magics open, without IPython."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .arguments import check_identifier
from .errors import ConnectError
from .session import Session
from .transport import make_target


def connect(address: Optional[str] = None, *, port: Optional[int] = None, name: str = "conn",
            timeout: float = 30.0, connect_timeout: float = 5.0, ssl: bool = False,
            keyfile: Optional[str] = None, certfile: Optional[str] = None, ca_certs: Optional[str] = None,
            ssh: Optional[str] = None, ssh_key: Optional[str] = None, ssh_options: Sequence[str] = (),
            trust: bool = False, live_output: bool = True) -> Any:
    """Open an RPyC classic connection as ``%rpyc_connect`` does and return it.

    ``address`` is ``HOST[:PORT]`` (``[::1]:PORT`` for IPv6); without it a private
    embedded server is started, which stops when the connection is closed.  The
    server cannot reach into this process unless ``trust`` is true.  Calls are
    interruptible and bounded by ``timeout``; a lost server raises
    :class:`~ipyrpyc.errors.ConnectionLostError`.

    Raises :class:`~ipyrpyc.errors.ConnectError` (a ``ConnectionError``) when the
    connection cannot be opened, ``ValueError`` for inconsistent arguments::

        try:
            conn = ipyrpyc.connect("lab-pc:18812", timeout=10)
        except ConnectionError as e:
            print(e)
    """
    check_identifier(name, "name")
    target = make_target(address, port=port, ssl=ssl, keyfile=keyfile, certfile=certfile, ca_certs=ca_certs,
                         ssh=ssh, ssh_key=ssh_key, ssh_options=ssh_options, trust=trust, timeout=timeout,
                         connect_timeout=min(connect_timeout, timeout), live_output=live_output,
                         explicit_timeout=True)
    session = Session(name, target, [])
    try:
        session.open()
    except ConnectError:
        session.close()
        raise
    assert session.record is not None
    session.record.on_close = session.close  # conn.close() also stops its embedded server or tunnel
    return session.conn
