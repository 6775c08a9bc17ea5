"""What relays say to each other about revocations (``relay.mesh.revocations``): pure."""

from __future__ import annotations

import pytest

from quorum.errors import RemoteProtocolError
from relay.mesh.revocations import ClustersRevoked, decode, encode, subject


def test_a_revocation_round_trips() -> None:
    for message in (
        ClustersRevoked("r1", ("c1", "c2"), "an API key of this cluster was revoked"),
        ClustersRevoked("r2", ("c1",), "the cluster's owner is disabled", suspend=True),
        ClustersRevoked("r3", (), ""),
    ):
        assert decode(encode(message)) == message
    assert subject("quorum.eu") == "quorum.eu.revoke"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"t": "drop", "relay": "r", "clusters": [], "why": ""}',
        b'{"t": "revoke", "relay": "a b", "clusters": [], "why": ""}',
        b'{"t": "revoke", "relay": "r", "clusters": "c1", "why": ""}',
        b'{"t": "revoke", "relay": "r", "clusters": [1], "why": ""}',
        b'{"t": "revoke", "relay": "r", "clusters": [""], "why": ""}',
        b'{"t": "revoke", "relay": "r", "clusters": [], "why": 3}',
        b'{"t": "revoke", "relay": "r", "clusters": [], "why": "", "suspend": 1}',
        b'{"t": "revoke", "relay": "r", "clusters": []}',
    ],
)
def test_anything_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)
