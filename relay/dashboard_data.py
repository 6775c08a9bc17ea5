"""What the dashboard shows, as JSON built by pure functions from the store's values.

One ``snapshot`` holds every page: the fleet (each node of each cluster), the
node connections refused lately (a node id with another key than its own, a
removed node's key), the models with their holders, the API keys (never a key,
only its prefix), and one cluster's usage over a time window, in buckets, by
model, node and key.
The relay's live tunnels (``LinkView``) are read on the event loop by the
caller; the store's rows in a worker thread; this module only combines them.

A node's state on the page:

- ``online``: its tunnel to this relay is open and its last heartbeat is under
  60 s old (the routing rule, ``presence.is_online``);
- ``draining``: connected, but it said it is shutting down;
- ``silent``: connected, but no heartbeat for 60 s (never routed to);
- ``offline``: no tunnel to this relay. A closed tunnel shows at once, even
  though its last heartbeat is still "fresh".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorum.protocol import ModelInfo, RequestUsage
from relay.admin import cluster_json, key_json
from relay.presence import is_online
from relay.refusals import Refusal
from relay.store import ApiKey, Cluster, NodeSeen, UsagePoint

JSON = dict[str, Any]

WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600, 120),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
"""Usage window -> (its length, one bucket), in seconds."""
DEFAULT_WINDOW = "24h"
MAX_GROUPS = 8
"""Series drawn per chart; the rest are summed into one "other" series."""
RECENT = 20


@dataclass(frozen=True, slots=True)
class LinkView:
    """What this relay knows of a connected node's tunnel, read on the event loop."""

    cluster_id: str
    node_id: str
    name: str
    remote: str
    connected_at: float
    in_flight: int
    draining: bool
    models: tuple[ModelInfo, ...] | None
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    since_ms: int
    bucket_ms: int
    buckets: tuple[int, ...]


def window(name: str | None, now: float) -> Window:
    """The buckets of a usage window ending with the one ``now`` falls in (UTC-aligned)."""
    chosen = name if name in WINDOWS else DEFAULT_WINDOW
    length_s, bucket_s = WINDOWS[chosen]
    bucket_ms = bucket_s * 1000
    last = int(now * 1000) // bucket_ms * bucket_ms
    count = length_s // bucket_s
    buckets = tuple(last - (count - 1 - i) * bucket_ms for i in range(count))
    return Window(chosen, buckets[0], bucket_ms, buckets)


def node_state(connected: bool, draining: bool, last_seen: float | None, now: float) -> str:
    if not connected:
        return "offline"
    if draining:
        return "draining"
    return "online" if is_online(last_seen, now) else "silent"


def _services(models: Iterable[ModelInfo]) -> list[JSON]:
    """A node's models by the service (engine) that serves them."""
    types: dict[str, set[str]] = defaultdict(set)
    held: dict[str, list[str]] = defaultdict(list)
    for m in models:
        types[m.service or "-"].add(m.type)
        held[m.service or "-"].append(m.id)
    return [
        {"name": name, "types": sorted(types[name]), "models": held[name]} for name in sorted(held)
    ]


@dataclass(frozen=True, slots=True)
class _Node:
    cluster_id: str
    node_id: str
    name: str
    models: tuple[ModelInfo, ...]
    last_seen: float | None
    link: LinkView | None


def _merge(seen: Sequence[NodeSeen], links: Sequence[LinkView]) -> list[_Node]:
    """Stored heartbeats and live tunnels; a tunnel's heartbeat is the fresher one."""
    live = {(v.cluster_id, v.node_id): v for v in links}
    out: dict[tuple[str, str], _Node] = {}
    for s in seen:
        link = live.get((s.cluster_id, s.node_id))
        out[(s.cluster_id, s.node_id)] = _Node(
            s.cluster_id, s.node_id, s.name, s.models, s.last_seen, link
        )
    for key, v in live.items():
        stored = out.get(key)
        if v.models is None and stored is not None:
            continue  # connected, no heartbeat yet on this tunnel: keep what the store knows
        last = v.last_seen if stored is None or stored.last_seen is None else stored.last_seen
        if v.last_seen is not None and last is not None:
            last = max(last, v.last_seen)
        out[key] = _Node(
            v.cluster_id,
            v.node_id,
            v.name or (stored.name if stored else ""),
            v.models if v.models is not None else (),
            last,
            v,
        )
    return list(out.values())


