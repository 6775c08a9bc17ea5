"""The relay-to-node hop's TLS (``quorum.secure.hop``) over an in-memory byte pipe: the relay
and the node it joined find each other; nobody else gets in either way."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from quorum.secure import ClusterTLS, Identity
from quorum.secure.hop import (
    RelayIdentity,
    hop_server_context,
    peer_fingerprint,
    relay_cert_of,
)
from quorum.secure.stream import TLSFailed, TLSStream
from tests.harness import timeout
from tests.secure.pipes import pipe

TOKEN = "tok-" + "h" * 28


def _node(tmp: Path, name: str) -> ClusterTLS:
    return ClusterTLS(Identity.load_or_create(tmp / name), name, TOKEN, tmp / name)


def _der(relay: RelayIdentity) -> bytes:
    return relay.cert.public_bytes(serialization.Encoding.DER)


async def _talk(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> TLSStream:
    """A handshake and one message each way; the client's stream (raises TLSFailed)."""
    left, right = pipe()
    client = TLSStream(left, client_ctx, server_side=False)
    server = TLSStream(right, server_ctx, server_side=True)

    async def serve() -> None:
        await server.handshake()
        assert await server.receive_some() == b"prompt"
        await server.send_all(b"answer")

    async with asyncio.timeout(timeout(10)):
        served = asyncio.create_task(serve())
        try:
            await client.handshake()
            await client.send_all(b"prompt")
            assert await client.receive_some() == b"answer"
        finally:
            done, _ = await asyncio.wait([served], timeout=timeout(5))
            if not done:
                served.cancel()
        served.result()
    return client


async def test_the_relay_and_its_node_speak_and_the_relay_sees_the_node_key(
    tmp_path: Path,
) -> None:
    relay, node = RelayIdentity.generate(), _node(tmp_path, "node-a")
    header = relay.header_value
    cert = relay_cert_of(header)
    assert cert == _der(relay)  # what the node reads from the join's answer
    client = await _talk(relay.client, hop_server_context(node, cert))
    assert peer_fingerprint(client.ssl_object) == node.identity.fingerprint


async def test_another_relay_key_is_refused_by_the_node(tmp_path: Path) -> None:
    joined, stranger = RelayIdentity.generate(), RelayIdentity.generate()
    node = _node(tmp_path, "node-a")
    with pytest.raises(TLSFailed):
        await _talk(stranger.client, hop_server_context(node, _der(joined)))


async def test_a_member_is_no_relay_to_the_hop(tmp_path: Path) -> None:
    # A member node (it has the token and a certificate of the cluster CA) opening the
    # hop's path to another node through the relay: the node wants the relay's certificate.
    relay, node, member = RelayIdentity.generate(), _node(tmp_path, "a"), _node(tmp_path, "m")
    member.client.check_hostname = False
    with pytest.raises(TLSFailed):
        await _talk(member.client, hop_server_context(node, _der(relay)))


async def test_the_relay_sees_when_a_node_presents_another_key(tmp_path: Path) -> None:
    # A member answering for node-a with its own key: TLS completes (the relay holds no CA),
    # and the fingerprint the relay reads is not the one bound to node-a: it sends nothing.
    relay, node, impostor = RelayIdentity.generate(), _node(tmp_path, "a"), _node(tmp_path, "i")
    client = await _talk(relay.client, hop_server_context(impostor, _der(relay)))
    seen = peer_fingerprint(client.ssl_object)
    assert seen == impostor.identity.fingerprint != node.identity.fingerprint


def test_a_malformed_relay_certificate_is_ignored() -> None:
    assert relay_cert_of(None) is None and relay_cert_of("") is None
    assert relay_cert_of("not base64!") is None
    assert relay_cert_of("aGVsbG8=") is None  # base64, not a certificate
