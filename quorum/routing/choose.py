"""``choose(snapshot, request, health, now)``: the ordered candidates.

The rules are in the package docstring (:mod:`quorum.routing`); this module
only carries them out. It reads no clock: ``now`` comes in with the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quorum.config.models import EngineKind, ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import FleetSnapshot, Holder, Route
from quorum.routing.admission import retry_after
from quorum.routing.aliases import NO_ALIASES, resolve_alias
from quorum.routing.estimate import DEFAULT_RUN_S, estimate, known_run_s
from quorum.routing.failover import REPLAY_LIMIT_BYTES
from quorum.routing.health import Health, HolderHealth, key_of

_ROUTE_COST = {Route.LOCAL: 0, Route.LAN: 1, Route.RELAY: 2}

# Ranks, the first sort key: any holder, then a half-open one that a request which
# cannot be replayed should not probe.
_FIRST, _PROBE_LAST = 0, 1

EQUAL_FACTOR = 1.5
"""Free holders within this factor of the best free one count as equal (they take turns)."""
WAIT_MARGIN = 1.1
"""A full holder goes before the free ones when waiting for it is quicker by this factor."""
_MIN_RUN_S = 0.001  # a run time under 1 ms counts as 1 ms (no division by zero)

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
    ahead: int = 0,
) -> tuple[Holder, ...]:
    """Holders that may serve ``request``, best first; raises when there are none.

    ``health`` (none: every holder idle and healthy) and ``now`` (seconds on
    the clock ``health`` was built with) decide load, cooldowns and turns.
    ``ahead``: requests of the model waiting before this one at this node.
    The first candidate is where the request is expected to finish soonest;
    if it has no free slot (``health.available``), waiting for it is quicker
    than starting elsewhere, and the request waits in its model's queue
    (:mod:`quorum.routing.admission`).
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
        ahead=ahead,
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


def _rank(
    online: list[Holder], health: Health, now: float, *, replayable: bool, ahead: int = 0
) -> tuple[Holder, ...]:
    """The holders that are not cooling, in order (the rules in the package docstring)."""
    rows: list[tuple[int, Holder, HolderHealth]] = []
    known: list[float] = []
    for h in online:
        entry = health.get(key_of(h))
        rank = _FIRST
        until = entry.cooldown_until
        if until is not None:
            if entry.probing or now < until:  # open or probing: cooling, skipped
                continue
            if not replayable:
                rank = _PROBE_LAST
        rows.append((rank, h, entry))
        run = known_run_s(health, h, now)
        if run is not None:
            known.append(run)
    if len(rows) <= 1:
        return tuple(row[1] for row in rows)
    # Unknown speed counts as the best known: a new holder gets its turn.
    unknown = min(known, default=DEFAULT_RUN_S)
    estimates = [estimate(health, h, now, unknown) for _, h, _ in rows]
    if ahead:
        # Requests waiting ahead drain through the full holders together.
        rate = sum(e.slots / max(e.run_s, _MIN_RUN_S) for e in estimates if e.busy >= e.slots)
        extra = ahead / rate if rate else 0.0
    best_free: dict[int, float] = {}
    totals = []
    for (rank, _, _), e in zip(rows, estimates, strict=True):
        total = e.total_s
        full = e.busy >= e.slots
        if ahead and full:
            total += extra * e.penalty
        totals.append(total)
        if not full and total < best_free.get(rank, math.inf):
            best_free[rank] = total
    keyed = []
    for (rank, h, entry), e, total in zip(rows, estimates, totals, strict=True):
        free_best = best_free.get(rank, math.inf)
        if e.busy >= e.slots:
            # Waiting for a full holder goes first only when clearly quicker.
            tier, order = (0, total) if total * WAIT_MARGIN < free_best else (2, total)
        elif total <= free_best * EQUAL_FACTOR:
            tier, order = 1, 0.0  # equal free holders take turns
        else:
            tier, order = 2, total
        loaded = 0 if h.loaded is None else 1 if h.loaded else 2
        keyed.append(
            (
                (
                    rank,
                    tier,
                    order,
                    _ROUTE_COST[h.route],
                    entry.last_seq,
                    h.node_name,
                    h.node_id,
                    h.service,
                    h.type,
                    loaded,
                    h.engine,
                ),
                h,
            )
        )
    keyed.sort(key=_sort_key)
    return tuple(h for _, h in keyed)


_Key = tuple[int, int, float, int, int, str, str, str, ServiceType, int, EngineKind]


def _sort_key(item: tuple[_Key, Holder]) -> _Key:
    return item[0]
