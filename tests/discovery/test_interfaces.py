"""Which addresses discovery uses (pure rule; one harmless read of this machine's interfaces)."""

from __future__ import annotations

import ipaddress

import pytest

from quorum.discovery.errors import NoInterface
from quorum.discovery.interfaces import Nic, local_nics, select_addresses

MACHINE = [
    Nic("lo", "127.0.0.1"),
    Nic("eth0", "192.168.1.20"),
    Nic("eth0", "192.168.1.21"),
    Nic("wlan0", "10.0.0.5"),
    Nic("docker0", "172.17.0.1"),
    Nic("br-3f2a9c1b7d", "172.18.0.1"),
    Nic("veth12ab", "172.18.0.9"),
    Nic("virbr0", "192.168.122.1"),
    Nic("tailscale0", "100.101.102.103"),
    Nic("eth1", "169.254.10.1"),
    Nic("{846EE342-7039-11DE}", "192.168.50.2", label="Ethernet 2"),
]


def test_default_is_every_lan_address_but_loopback_bridges_and_link_local() -> None:
    assert select_addresses(MACHINE) == (
        "192.168.1.20",
        "192.168.1.21",
        "10.0.0.5",
        "192.168.50.2",
    )


def test_configured_names_labels_and_addresses_win_over_the_default_rules() -> None:
    assert select_addresses(MACHINE, ["wlan0"]) == ("10.0.0.5",)
    assert select_addresses(MACHINE, ["docker0", "lo"]) == ("172.17.0.1", "127.0.0.1")
    assert select_addresses(MACHINE, ["192.168.1.21", "eth0"]) == ("192.168.1.21", "192.168.1.20")
    assert select_addresses(MACHINE, ["Ethernet 2"]) == ("192.168.50.2",)


def test_unknown_configured_interface_is_named() -> None:
    with pytest.raises(NoInterface, match="'eth9'"):
        select_addresses(MACHINE, ["eth0", "eth9"])


def test_nothing_usable_is_an_error() -> None:
    with pytest.raises(NoInterface):
        select_addresses([Nic("lo", "127.0.0.1"), Nic("docker0", "172.17.0.1")])
    with pytest.raises(NoInterface):
        select_addresses(MACHINE, [])


def test_local_nics_lists_ipv4_only() -> None:
    nics = local_nics()
    assert all(isinstance(ipaddress.ip_address(n.address), ipaddress.IPv4Address) for n in nics)
