"""Properties of ``choose`` over random snapshots and random health."""

from __future__ import annotations

import contextlib
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from quorum.config import EngineKind, ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import Holder, Route
from quorum.routing import (
    ENDPOINTS,
    Circuit,
    Health,
    HolderHealth,
    HolderKey,
    available,
    choose,
    circuit,
    estimate,
    key_of,
)
from quorum.routing.choose import EQUAL_FACTOR, WAIT_MARGIN
from quorum.routing.estimate import known_run_s
from tests.routing.helpers import holder, req, snap

MODELS = ["m1", "m2", "m3"]

holders = st.builds(
    holder,
    st.sampled_from(MODELS),
    st.sampled_from(list(ServiceType)),
    node=st.sampled_from(["a", "b", "c", "d"]),
    route=st.sampled_from(list(Route)),
    service=st.sampled_from(["s1", "s2"]),
    engine=st.sampled_from(list(EngineKind)),
    loaded=st.sampled_from([True, False, None]),
    online=st.booleans(),
)
times = st.floats(0, 100)
entries = st.builds(
    HolderHealth,
    in_flight=st.integers(0, 10),
    consecutive_failures=st.integers(0, 6),
    cooldown_until=st.none() | times,
    cooldown_s=st.sampled_from([0.0, 5.0, 10.0]),
    probing=st.booleans(),
    ttfb_ewma_s=st.none() | st.floats(0, 20),
    last_ok=st.none() | times,
    last_seq=st.integers(-1, 50),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Holder], Health, float]:
    hs = draw(st.lists(holders, max_size=14))
    keys = sorted({key_of(h) for h in hs})
    state: dict[HolderKey, HolderHealth] = {}
    limits: dict[HolderKey, int] = {}
    for key in keys:
        if draw(st.booleans()):
            entry = draw(entries)
            if entry.cooldown_until is None and entry.probing:
                continue  # not a reachable state: probing only happens with a cooldown
            state[key] = entry
        if draw(st.booleans()):
            limits[key] = draw(st.integers(1, 8))
    health = Health(MappingProxyType(state), MappingProxyType(limits), seq=60)
    return hs, health, draw(times)


def cooling(health: Health, h: Holder, now: float) -> bool:
    return circuit(health.get(key_of(h)), now) in (Circuit.OPEN, Circuit.PROBING)


@given(
    worlds(),
    st.sampled_from(sorted(ENDPOINTS)),
    st.booleans(),
    st.sampled_from([0, 1 << 30]),
)
def test_choose_with_health(
    world: tuple[list[Holder], Health, float], path: str, forwarded: bool, size: int
) -> None:
    hs, health, now = world
    request = req("m1", path, forwarded=forwarded, size_bytes=size)
    eligible = [
        h
        for h in hs
        if h.model == "m1"
        and h.type in request.types
        and h.online
        and (not forwarded or h.route is Route.LOCAL)
    ]
    try:
        picked = choose(snap(*hs), request, health, now)
    except (ModelNotFound, NoReachableHolder):
        assert all(cooling(health, h, now) for h in eligible)
        return
    # Only holders of the model and type, online; never a cooling one, first or not.
    assert picked
    assert all(h in eligible for h in picked)
    assert not any(cooling(health, h, now) for h in picked)
    assert {key_of(h) for h in eligible if not cooling(health, h, now)} == {
        key_of(h) for h in picked
    }
    # Deterministic for the same snapshot and health, whatever the snapshot's order.
    assert choose(snap(*reversed(hs)), request, health, now) == picked
    assert choose(snap(*hs), request, health, now) == picked
    # By expected completion: a holder before another is never more than
    # EQUAL_FACTOR x WAIT_MARGIN slower than it; a full one goes first only if quicker.
    in_place = [h for h in picked if size == 0 or health.get(key_of(h)).cooldown_until is None]
    known = [r for h in picked if (r := known_run_s(health, h, now)) is not None]
    unknown = min(known, default=1.0)
    totals = {key_of(h): estimate(health, h, now, unknown).total_s for h in in_place}
    for i, x in enumerate(in_place):
        for y in in_place[i + 1 :]:
            tx, ty = totals[key_of(x)], totals[key_of(y)]
            assert tx <= EQUAL_FACTOR * WAIT_MARGIN * ty + 1e-9
            if not available(health, x, now) and available(health, y, now):
                assert tx < ty


@given(worlds())
def test_choose_never_mutates_health(world: tuple[list[Holder], Health, float]) -> None:
    hs, health, now = world
    before = dict(health.holders)
    with contextlib.suppress(ModelNotFound, NoReachableHolder):
        choose(snap(*hs), req("m1"), health, now)
    assert dict(health.holders) == before
