"""``quorum doctor``'s LAN check: does mDNS multicast get through, and who answers."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from dataclasses import dataclass

import aiohttp
from zeroconf._dns import DNSQuestion
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

from quorum.config.models import Config
from quorum.discovery.interfaces import local_nics, select_addresses
from quorum.discovery.txt import SERVICE_TYPE
from quorum.doctor.checks import Timeouts
from quorum.doctor.report import Check, Finding, Status
from quorum.errors import NoInterface

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353


@dataclass(frozen=True, slots=True)
class MulticastResult:
    address: str
    looped: bool  # our own query came back: multicast is let through on this interface
    nodes: tuple[str, ...]  # Quorum instances that answered
    error: str | None = None


async def check_multicast(
    config: Config, session: aiohttp.ClientSession, timeouts: Timeouts
) -> list[Finding]:
    if not config.discovery.enabled:
        return [Finding(Check.MULTICAST, Status.INFO, "LAN discovery is off (discovery.enabled)")]
    nics = local_nics()
    try:
        addresses = select_addresses(nics, config.discovery.interfaces or None)
    except NoInterface as exc:
        return [
            Finding(
                Check.MULTICAST,
                Status.FAIL,
                str(exc),
                "connect to a network, or name an interface in discovery.interfaces",
            )
        ]
    names = {n.address: n.name for n in nics}
    results = await asyncio.gather(
        *(asyncio.to_thread(probe_multicast, a, timeouts.multicast_s) for a in addresses)
    )
    found: list[Finding] = []
    for result in results:
        where = f"{names.get(result.address, '?')} ({result.address})"
        if result.error is not None:
            found.append(
                Finding(
                    Check.MULTICAST,
                    Status.FAIL,
                    f"cannot use mDNS on {where}: {result.error}",
                    "another program may hold UDP 5353 exclusively; or choose other "
                    "interfaces with discovery.interfaces",
                )
            )
        elif not result.looped:
            found.append(
                Finding(
                    Check.MULTICAST,
                    Status.FAIL,
                    f"multicast does not get through on {where}",
                    "allow mDNS (UDP 5353 to 224.0.0.251) in the firewall, e.g. sudo ufw allow "
                    "5353/udp; VPN and tunnel interfaces carry no multicast: list your LAN "
                    "interface in discovery.interfaces",
                )
            )
        else:
            heard = (
                f"; Quorum nodes answering: {', '.join(result.nodes)}"
                if result.nodes
                else "; no other Quorum node answered"
            )
            found.append(Finding(Check.MULTICAST, Status.OK, f"multicast works on {where}{heard}"))
    if config.cluster.token is None:
        found.append(
            Finding(
                Check.MULTICAST,
                Status.INFO,
                "no cluster token: this node does not advertise itself on the LAN",
                "make one with 'quorum token new' and set cluster.token on every node",
            )
        )
    return found


def probe_multicast(address: str, wait_s: float) -> MulticastResult:
    """Send one mDNS query for Quorum nodes on ``address``'s interface and listen.

    A socket on UDP 5353 joined to the group should receive our own query
    (multicast loopback): that shows the interface, route and firewall let
    multicast through. Nodes answer a query from a port other than 5353
    straight back to it (RFC 6762 5.1), so the sending socket hears them.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            with contextlib.suppress(OSError):
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("", MDNS_PORT))
        group = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(address)
        listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
        sender.bind((address, 0))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        query = DNSOutgoing(_FLAGS_QR_QUERY)
        query.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        me = sender.getsockname()
        sender.sendto(query.packets()[0], (MDNS_GROUP, MDNS_PORT))
    except OSError as exc:
        listener.close()
        sender.close()
        return MulticastResult(address, False, (), exc.strerror or str(exc))
    looped, nodes = False, set()
    deadline = time.monotonic() + wait_s
    try:
        listener.setblocking(False)
        sender.setblocking(False)
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([listener, sender], [], [], left)
            for sock in ready:
                try:
                    data, source = sock.recvfrom(9000)
                except OSError:
                    continue
                if sock is listener and source[:2] == me[:2]:
                    looped = True
                    continue
                nodes.update(_quorum_instances(data))
    finally:
        listener.close()
        sender.close()
    return MulticastResult(address, looped, tuple(sorted(nodes)))


def _quorum_instances(data: bytes) -> set[str]:
    try:
        message = DNSIncoming(data)
    except Exception:  # malformed packets from the network are not ours to report
        return set()
    if message.is_query():
        return set()
    return {
        str(getattr(record, "alias", "")).removesuffix("." + SERVICE_TYPE)
        for record in message.answers()
        if record.name.lower() == SERVICE_TYPE.lower() and getattr(record, "alias", None)
    }
