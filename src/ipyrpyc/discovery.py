"""Finding classic servers through rpyc's own registry, and asking each whether it answers.

``rpyc_classic --register`` announces a server to an ``rpyc_registry`` (by UDP broadcast, or
over TCP to a given host) under the name ``SLAVE``; :func:`discover` asks a registry for them
with rpyc's registry clients.  :func:`probe_all` then opens a bare rpyc connection to each
(no classic handshake: rpyc's ``VoidService``) and times one ``ping``, all at once.  Every
failure is a one-line :class:`DiscoveryError`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from rpyc.core.service import VoidService
from rpyc.utils.factory import connect_stream
from rpyc.utils.registry import REGISTRY_PORT, TCPRegistryClient, UDPRegistryClient

from . import _rpyc
from .arguments import format_hostport, parse_address
from .errors import DiscoveryError
from .text import first_line
from .transport import Target, tcp_stream

SERVICE = "SLAVE"  # what rpyc_classic (SlaveService) registers as
BROADCAST = "255.255.255.255"
PROBE_THREADS = 32


@dataclass
class Probe:
    """What a discovered server said to one ping."""

    host: str
    port: int
    latency: Optional[float]  # seconds, None when it did not answer
    problem: str = ""  # why it did not answer

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)


def registry_client(registry: Optional[str], tcp: bool, timeout: float) -> Tuple[Any, str]:
    """rpyc's registry client for ``HOST[:PORT]`` (UDP broadcast without one) and a description."""
    if registry is None:
        if tcp:
            raise DiscoveryError("--tcp needs --registry HOST: a TCP registry is asked at its address")
        return UDPRegistryClient(ip=BROADCAST, port=REGISTRY_PORT, timeout=timeout), \
            f"UDP broadcast {BROADCAST}:{REGISTRY_PORT}"
    try:
        host, port = parse_address(registry)
    except ValueError as e:
        raise DiscoveryError(f"--registry: {e}") from None
    port = port or REGISTRY_PORT
    where = format_hostport(host, port)
    if tcp:
        return TCPRegistryClient(host, port=port, timeout=timeout), f"the TCP registry {where}"
    return UDPRegistryClient(ip=host, port=port, timeout=timeout), f"the UDP registry {where}"


def discover(registry: Optional[str] = None, tcp: bool = False, timeout: float = 2.0) -> List[Tuple[str, int]]:
    """``[(host, port)]`` of the classic servers registered with the registry, sorted."""
    client, where = registry_client(registry, tcp, timeout)
    start = time.monotonic()
    try:
        found = client.discover(SERVICE)
    except socket.gaierror as e:
        raise DiscoveryError(f"cannot reach {where}: {first_line(e)}") from None
    except ConnectionRefusedError:
        raise DiscoveryError(f"{where} refused the connection: is rpyc_registry --mode TCP running there?") from None
    except (socket.timeout, TimeoutError):
        raise DiscoveryError(f"no rpyc registry answered at {where} within {timeout:g} s") from None
    except OSError as e:
        raise DiscoveryError(f"cannot reach {where}: {first_line(e)}") from None
    except Exception as e:  # an answer that is not brine
        raise DiscoveryError(f"{where} sent something that is not a registry's answer ({type(e).__name__})") from None
    if not found:
        if time.monotonic() - start >= 0.9 * timeout:  # rpyc's clients answer () on silence too
            raise DiscoveryError(f"no rpyc registry answered at {where} within {timeout:g} s")
        raise DiscoveryError(f"{where} knows no classic server (servers register with rpyc_classic --register)")
    try:
        servers = {(str(h), int(p)) for h, p in found}
    except (TypeError, ValueError):
        raise DiscoveryError(f"{where} sent something that is not a list of servers") from None
    return sorted(servers, key=_address_key)


def _address_key(server: Tuple[str, int]) -> Tuple[Any, ...]:
    try:
        return (0, ipaddress.ip_address(server[0]), server[1])
    except ValueError:
        return (1, server[0], server[1])


def probe(host: str, port: int, timeout: float) -> Probe:
    """Connect without the classic handshake and time one rpyc ping."""
    target = Target(host=host, port=port, connect_timeout=timeout, timeout=timeout)
    try:
        stream = tcp_stream(target)
    except OSError as e:
        return Probe(host, port, None, first_line(e))
    _rpyc.set_read_timeout(stream, timeout)
    try:
        conn = connect_stream(stream, service=VoidService, config={"sync_request_timeout": timeout})
    except Exception as e:
        stream.close()
        return Probe(host, port, None, first_line(e))
    try:
        start = time.perf_counter()
        conn.ping(timeout=timeout)
        return Probe(host, port, time.perf_counter() - start)
    except Exception as e:
        return Probe(host, port, None, "no answer" if isinstance(e, TimeoutError) else first_line(e))
    finally:
        try:
            conn.close()
        except Exception:
            pass


def probe_all(servers: Sequence[Tuple[str, int]], timeout: float) -> List[Probe]:
    """:func:`probe` of every server at once, in the given order."""
    if not servers:
        return []
    with ThreadPoolExecutor(min(PROBE_THREADS, len(servers)), thread_name_prefix="ipyrpyc-probe") as pool:
        return list(pool.map(lambda s: probe(s[0], s[1], timeout), servers))
