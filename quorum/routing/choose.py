"""``choose(snapshot, request, health, now)``: the ordered candidates.

The rules are in the package docstring (:mod:`quorum.routing`); this module
only carries them out. It reads no clock: ``now`` comes in with the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quorum.config.models import ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import FleetSnapshot, Holder, Route
from quorum.routing.admission import retry_after
from quorum.routing.aliases import NO_ALIASES, resolve_alias
from quorum.routing.failover import REPLAY_LIMIT_BYTES
from quorum.routing.health import DEFAULT_LIMITS, NEVER_USED, REMOTE_LIMIT, Health, key_of

_ROUTE_COST = {Route.LOCAL: 0, Route.LAN: 1, Route.RELAY: 2}

# Ranks, the first sort key: a free holder, then a half-open one a request that
# cannot be replayed should not probe, then holders at their concurrency limit.
_FREE, _PROBE_LAST, _FULL = 0, 1, 2

TIER_FACTOR = 2
"""Scores within this factor of the best of their group count as equal (then they take turns).

Fixed at 2: the tier is then the binary exponent of the ratio, exact and cheap.
"""
_MIN_LATENCY_S = 0.001  # a latency under 1 ms counts as 1 ms (no zero scores)

NO_HEALTH = Health()


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing needs to know of a request; ``size_bytes`` is its body's size."""

    model: str
    types: tuple[str, ...]  # service types (``ServiceType`` values) that may serve it
    label: str = "request"
    forwarded: bool = False
    size_bytes: int = 0


def _named(requested: str, model: str) -> str:
    if requested == model:
        return f"'{model}'"
    return f"'{requested}' (an alias of '{model}')"


def choose(
    snapshot: FleetSnapshot,
    request: RouteRequest,
    health: Health | None = None,
    now: float = 0.0,
    *,
    aliases: Mapping[str, str] = NO_ALIASES,
    replay_limit_bytes: int = REPLAY_LIMIT_BYTES,
) -> tuple[Holder, ...]:
    """Holders that may serve ``request``, best first; raises when there are none.

    ``health`` (none: every holder idle and healthy) and ``now`` (seconds on
    the clock ``health`` was built with) decide load, cooldowns and turns.
    Candidates at their concurrency limit come last: if the first one has no
    free slot (``health.available``), none has, and the request waits in its
    model's queue (:mod:`quorum.routing.admission`).
    """
    if health is None:
        health = NO_HEALTH
    model = resolve_alias(aliases, request.model)
    named = snapshot.by_model.get(model, ())
    if request.forwarded:
        named = tuple(h for h in named if h.route is Route.LOCAL)
    if not named:
        raise ModelNotFound(
            f"The model {_named(request.model, model)} does not exist on any node of this cluster.",
            param="model",
        )
    typed = [h for h in named if h.type in request.types]
    if not typed:
        kinds = ", ".join(sorted({h.type.value for h in named}))
        wanted = " or ".join(request.types)
        raise ModelNotFound(
            f"The model {_named(request.model, model)} is a {kinds} model; a {request.label} "
            f"needs a {wanted} model.",
            param="model",
        )
    online = [h for h in typed if h.online]
    if not online:
        services = ", ".join(sorted({f"{h.service}@{h.node_name}" for h in typed}))
        reasons = sorted({f"{h.service}: {h.down_reason}" for h in typed if h.down_reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        raise NoReachableHolder(
            f"The model {_named(request.model, model)} is held by {services}, but none of "
            f"them can be reached right now{why}."
        )
    ranked = _rank(
        online,
        health,
        now,
        replayable=request.size_bytes <= replay_limit_bytes,
    )
    if not ranked:
        services = ", ".join(sorted({f"{h.service}@{h.node_name}" for h in online}))
        wait = retry_after(next_reopen(health, online, now) - now)
        raise NoReachableHolder(
            f"The model {_named(request.model, model)} is held by {services}, but every one "
            f"failed repeatedly and is cooling down; the next is tried again in {wait} s.",
            retry_after_s=wait,
        )
    return ranked


def next_reopen(health: Health, holders: Iterable[Holder], now: float) -> float:
    """When the first of ``holders`` that is cooling may be probed (``now`` if one is not)."""
    first = math.inf
    for h in holders:
        until = health.get(key_of(h)).cooldown_until
        if until is None:
            return now
        first = min(first, until)
    return first if math.isfinite(first) else now


# A group packs sort keys 1-3 in one int: rank, then must load, then route cost.
_Row = tuple[int, float | None, float, int, Holder]
_DEFAULT_LIMITS = dict(DEFAULT_LIMITS)  # a plain dict: the hot loop looks it up per holder


def _rank(
    online: list[Holder], health: Health, now: float, *, replayable: bool
) -> tuple[Holder, ...]:
    """The holders that are not cooling, in order."""
    entries = health.holders
    limits = health.limits or None
    stale_before = now - health.policy.stale_s
    never = NEVER_USED
    rows: list[_Row] = []
    best_latency: dict[int, float] = {}
    for h in online:
        key = (h.node_id, h.service, h.route)
        entry = entries.get(key, never)
        limit = (limits and limits.get(key)) or (
            _DEFAULT_LIMITS[h.engine] if h.route is Route.LOCAL else h.limit or REMOTE_LIMIT
        )
        rank = _FREE
        until = entry.cooldown_until
        if until is not None:
            if entry.probing or now < until:  # open or probing: cooling, skipped
                continue
            if not replayable:
                rank = _PROBE_LAST
        in_flight = entry.in_flight
        if in_flight >= limit:
            rank = _FULL
        group = rank << 3 | (h.loaded is False) << 2 | _ROUTE_COST[h.route]
        latency = None
        last_ok = entry.last_ok
        if last_ok is not None and last_ok >= stale_before:
            latency = entry.ttfb_ewma_s
            if latency is not None and latency < best_latency.get(group, math.inf):
                best_latency[group] = latency
        weight = (in_flight + 1) / limit * (1 + entry.consecutive_failures)
        rows.append((group, latency, weight, entry.last_seq, h))
    if len(rows) <= 1:
        return tuple(row[4] for row in rows)
    # Unknown latency counts as the best known in its group: a new holder gets its turn.
    scored = []
    best_score: dict[int, float] = {}
    for group, latency, weight, last_seq, h in rows:
        if latency is None:
            latency = best_latency.get(group, 1.0)
        score = max(latency, _MIN_LATENCY_S) * weight
        if score < best_score.get(group, math.inf):
            best_score[group] = score
        scored.append((group, score, last_seq, h))
    keyed = []
    for group, score, last_seq, h in scored:
        # frexp's exponent e of ratio >= 1 is floor(log2(ratio)) + 1, exactly.
        tier = math.frexp(score / best_score[group])[1] - 1
        # Identity last, so the order never depends on the snapshot's order.
        loaded = 0 if h.loaded is None else 1 if h.loaded else 2
        keyed.append(
            ((group, tier, last_seq, h.node_name, h.node_id, h.service, h.type, loaded), h)
        )
    keyed.sort(key=_sort_key)
    return tuple(h for _, h in keyed)


_Key = tuple[int, int, int, str, str, str, ServiceType, int]


def _sort_key(item: tuple[_Key, Holder]) -> _Key:
    return item[0]
