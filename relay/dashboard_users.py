"""What a signed-in user's dashboard shows: ``dashboard_data``'s snapshot, scoped to them.

The same pages as the admin token's, built from only what ``relay.users``
lets the user see: their clusters (owned or joined), the nodes and models of
those, the keys they may see (an owner every key of the cluster, a member
their own), and usage (an owner the cluster's, a member only requests made
with their own keys). ``account`` adds their place in each cluster, each owned
cluster's members, their personal tokens, and for an operator every user.
Runs in a worker thread (store reads); the live tunnels are read by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay import dashboard_data as data
from relay.refusals import Refusal
from relay.store import Cluster
from relay.user_ops import UserOps, user_json
from relay.users import Membership, User, can_see_key


def _pick(clusters: Sequence[Cluster], ref: str | None) -> Cluster | None:
    for c in clusters:
        if ref in (c.id, c.name):
            return c
    return clusters[0] if clusters else None


def scoped(
    ops: UserOps,
    links: Sequence[data.LinkView],
    cluster: str | None,
    window: str | None,
    refusals: Sequence[Refusal] = (),
) -> data.JSON:
    """The snapshot ``ops.user`` may see; ``refusals`` (refused node keys) for an operator."""
    store, user, now = ops.store, ops.user, ops.clock()
    places = ops.places()
    clusters = [c for c in store.clusters() if c.id in places]
    # An operator sees everything; anyone else reads only their own clusters' rows.
    ids: list[str | None] = [None] if user.operator else [c.id for c in clusters]
    owners = {k: v for cid in ids for k, v in store.key_owners(cid).items()}
    keys = [
        k
        for cid in ids
        for k in store.keys(cid)
        if user.operator or can_see_key(user.id, owners.get(k.id), places[k.cluster_id])
    ]
    seen = [n for cid in ids for n in store.nodes(cid)]
    chosen = _pick(clusters, cluster)
    usage = None
    if chosen is not None:
        win = data.window(window, now)
        points = store.usage_series(chosen.id, since_ms=win.since_ms, bucket_ms=win.bucket_ms)
        if places[chosen.id] is Membership.MEMBER:
            mine = {k.id for k in keys if owners.get(k.id) == user.id}
            points = [p for p in points if p.key_id in mine]
            records = store.user_usage_records(chosen.id, user.id, limit=data.RECENT)
        else:
            records = store.usage_records(chosen.id, limit=data.RECENT)
        usage = data.usage(
            chosen, points, records, [k for k in keys if k.cluster_id == chosen.id], win
        )
    snap = data.snapshot(
        clusters=clusters,
        seen=seen,
        links=[v for v in links if v.cluster_id in places],
        keys_=keys,
        usage_of=usage,
        now=now,
        refusals=refusals,
    )
    for row in snap["fleet"]:  # a member learns where the owner's machines are no more
        if places.get(row["cluster_id"]) is Membership.MEMBER and row.get("route"):
            row["route"] = {**row["route"], "remote": "the owner's network"}
    snap["account"] = {
        "me": ops.me(),
        "places": {cid: role.value for cid, role in places.items()},
        "members": {c.id: ops.members(c.id) for c in clusters if places[c.id] is Membership.OWNER},
        "tokens": ops.tokens(),
        "users": ops.users() if user.operator else None,
        "suspended": sorted(c for c in store.suspended_clusters() if c in places),
    }
    return snap


def for_admin(users: Sequence[User], suspended: set[str]) -> data.JSON:
    """The account part of the admin token's snapshot: no account of its own, every user,
    and the clusters suspended (their owner disabled)."""
    return {
        "me": None,
        "places": None,
        "members": {},
        "tokens": None,
        "users": [user_json(u) for u in users],
        "suspended": sorted(suspended),
    }
