"""Which relay a node trusts for a hop stream (``quorum.tunnel.hops``): its own relay's
certificate by default, another relay's when the stream's head names one, none for a
malformed one; a relay's context is kept, so its sessions resume."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from quorum.protocol import RequestHead
from quorum.secure import ClusterTLS, Identity
from quorum.secure.hop import HOP_PATH, RELAY_CERT_HEADER, RelayIdentity
from quorum.tunnel.hops import RELAYS_KEPT, HopContexts

TOKEN = "tok-" + "k" * 28


def _der(relay: RelayIdentity) -> bytes:
    return relay.cert.public_bytes(serialization.Encoding.DER)


def _head(*headers: tuple[str, str]) -> RequestHead:
    return RequestHead("POST", HOP_PATH, headers)


def test_a_node_trusts_its_relay_or_the_relay_a_stream_names(tmp_path: Path) -> None:
    tls = ClusterTLS(Identity.load_or_create(tmp_path / "n"), "n", TOKEN, tmp_path / "n")
    own, other = RelayIdentity.generate(), RelayIdentity.generate()
    hops = HopContexts(tls, _der(own))
    assert hops.own is not None
    assert hops.for_head(_head()) is hops.own
    assert hops.for_head(_head((RELAY_CERT_HEADER, own.header_value))) is hops.own
    named = hops.for_head(_head((RELAY_CERT_HEADER.lower(), other.header_value)))
    assert named is not None and named is not hops.own
    assert hops.for_head(_head((RELAY_CERT_HEADER, other.header_value))) is named  # kept
    assert hops.for_head(_head((RELAY_CERT_HEADER, "not a certificate"))) is None
    for _ in range(RELAYS_KEPT + 1):
        hops.for_head(_head((RELAY_CERT_HEADER, RelayIdentity.generate().header_value)))
    assert len(hops._others) == RELAYS_KEPT


def test_a_node_without_its_relays_certificate_serves_no_hop(tmp_path: Path) -> None:
    tls = ClusterTLS(Identity.load_or_create(tmp_path / "n"), "n", TOKEN, tmp_path / "n")
    other = RelayIdentity.generate()
    for hops in (HopContexts(tls, None), HopContexts(None, _der(other))):
        assert hops.own is None
        assert hops.for_head(_head((RELAY_CERT_HEADER, other.header_value))) is None
