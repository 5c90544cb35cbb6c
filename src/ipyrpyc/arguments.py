"""What users type: magic arguments, addresses, module lists and names.

Magic arguments are split like a shell splits them, quotes grouping words, except
that a backslash is an ordinary character, as in IPython's own ``arg_split`` on
Windows: ``--certfile C:\\certs\\client.pem`` arrives as typed.  Every mistake is a
one-line ``UsageError``.
"""

from __future__ import annotations

import keyword
import shlex
from typing import Any, Callable, List, Optional, Tuple

from IPython.core.error import UsageError

DEFAULT_PORT = 18812
DEFAULT_SSL_PORT = 18821
# rpyc waits with poll(milliseconds), a C int: past ~24.8 days every call raises OverflowError.
MAX_TIMEOUT = 1e6


def split(line: str) -> List[str]:
    """Shell-like words; quotes group and are removed, backslashes are kept."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    return list(lexer)


def parse(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic's argument string with its ``@magic_arguments`` parser."""
    try:
        argv = split(line)
    except ValueError as e:
        raise UsageError(f"%{magic.__name__}: cannot parse arguments: {e}") from None
    return magic.parser.parse_args(argv)  # type: ignore[attr-defined]


def parse_address(text: str) -> Tuple[str, Optional[int]]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    port_text: Optional[str] = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"malformed address {text!r}: expected [IPv6]:PORT")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"malformed address {text!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a hostname, or an IPv6 address without a port
    if not host or any(c.isspace() or c in "/@[]" for c in host):
        raise ValueError(f"malformed host in {text!r}")
    port = None if port_text is None else parse_port(port_text)
    return host, port


def parse_port(text: Any) -> int:
    try:
        port = int(str(text), 10)
    except ValueError:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, not {text!r}")
    return port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_modules(spec: str) -> List[Tuple[str, str]]:
    """``"sys os np=numpy os.path"`` -> [(name suffix, module)]; the prefix is added later."""
    out: List[Tuple[str, str]] = []
    for item in spec.replace(",", " ").split():
        alias, sep, module = item.partition("=")
        if not sep:
            module, alias = alias, alias.replace(".", "_")
        parts = module.split(".")
        if not module or not all(p.isidentifier() for p in parts):
            raise ValueError(f"not a module name: {module!r}")
        if not alias.isidentifier():
            raise ValueError(f"not a valid name: {alias!r}")
        out.append((alias, module))
    return out


def check_identifier(name: str, what: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{what} must be a Python identifier, not {name!r}")
    return name


def names_list(text: str, what: str) -> List[str]:
    """``"a, b,c"`` -> ["a", "b", "c"], each a Python identifier."""
    return [check_identifier(n.strip(), what) for n in text.split(",") if n.strip()]


def check_timeout(value: Optional[float], what: str = "--timeout") -> Optional[float]:
    """A positive number of seconds up to :data:`MAX_TIMEOUT`, or None; else UsageError."""
    if value is not None and not (0 < value <= MAX_TIMEOUT):
        raise UsageError(f"{what} must be a positive number of seconds, at most {MAX_TIMEOUT:.0f}, not {value}")
    return value