def fleet(
    clusters: Sequence[Cluster], seen: Sequence[NodeSeen], links: Sequence[LinkView], now: float
) -> list[JSON]:
    """Every node of every cluster: state, last heartbeat, tunnel, services, load."""
    names = {c.id: c.name for c in clusters}
    rows: list[JSON] = []
    for n in _merge(seen, links):
        link = n.link
        rows.append(
            {
                "cluster": names.get(n.cluster_id, "?"),
                "cluster_id": n.cluster_id,
                "node_id": n.node_id,
                "name": n.name or n.node_id[:8],
                "state": node_state(
                    link is not None, link is not None and link.draining, n.last_seen, now
                ),
                "connected": link is not None,
                "last_seen": n.last_seen,
                "seen_s_ago": None
                if n.last_seen is None
                else round(max(0.0, now - n.last_seen), 1),
                "route": None
                if link is None
                else {
                    "via": "tunnel",
                    "remote": link.remote,
                    "connected_s": round(max(0.0, now - link.connected_at), 1),
                },
                "in_flight": None if link is None else link.in_flight,
                "services": _services(n.models),
                "models": len({m.id for m in n.models}),
            }
        )
    state_order = {"online": 0, "draining": 1, "silent": 2, "offline": 3}
    rows.sort(key=lambda r: (r["cluster"], state_order[r["state"]], r["name"], r["node_id"]))
    return rows


def models(
    fleet_rows: Sequence[JSON], seen: Sequence[NodeSeen], links: Sequence[LinkView]
) -> list[JSON]:
    """Each model of each cluster, its types and every node holding it."""
    state = {(r["cluster_id"], r["node_id"]): r for r in fleet_rows}
    found: dict[tuple[str, str], JSON] = {}
    for n in _merge(seen, links):
        row = state[(n.cluster_id, n.node_id)]
        for m in n.models:
            entry = found.setdefault(
                (row["cluster"], m.id),
                {
                    "cluster": row["cluster"],
                    "cluster_id": n.cluster_id,
                    "id": m.id,
                    "types": [],
                    "holders": [],
                },
            )
            if m.type not in entry["types"]:
                entry["types"].append(m.type)
            entry["holders"].append(
                {
                    "node": row["name"],
                    "node_id": n.node_id,
                    "service": m.service,
                    "type": m.type,
                    "state": row["state"],
                }
            )
    out = []
    for key in sorted(found):
        entry = found[key]
        entry["types"].sort()
        entry["holders"].sort(key=lambda h: (h["state"] != "online", h["node"], h["service"]))
        entry["online"] = len({h["node_id"] for h in entry["holders"] if h["state"] == "online"})
        out.append(entry)
    return out


def keys(keys_: Sequence[ApiKey], clusters: Sequence[Cluster], now: float) -> list[JSON]:
    """Every key as ``/api/v1/keys`` lists it (prefix only); active ones first, newest first."""
    names = {c.id: c.name for c in clusters}
    listed = [key_json(k, names.get(k.cluster_id, "?"), now) for k in keys_]
    listed.sort(key=lambda k: (k["state"] != "active", -k["created_at"], k["id"]))
    return listed


def key_label(key_id: str | None, known: Mapping[str, ApiKey]) -> str:
    if key_id is None:
        return "no key (cluster)"
    key = known.get(key_id)
    if key is None:
        return key_id[:8]
    return f"{key.shown} ({key.name})" if key.name else key.shown


@dataclass
class _Sum:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttfb_sum: float = 0.0
    ttfb_count: int = 0

    def add(self, other: _Sum | UsagePoint) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if isinstance(other, _Sum):
            self.ttfb_sum += other.ttfb_sum
            self.ttfb_count += other.ttfb_count
        else:
            self.ttfb_sum += other.ttfb_ms_sum
            self.ttfb_count += other.ttfb_count

    @property
    def avg_ttfb_ms(self) -> float | None:
        return None if not self.ttfb_count else round(self.ttfb_sum / self.ttfb_count, 2)

    def totals(self) -> JSON:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "avg_ttfb_ms": self.avg_ttfb_ms,
        }


@dataclass
class _Group:
    id: str | None
    label: str
    total: _Sum = field(default_factory=_Sum)
    by_bucket: dict[int, _Sum] = field(default_factory=lambda: defaultdict(_Sum))

    def add(self, bucket_ms: int, part: _Sum | UsagePoint) -> None:
        self.total.add(part)
        self.by_bucket[bucket_ms].add(part)

    def json(self, buckets: Sequence[int]) -> JSON:
        points = []
        for b in buckets:
            s = self.by_bucket.get(b)
            points.append(
                [0, 0, None]
                if s is None
                else [s.requests, s.prompt_tokens + s.completion_tokens, s.avg_ttfb_ms]
            )
        return {"id": self.id, "label": self.label, **self.total.totals(), "points": points}


