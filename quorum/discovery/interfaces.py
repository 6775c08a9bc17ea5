"""Which IPv4 addresses discovery advertises and listens on.

:func:`select_addresses` is the pure rule; :func:`local_nics` reads the
machine's interfaces with ``ifaddr`` (a python-zeroconf dependency).

Default (nothing configured): every IPv4 address except loopback
(127.0.0.0/8), link-local (169.254.0.0/16) and addresses on interfaces whose
name starts with one of :data:`SKIPPED_PREFIXES` (container and VM bridges,
their veth ends, and Tailscale, which carries no multicast).

Configured: a list of interface names and/or IPv4 addresses; each must match
something on the machine, and is then used whatever the default rules say
(so ``lo`` or ``docker0`` can be chosen on purpose).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ifaddr

from quorum.discovery.errors import NoInterface

SKIPPED_PREFIXES = ("docker", "br-", "veth", "virbr", "tailscale")

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")


@dataclass(frozen=True, slots=True)
class Nic:
    """One IPv4 address of one interface. ``label`` is the OS's display name, if different."""

    name: str
    address: str
    label: str = ""


def select_addresses(nics: Iterable[Nic], wanted: Sequence[str] | None = None) -> tuple[str, ...]:
    """The IPv4 addresses to use, in interface order, without duplicates.

    Raises :class:`NoInterface` when a wanted item matches no interface or
    address, or when nothing is left.
    """
    nics = list(nics)
    chosen: list[str] = []
    if wanted is None:
        chosen = [nic.address for nic in nics if _default_ok(nic)]
    else:
        for item in wanted:
            matches = [nic.address for nic in nics if item in (nic.name, nic.label, nic.address)]
            if not matches:
                raise NoInterface(f"no IPv4 interface or address matches {item!r}")
            chosen.extend(matches)
    unique = tuple(dict.fromkeys(chosen))
    if not unique:
        raise NoInterface("no usable IPv4 interface for discovery (only loopback or bridges?)")
    return unique


def local_nics() -> list[Nic]:
    """Every IPv4 address of every interface of this machine, as ``ifaddr`` reports them."""
    return [
        Nic(adapter.name, ip.ip, adapter.nice_name if adapter.nice_name != adapter.name else "")
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str)  # ifaddr gives IPv6 addresses as tuples
    ]


def _default_ok(nic: Nic) -> bool:
    address = ipaddress.IPv4Address(nic.address)
    if address in _LOOPBACK or address in _LINK_LOCAL:
        return False
    return not any(n.startswith(SKIPPED_PREFIXES) for n in (nic.name, nic.label) if n)
