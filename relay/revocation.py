"""Acting on credentials that stopped counting, at the tunnels and at the nodes.

Tunnels. A join is checked when it happens; this covers the tunnels already
open. Every ``SWEEP_S`` (one presence period) the relay reads from the store
which node keys are removed, which cluster CAs are accepted (the current one,
and a previous one while its rotation's grace lasts: ``relay.cluster_tokens``)
and which clusters are suspended (their owner is disabled), and closes every
tunnel that joined with a removed key or with a CA no longer accepted, or is of
a suspended cluster. The admin API sweeps at once after it removes a node or
ends a rotation; a change made on the store by the CLI takes effect within one
period. ``revoked`` decides, without I/O.

Nodes. A node caches the relay's answers about API keys (``quorum.keys``). When
the control plane revokes a key, removes a member, or disables or enables a user,
the relay tells the nodes of the clusters concerned at once (``Hub.revoke``:
REVOCATION down their tunnels, and to every other relay of the mesh for theirs),
so their next request is checked again. Disabling a user who owns clusters
suspends them: their tunnels close here and at every relay (``user_changed``),
new ones are refused (``relay.server``), and their keys are refused on the
public ``/v1``; enabling the user lets the nodes back at their next reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from relay.hub import Hub
from relay.store import Store
from relay.users import Membership

log = logging.getLogger("relay.revocation")

SWEEP_S = 30.0


@dataclass(frozen=True, slots=True)
class Held:
    """What one open tunnel joined with."""

    cluster_id: str
    node_id: str
    fingerprint: str | None
    ca_id: str


KEY_REVOKED = "an API key of this cluster was revoked"
MEMBER_REMOVED = "a member left this cluster or was removed"
SUSPENDED = "the cluster's owner is disabled: the relay serves it nothing until they are enabled"


def revoked(
    held: Iterable[Held],
    accepted: set[tuple[str, str]],
    removed: set[tuple[str, str]],
    suspended: frozenset[str] | set[str] = frozenset(),
) -> list[tuple[Held, str]]:
    """The tunnels to close, and why. ``accepted``: (cluster id, CA id) pairs a node may join
    with now; ``removed``: (cluster id, key fingerprint) of removed nodes; ``suspended``: the
    clusters whose owner is disabled. A cluster whose CA the relay never learnt (made before
    it kept CAs) has no pair: its tunnels are left be."""
    known = {cluster for cluster, _ in accepted}
    out = []
    for h in held:
        if h.cluster_id in suspended:
            out.append((h, SUSPENDED))
        elif h.fingerprint is not None and (h.cluster_id, h.fingerprint) in removed:
            out.append((h, "this node was removed from the cluster"))
        elif h.ca_id and h.cluster_id in known and (h.cluster_id, h.ca_id) not in accepted:
            out.append((h, "the cluster's token was rotated and the previous one retired"))
    return out


def _read(store: Store, now: float) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[str]]:
    accepted = store.accepted_cas(now=now)
    removed = {(k.cluster_id, k.fingerprint) for k in store.node_keys() if k.removed_at is not None}
    return accepted, removed, store.suspended_clusters()


async def sweep(store: Store, hub: Hub) -> int:
    """Close every open tunnel whose key or CA no longer counts, or whose cluster is
    suspended; how many were closed."""
    accepted, removed, suspended = await asyncio.to_thread(_read, store, time.time())
    held = [
        Held(link.cluster_id, link.node_id, link.fingerprint, link.ca_id)
        for link in hub.nodes()
        if link.node_id is not None
    ]
    closed = 0
    for h, why in revoked(held, accepted, removed, suspended):
        closed += hub.drop(h.cluster_id, h.node_id, why)  # (it logs why)
    return closed


async def removed(store: Store, hub: Hub, cluster_id: str, node_id: str) -> None:
    """A node was just removed: no connection without a proof may use its id, its tunnel
    is closed now, and so is any other tunnel with its key (under another id)."""
    hub.bound.add((cluster_id, node_id))
    hub.drop(cluster_id, node_id, "this node was removed from the cluster")
    await sweep(store, hub)


async def keys_changed(hub: Hub, cluster_id: str, why: str) -> None:
    """A key of the cluster was revoked (or rotated), or a member removed: its nodes, here
    and at every relay, check keys again from their next request. Returns once the nodes
    here were sent word (bounded)."""
    hub.revoke((cluster_id,), why)
    await hub.revocations_sent((cluster_id,))


def _places(store: Store, user_id: str) -> tuple[list[str], list[str]]:
    """(clusters the user owns, every cluster where they have a place or a key)."""
    owned, touched = [], []
    for m in store.memberships(user_id):
        touched.append(m.cluster_id)
        if m.role is Membership.OWNER:
            owned.append(m.cluster_id)
    owners = store.key_owners()
    touched += [k.cluster_id for k in store.keys(None) if owners.get(k.id) == user_id]
    return owned, touched


async def user_changed(store: Store, hub: Hub, user_id: str, *, disabled: bool) -> None:
    """An operator disabled or enabled a user. Disabled: the clusters they own are suspended
    (their tunnels close, here and at every relay). Either way every node of a cluster where
    they have a place or a key checks keys again from its next request."""
    owned, touched = await asyncio.to_thread(_places, store, user_id)
    what = "disabled" if disabled else "enabled"
    hub.revoke(touched, f"a user of this cluster was {what}")  # (before any GOAWAY below)
    if disabled:
        hub.revoke(owned, SUSPENDED, suspend=True)
    await hub.revocations_sent(touched)


async def run(store: Store, hub: Hub, period_s: float = SWEEP_S) -> None:
    """Sweep every ``period_s`` until cancelled; a failed read is logged and retried."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await sweep(store, hub)
        except Exception:
            log.exception("could not check open tunnels against removed keys and tokens")
