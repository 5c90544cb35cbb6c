"""Groups across real separate hosts: discovery by UDP broadcast and by a TCP registry.

Each host is a network namespace on a private bridge (``tests.support.netns``: 198.18.0.N/24,
no default route, nothing can leave).  A stock ``rpyc_registry`` runs on h1, stock
``rpyc_classic --register`` servers on h2..h4, and the discovering side — a terminal IPython
with the extension, fed a session on stdin — on h5, so that its broadcasts stay inside the
namespaces too.  Where the machine refuses namespaces these tests fail with the reason
(``netns_ok`` in conftest); the loopback variant of discovery is in ``test_groups.py``.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Dict

from tests.support.netns import Host, Network
from tests.support.rpyc_hosts import (
    ACK,
    CLASSIC_PORT,
    ENV,
    UDP_REGISTRATION,
    classic,
    registry,
    script,
    tcp_registration,
)


def ipython(host: Host, session: str, workdir: Path) -> str:
    """Run ``session`` in a terminal IPython in ``host``; its stdout (the session must end cleanly)."""
    env = {**ENV, "IPYTHONDIR": str(workdir / "ipython"), "HOME": str(workdir)}
    res = host.run([script("ipython"), "--quick", "--no-banner", "--colors=NoColor", "--simple-prompt",
                    "--HistoryManager.enabled=False"], input=session, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def marked(output: str, mark: str) -> object:
    m = re.search(rf"^(?:In \[\d+\]: )?{mark}=(.*)$", output, re.M)  # printed after a prompt
    assert m, output
    return json.loads(m.group(1))


SESSION = r"""
import json
%load_ext ipyrpyc
found = %rpyc_discover DISCOVER
print("FOUND=" + json.dumps([p.address + " " + ("yes" if p.latency is not None else p.problem) for p in found.probes]))
%rpyc_connect --discover DISCOVER --group lab
print("MEMBERS=" + json.dumps(lab.addresses))
%%rpyc lab
import os
print("hello from", os.getpid())
os.getpid()


print("PIDS=" + json.dumps(dict(_rpyc_results)))
%%rpyc lab
import socket
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(("198.18.0.5", 9))  # sends nothing: picks the address this host reaches h5 from
me = probe.getsockname()[0]
probe.close()
1 / (me != "198.18.0.2")


print("FAILED=" + json.dumps(sorted(_rpyc_results.errors)))
%rpyc_disconnect lab
"""


def check_session(output: str, servers: Dict[str, object], dead: str) -> None:
    """What the IPython session on h5 saw: every registered server, the dead one not answering, a
    cell on the others at once with labelled output, the member on 198.18.0.2 failing."""
    found = marked(output, "FOUND")
    assert found == [f"{a}:{CLASSIC_PORT} " + ("connection refused" if a == dead else "yes") for a in servers], output
    members = marked(output, "MEMBERS")
    alive = [a for a in servers if a != dead]
    assert sorted(members.values()) == [f"{a}:{CLASSIC_PORT}" for a in alive], output
    assert re.search(rf"^lab\d: cannot connect to {re.escape(dead)}:{CLASSIC_PORT}: connection refused$", output,
                     re.M), output
    pids = marked(output, "PIDS")
    assert {members[m].split(":")[0]: pid for m, pid in pids.items()} == {a: servers[a].proc.pid for a in alive}
    for member, pid in pids.items():
        assert f"[stdout:{member}]\nhello from {pid}\n" in output, output
    failing = [m for m, address in members.items() if address.startswith("198.18.0.2:")]
    assert marked(output, "FAILED") == failing, output
    assert f"[{failing[0]}:execute]:" in output and "ZeroDivisionError: division by zero" in output, output
    assert f"GroupError: 1 of 2 members failed the cell: {failing[0]}" in output, output
    assert "Disconnected group lab" in output, output


def test_udp_broadcast_discovery_and_a_group_across_hosts(net: Network, tmp_path: Path) -> None:
    """UDP registry on h1; servers on h2..h4 register by broadcast; h4's then dies without
    unregistering (SIGTERM), so the registry still names it; IPython on h5 finds them by broadcast."""
    reg = registry(net.hosts[0], "UDP")
    servers = {h.address: classic(h, *UDP_REGISTRATION) for h in net.hosts[1:4]}
    for address, server in servers.items():
        server.wait_for(ACK)
        reg.wait_for(rf"registering {re.escape(address)}:{CLASSIC_PORT} as SLAVE")
    dead = net.hosts[3].address
    assert net.hosts[3].stop(servers[dead].proc) == -signal.SIGTERM
    output = ipython(net.hosts[4], SESSION.replace("DISCOVER", ""), tmp_path)
    check_session(output, servers, dead)
    assert "unregistering" not in reg.text()


def test_tcp_registry_discovery_and_a_group_across_hosts(net: Network, tmp_path: Path) -> None:
    """The same with a TCP registry on h1 that the servers register with and IPython asks by address."""
    reg = registry(net.hosts[0], "TCP")
    servers = {h.address: classic(h, *tcp_registration(net.hosts[0].address)) for h in net.hosts[1:4]}
    for address, server in servers.items():
        server.wait_for(ACK)
        reg.wait_for(rf"registering {re.escape(address)}:{CLASSIC_PORT} as SLAVE")
    dead = net.hosts[2].address
    assert net.hosts[2].stop(servers[dead].proc) == -signal.SIGTERM
    output = ipython(net.hosts[4], SESSION.replace("DISCOVER", f"--registry {net.hosts[0].address} --tcp"), tmp_path)
    check_session(output, servers, dead)


def test_a_silent_registry_and_an_unreachable_member_across_hosts(net: Network, tmp_path: Path) -> None:
    """Broadcast with no registry anywhere: one line after the timeout.  A group with a member whose
    host does not exist on the network (no ARP answer): that member fails after connect_timeout, the
    other connects."""
    server = classic(net.hosts[1])
    net.hosts[4].wait_tcp(net.hosts[1].address, CLASSIC_PORT)
    session = (
        "%load_ext ipyrpyc\n"
        "%config RpycMagics.connect_timeout = 1.0\n"
        "%rpyc_discover --timeout 1\n"
        f"%rpyc_connect {net.hosts[1].address} 198.18.0.99 --group lab\n"
        "print('MEMBERS=' + __import__('json').dumps(list(lab)))\n"
    )
    output = ipython(net.hosts[4], session, tmp_path)
    assert ("UsageError: no rpyc registry answered at UDP broadcast 255.255.255.255:18811 within 1 s"
            in output), output
    assert re.search(r"^lab2: cannot connect to 198\.18\.0\.99:18812: timed out$", output, re.M), output
    assert marked(output, "MEMBERS") == ["lab1"], output
    assert server.proc.poll() is None