def series(
    points: Sequence[UsagePoint],
    win: Window,
    by: str,
    labels: Mapping[str | None, str] | None = None,
    max_groups: int = MAX_GROUPS,
) -> list[JSON]:
    """Usage by ``model``, ``node`` or ``key``: totals and, per bucket of ``win``,
    ``[requests, tokens, average time to first byte]``. The busiest groups first; past
    ``max_groups`` the rest are one group labelled ``other`` (id None)."""
    groups: dict[str | None, _Group] = {}
    for p in points:
        group = {"model": p.model, "node": p.node, "key": p.key_id}[by]
        if group not in groups:
            label = (labels or {}).get(group) or group or "-"
            groups[group] = _Group(group, label)
        groups[group].add(p.bucket_ms, p)
    ranked = sorted(groups.values(), key=lambda g: (-g.total.requests, g.label))
    if len(ranked) > max_groups:
        other = _Group(None, "other")
        for g in ranked[max_groups - 1 :]:
            for bucket, part in g.by_bucket.items():
                other.add(bucket, part)
        ranked = [*ranked[: max_groups - 1], other]
    return [g.json(win.buckets) for g in ranked]


def usage(
    cluster: Cluster,
    points: Sequence[UsagePoint],
    records: Sequence[RequestUsage],
    keys_: Sequence[ApiKey],
    win: Window,
) -> JSON:
    known = {k.id: k for k in keys_}
    key_labels: dict[str | None, str] = {p.key_id: key_label(p.key_id, known) for p in points}
    total = _Sum()
    for p in points:
        total.add(p)
    return {
        "cluster": cluster.name,
        "cluster_id": cluster.id,
        "window": win.name,
        "bucket_ms": win.bucket_ms,
        "buckets": list(win.buckets),
        "totals": total.totals(),
        "by": {
            "model": series(points, win, "model"),
            "node": series(points, win, "node"),
            "key": series(points, win, "key", key_labels),
        },
        "recent": [
            {
                "time_ms": r.time_ms,
                "model": r.model,
                "endpoint": r.endpoint,
                "route": r.route,
                "node": r.node,
                "status": r.status,
                "ttfb_ms": r.ttfb_ms,
                "duration_ms": r.duration_ms,
                "tokens": None
                if r.prompt_tokens is None and r.completion_tokens is None
                else (r.prompt_tokens or 0) + (r.completion_tokens or 0),
                "key": key_label(r.key_id, known),
                "error": r.error,
            }
            for r in records[:RECENT]
        ],
    }


def refused(refusals: Sequence[Refusal], clusters: Sequence[Cluster], now: float) -> list[JSON]:
    """Node connections refused lately (``relay.refusals``), most recent first: which node
    id, with which key (its fingerprint; None: no certificate), from where, when, how often."""
    names = {c.id: c.name for c in clusters}
    return [
        {
            "cluster": names.get(r.cluster_id, "?"),
            "cluster_id": r.cluster_id,
            "node_id": r.node_id,
            "fingerprint": r.fingerprint,
            "remote": r.remote,
            "why": r.why,
            "count": r.count,
            "first_at": r.first_at,
            "last_at": r.last_at,
            "last_s_ago": round(max(0.0, now - r.last_at), 1),
        }
        for r in refusals
    ]


def snapshot(
    *,
    clusters: Sequence[Cluster],
    seen: Sequence[NodeSeen],
    links: Sequence[LinkView],
    keys_: Sequence[ApiKey],
    usage_of: JSON | None,
    now: float,
    refusals: Sequence[Refusal] = (),
) -> JSON:
    rows = fleet(clusters, seen, links, now)
    return {
        "now": now,
        "clusters": [cluster_json(c) for c in clusters],
        "fleet": rows,
        "models": models(rows, seen, links),
        "keys": keys(keys_, clusters, now),
        "usage": usage_of,
        "refused": refused(refusals, clusters, now),
    }


def without_clocks(snap: Mapping[str, Any]) -> JSON:
    """The snapshot minus what changes only because time passes (for "did anything change")."""
    out = dict(snap)
    out.pop("now", None)
    out["fleet"] = [
        {
            **{k: v for k, v in row.items() if k not in ("seen_s_ago", "route")},
            "route": None
            if row.get("route") is None
            else {k: v for k, v in row["route"].items() if k != "connected_s"},
        }
        for row in snap.get("fleet", ())
    ]
    out["refused"] = [
        {k: v for k, v in row.items() if k != "last_s_ago"} for row in snap.get("refused", ())
    ]
    return out
