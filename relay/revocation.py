"""Closing tunnels whose credentials stopped counting: a removed node's key, a previous token.

A join is checked when it happens; this covers the tunnels already open. Every
``SWEEP_S`` (one presence period) the relay reads from the store which node keys
are removed and which cluster CAs are accepted (the current one, and a previous
one while its rotation's grace lasts: ``relay.cluster_tokens``), and closes every
tunnel that joined with a removed key or with a CA no longer accepted. The admin
API sweeps at once after it removes a node or ends a rotation; a change made on
the store by the CLI, or by another relay sharing the store, takes effect within
one period. ``revoked`` decides, without I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from relay.hub import Hub
from relay.store import Store

log = logging.getLogger("relay.revocation")

SWEEP_S = 30.0


@dataclass(frozen=True, slots=True)
class Held:
    """What one open tunnel joined with."""

    cluster_id: str
    node_id: str
    fingerprint: str | None
    ca_id: str


def revoked(
    held: Iterable[Held], accepted: set[tuple[str, str]], removed: set[tuple[str, str]]
) -> list[tuple[Held, str]]:
    """The tunnels to close, and why. ``accepted``: (cluster id, CA id) pairs a node may join
    with now; ``removed``: (cluster id, key fingerprint) of removed nodes. A cluster whose CA
    the relay never learnt (made before it kept CAs) has no pair: its tunnels are left be."""
    known = {cluster for cluster, _ in accepted}
    out = []
    for h in held:
        if h.fingerprint is not None and (h.cluster_id, h.fingerprint) in removed:
            out.append((h, "this node was removed from the cluster"))
        elif h.ca_id and h.cluster_id in known and (h.cluster_id, h.ca_id) not in accepted:
            out.append((h, "the cluster's token was rotated and the previous one retired"))
    return out


def _read(store: Store, now: float) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    accepted = store.accepted_cas(now=now)
    removed = {(k.cluster_id, k.fingerprint) for k in store.node_keys() if k.removed_at is not None}
    return accepted, removed


async def sweep(store: Store, hub: Hub) -> int:
    """Close every open tunnel whose key or CA no longer counts; how many were closed."""
    accepted, removed = await asyncio.to_thread(_read, store, time.time())
    held = [
        Held(link.cluster_id, link.node_id, link.fingerprint, link.ca_id)
        for link in hub.nodes()
        if link.node_id is not None
    ]
    closed = 0
    for h, why in revoked(held, accepted, removed):
        closed += hub.drop(h.cluster_id, h.node_id, why)  # (it logs why)
    return closed


async def removed(store: Store, hub: Hub, cluster_id: str, node_id: str) -> None:
    """A node was just removed: no connection without a proof may use its id, its tunnel
    is closed now, and so is any other tunnel with its key (under another id)."""
    hub.bound.add((cluster_id, node_id))
    hub.drop(cluster_id, node_id, "this node was removed from the cluster")
    await sweep(store, hub)


async def run(store: Store, hub: Hub, period_s: float = SWEEP_S) -> None:
    """Sweep every ``period_s`` until cancelled; a failed read is logged and retried."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await sweep(store, hub)
        except Exception:
            log.exception("could not check open tunnels against removed keys and tokens")
