"""Node ids bound to keys at the relay: a member's token is not enough to take another
member's node id, and a removed node's key is refused (a real relay process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from quorum.errors import AuthRefused
from quorum.protocol import Limits
from quorum.secure import ClusterTLS, Identity
from quorum.tunnel.dial import dial_relay
from relay.hub import Hub
from tests.link.helpers import until
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.tunnel.helpers import CLUSTER, MemoryRelay, Node, running


def _member(tmp: Path, name: str, node_id: str, token: str) -> ClusterTLS:
    where = tmp / name
    return ClusterTLS(Identity.load_or_create(where), node_id, token, where)


async def test_a_node_id_is_its_first_keys_and_a_removed_key_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    data.mkdir()
    token = create_cluster(data, "home")
    relay = Relay(data).start()
    try:
        victim = _member(tmp_path, "victim", "victim", token)
        # No token needed: the relay kept the CA's public key at 'cluster create'.
        first = await dial_relay(relay.url, "qc_not-the-token-at-all-0000", victim)
        await first.close()  # first join: its key is bound
        again = await dial_relay(relay.url, token, victim)  # the same key again: welcome
        await again.close()

        # A member (it has the token) with its own key, claiming the victim's node id.
        impostor = _member(tmp_path, "impostor", "victim", token)
        with pytest.raises(AuthRefused):
            await dial_relay(relay.url, token, impostor)
        # A certificate of another cluster's CA, presented with our token.
        stranger = _member(tmp_path, "stranger", "stranger", "qc_" + "another-cluster-" * 3)
        with pytest.raises(AuthRefused):
            await dial_relay(relay.url, token, stranger)

        out = relay_cli(data, "node", "remove", "--cluster", "home", "victim")
        assert "removed  victim" in out
        with pytest.raises(AuthRefused):
            await dial_relay(relay.url, token, victim)  # the removed key, under its id ...
        moved = _member(tmp_path, "victim", "victim-2", token)
        with pytest.raises(AuthRefused):
            await dial_relay(relay.url, token, moved)  # ... or under any other
        fresh = await dial_relay(relay.url, token, _member(tmp_path, "new", "victim", token))
        await fresh.close()  # the id itself may come back only with a new key
    finally:
        relay.kill()
    log = relay.log.read_text()
    assert "refused node victim" in log and "another key than the one bound" in log
    assert "the key of a removed node" in log
    assert "is not one of this cluster's" in log
    assert token not in log


async def test_a_cluster_older_than_kept_cas_needs_the_token_once(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    data.mkdir()
    token = create_cluster(data, "home")
    with sqlite3.connect(data / "relay.sqlite3") as db:  # as made before migration 4
        db.execute("UPDATE clusters SET ca_id = NULL, ca_key = NULL")
    relay = Relay(data).start()
    try:
        node = _member(tmp_path, "node", "node-1", token)
        with pytest.raises(AuthRefused):
            await dial_relay(relay.url, "qc_not-the-token-at-all-0000", node)
        joined = await dial_relay(relay.url, token, node)  # refused without, then with it
        await joined.close()
        again = await dial_relay(relay.url, "qc_not-the-token-at-all-0000", node)
        await again.close()  # the relay kept the CA: no token from now on
    finally:
        relay.kill()


async def test_a_bound_node_id_without_a_proof_is_refused_at_hello() -> None:
    hub = Hub(limits=Limits(max_streams=64))
    hub.bound.add((CLUSTER, "victim"))
    relay = MemoryRelay(hub)
    watcher, impostor = Node(relay, "watcher"), Node(relay, "victim")
    async with running(watcher, impostor):
        await until(lambda: hub.refused_ids >= 2)  # refused, and again when it came back
        assert hub.link(CLUSTER, "victim") is None
        assert not watcher.knows("victim")
    await relay.close()
