"""Rotating a cluster's join token in the store, and what the relay closes afterwards
(``relay.cluster_tokens``, ``relay.revocation.revoked``): no socket here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.errors import InvalidRequest, StoreError
from quorum.secure.cluster import token_ca_id
from relay.admin import parse_grace
from relay.revocation import Held, revoked
from relay.store import Store
from tests.postgres import STORES, held_bytes, open_kind

T0 = 1_700_000_000.0


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """On SQLite and on PostgreSQL alike."""
    with open_kind(request.param, tmp_path) as made:
        yield made


def test_the_previous_token_and_its_ca_count_until_the_grace_ends(store: Store) -> None:
    cluster, old = store.create_cluster("home", now=T0)
    other, _ = store.create_cluster("lab", now=T0)
    new = store.rotate_cluster_token(cluster.id, grace_s=3600, now=T0 + 10)
    assert new != old and new.startswith("qc_")

    # The new token is the cluster's; the old one only as a previous one, within the grace.
    assert store.cluster_for_token(new) == cluster
    assert store.cluster_for_token(old) is None
    assert store.cluster_for_previous_token(old, now=T0 + 3599) == cluster.id
    assert store.cluster_for_previous_token(old, now=T0 + 3610) is None
    assert store.cluster_for_previous_token(new, now=T0 + 20) is None

    # The same for the CAs the two tokens derive.
    old_ca, new_ca = token_ca_id(old), token_ca_id(new)
    found = store.cluster_for_ca(new_ca)
    assert found is not None and found[0] == cluster.id
    assert store.cluster_for_ca(old_ca) is None
    previous = store.previous_ca(old_ca, now=T0 + 20)
    assert previous is not None and previous[0] == cluster.id and "PUBLIC KEY" in previous[1]
    assert store.previous_ca(old_ca, now=T0 + 3610) is None
    accepted = store.accepted_cas(now=T0 + 20)
    assert {(cluster.id, old_ca), (cluster.id, new_ca)} <= accepted
    assert (other.id, token_ca_id(old)) not in accepted
    assert (cluster.id, old_ca) not in store.accepted_cas(now=T0 + 3610)

    (kept,) = store.previous_tokens(cluster.id)
    assert kept.ca_id == old_ca and kept.retired_at == T0 + 10
    assert kept.accepted(T0 + 20) and not kept.accepted(T0 + 3610)
    assert old not in repr(kept) and store.previous_tokens(other.id) == []


def test_finish_refuses_every_previous_token_at_once(store: Store) -> None:
    cluster, first = store.create_cluster("home", now=T0)
    second = store.rotate_cluster_token(cluster.id, grace_s=86400, now=T0)
    third = store.rotate_cluster_token(cluster.id, grace_s=86400, now=T0 + 1)
    # Two rotations in a row: both previous tokens keep their own grace.
    assert store.cluster_for_previous_token(first, now=T0 + 2) == cluster.id
    assert store.cluster_for_previous_token(second, now=T0 + 2) == cluster.id

    assert store.finish_rotation(cluster.id, now=T0 + 5) == 2
    for old in (first, second):
        assert store.cluster_for_previous_token(old, now=T0 + 5) is None
        assert store.previous_ca(token_ca_id(old), now=T0 + 5) is None
    assert store.accepted_cas(now=T0 + 5) == {(cluster.id, token_ca_id(third))}
    assert store.cluster_for_token(third) == cluster
    assert store.finish_rotation(cluster.id, now=T0 + 6) == 0  # nothing left to end


def test_a_grace_of_zero_refuses_the_previous_token_at_once(store: Store) -> None:
    cluster, old = store.create_cluster("home", now=T0)
    store.rotate_cluster_token(cluster.id, grace_s=0, now=T0)
    assert store.cluster_for_previous_token(old, now=T0) is None


def test_a_token_the_cluster_had_or_another_has_is_refused(store: Store) -> None:
    cluster, old = store.create_cluster("home", now=T0)
    _, theirs = store.create_cluster("lab", now=T0)
    for reused in (old, theirs):
        with pytest.raises(StoreError):
            store.rotate_cluster_token(cluster.id, reused, grace_s=60, now=T0)
    assert store.cluster_for_token(old) == cluster  # nothing changed
    assert store.previous_tokens(cluster.id) == []
    store.rotate_cluster_token(cluster.id, grace_s=60, now=T0)
    with pytest.raises(StoreError):
        store.rotate_cluster_token(cluster.id, old, grace_s=60, now=T0 + 1)
    with pytest.raises(StoreError):
        store.rotate_cluster_token("no-such-cluster", grace_s=60, now=T0)
    with pytest.raises(StoreError):
        store.rotate_cluster_token(cluster.id, grace_s=-1, now=T0)


def test_no_token_is_kept_in_clear(store: Store, tmp_path: Path) -> None:
    cluster, old = store.create_cluster("home", now=T0)
    new = store.rotate_cluster_token(cluster.id, grace_s=60, now=T0)
    held = held_bytes(store, tmp_path)
    for token in (old, new):
        assert token.encode() not in held and token[3:20].encode() not in held


def test_open_tunnels_of_a_removed_key_or_a_retired_ca_are_closed() -> None:
    accepted = {("c1", "ca-new"), ("c1", "ca-old"), ("c2", "ca-2")}
    removed = {("c1", "fp-gone")}
    held = [
        Held("c1", "a", "fp-a", "ca-new"),
        Held("c1", "b", "fp-b", "ca-old"),
        Held("c1", "gone", "fp-gone", "ca-new"),
        Held("c1", "stale", "fp-s", "ca-older"),
        Held("c1", "token-only", None, "ca-new"),
        Held("c3", "old-cluster", None, "ca-3"),  # a cluster whose CA the relay never learnt
    ]
    out = {h.node_id: why for h, why in revoked(held, accepted, removed)}
    assert set(out) == {"gone", "stale"}
    assert "removed" in out["gone"] and "rotated" in out["stale"]
    accepted.discard(("c1", "ca-old"))  # the grace ended
    assert {h.node_id for h, _ in revoked(held, accepted, removed)} == {"b", "gone", "stale"}


def test_a_grace_is_a_duration_seconds_or_zero() -> None:
    assert parse_grace("24h") == 86400 and parse_grace(90) == 90 and parse_grace("0") == 0
    for bad in ("soon", -5, True, None, "0h"):
        with pytest.raises(InvalidRequest):
            parse_grace(bad)
