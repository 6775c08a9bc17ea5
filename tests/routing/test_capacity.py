"""The capacity model and the expected-completion estimate: pure, on a fake clock."""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.config import EngineKind
from quorum.fleet import Holder, Load, Route
from quorum.fleet.remote import format_load, parse_load
from quorum.routing import (
    LOAD_S,
    NO_SPEED,
    Health,
    HolderKey,
    available,
    choose,
    estimate,
    finished,
    key_of,
    learn,
    limit_of,
    reported,
    started,
)
from quorum.routing.capacity import BASE_TTL_S, LEVEL_TTL_S, base_s, learned_slots
from quorum.routing.estimate import REPORT_TTL_S
from tests.routing.helpers import holder, req, snap


def test_level_one_is_the_base_and_a_saturated_level_caps_the_slots() -> None:
    speed = learn(NO_SPEED, 1, 0.2, 0.0, 0.3)
    speed = learn(speed, 2, 0.21, 0.1, 0.3)
    assert base_s(speed, 1.0) == 0.2
    assert learned_slots(speed, 1.0) is None  # level 2 runs as fast: not saturated
    speed = learn(speed, 3, 0.4, 0.2, 0.3)  # the third waited for a slot
    assert learned_slots(speed, 1.0) == 2


def test_levels_are_forgotten_after_their_ttl_so_the_cap_is_tried_again() -> None:
    speed = learn(learn(NO_SPEED, 1, 1.0, 0.0, 0.3), 2, 2.0, 0.0, 0.3)
    assert learned_slots(speed, 1.0) == 1
    # The cap keeps requests from level 2, so level 2 is kept while level 1 is fed...
    later = learn(speed, 1, 1.0, LEVEL_TTL_S + 1, 0.3)
    assert 2 in later.levels and learned_slots(later, LEVEL_TTL_S + 1) == 1
    # ... but not for ever: then the holder is tried at level 2 again.
    much_later = learn(later, 1, 1.0, BASE_TTL_S + 1, 0.3)
    assert 2 not in much_later.levels and learned_slots(much_later, BASE_TTL_S + 1) is None


@given(
    st.lists(st.tuples(st.integers(1, 80), st.floats(0.001, 100)), min_size=1, max_size=40),
)
def test_learning_keeps_its_values_in_range(samples: list[tuple[int, float]]) -> None:
    speed = NO_SPEED
    for i, (level, latency) in enumerate(samples):
        speed = learn(speed, level, latency, float(i), 0.3)
    assert speed.base_s is not None
    assert 0.001 <= speed.base_s <= 100
    assert all(1 <= n <= 64 for n in speed.levels)
    slots = learned_slots(speed, float(len(samples)))
    assert slots is None or 1 <= slots < 64


def _taught(h: Holder, latency: float, level: int = 1, now: float = 0.0) -> Health:
    health = started(Health(), key_of(h), now)
    return finished(health, key_of(h), now, True, latency, level=level)


@settings(max_examples=200)
@given(st.integers(0, 30), st.integers(0, 30), st.floats(0.01, 10))
def test_more_busy_never_finishes_sooner(a: int, b: int, run_s: float) -> None:
    h = holder(engine=EngineKind.LLAMACPP)
    base = _taught(h, run_s)
    low, high = sorted((a, b))
    h_low, h_high = base, base
    for _ in range(low):
        h_low = started(h_low, key_of(h), 1.0)
    for _ in range(high):
        h_high = started(h_high, key_of(h), 1.0)
    assert estimate(h_low, h, 1.0).total_s <= estimate(h_high, h, 1.0).total_s


def test_a_model_to_load_costs_a_load() -> None:
    warm, cold = holder(node="a", loaded=True), holder(node="b", loaded=False)
    assert estimate(Health(), cold, 0.0).total_s - estimate(Health(), warm, 0.0).total_s == LOAD_S


def test_waiting_for_a_fast_holder_beats_starting_on_a_slow_one() -> None:
    fast = holder(node="fast", engine=EngineKind.LLAMACPP)  # 4 slots
    slow = holder(node="slow", engine=EngineKind.LLAMACPP)
    health = finished(started(Health(), key_of(fast), 0.0), key_of(fast), 0.0, True, 0.2, level=1)
    health = finished(started(health, key_of(slow), 0.0), key_of(slow), 0.0, True, 1.6, level=1)
    for _ in range(4):
        health = started(health, key_of(fast), 1.0)
    assert not available(health, fast, 1.0) and available(health, slow, 1.0)
    # fast frees a slot in about 0.05 s and runs 0.2 s: quicker than 1.6 s on slow.
    assert choose(snap(fast, slow), req(), health, 1.0)[0] == fast
    # With 30 waiting ahead (1.5 s at 20 a second), the slow one is quicker for this request.
    assert choose(snap(fast, slow), req(), health, 1.0, ahead=30)[0] == slow


def test_a_peers_report_counts_for_less_as_it_ages() -> None:
    lan = holder(node="b", route=Route.LAN)
    health = reported(Health(), key_of(lan), Load(in_flight=300, queued=20, service_s=0.5), 0.0)
    fresh = estimate(health, lan, 0.0)
    half = estimate(health, lan, REPORT_TTL_S / 2)
    stale = estimate(health, lan, REPORT_TTL_S)
    assert fresh.busy == 320 and half.busy == 160 and stale.busy == 0
    assert fresh.wait_s > half.wait_s == stale.wait_s == 0.0  # 320 busy over 256 slots
    assert stale.run_s == 1.0  # the reported run time is gone with the report


def test_the_peers_announced_limit_and_configuration_come_before_learning() -> None:
    h = holder(engine=EngineKind.OPENAI)
    health = _taught(h, 1.0)
    health = finished(started(health, key_of(h), 0.0), key_of(h), 0.0, True, 3.0, level=2)
    assert limit_of(health, h, 0.0) == 1  # learned: level 2 waited
    assert limit_of(health, h) == 8  # without ``now``: the engine's default
    assert limit_of(health, replace(h, limit=4), 0.0) == 4


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_the_load_header_round_trips(in_flight: int, queued: int, ms: int) -> None:
    load = Load(in_flight, queued, ms / 1000)
    assert parse_load(format_load(load)) == load


@given(st.text(max_size=80))
def test_a_bad_load_header_is_ignored(text: str) -> None:
    parsed = parse_load(text)
    assert parsed is None or parsed == parse_load(format_load(parsed))


# -- a whole fleet on a fake clock: the node's queue, engines with slots -------------


@dataclass
class Engine:
    slots: int
    service_s: float
    running: list[float] = field(default_factory=list)  # end times
    queue: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass
class Fleet:
    """Holders of one model, each an engine with slots that queues the rest, behind a
    node that ranks with ``choose`` (with ``ahead``) and learns from each answer."""

    engines: dict[HolderKey, Engine]
    holders: tuple[Holder, ...]
    health: Health = field(default_factory=Health)
    served: Counter[HolderKey] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def run(self, arrivals: list[float]) -> None:
        # (time, order, the request's arrival, where it ran: None until it ends)
        events: list[tuple[float, int, float, tuple[HolderKey, float, int] | None]] = []
        for i, at in enumerate(arrivals):
            heapq.heappush(events, (at, i, at, None))
        waiting: deque[float] = deque()
        n = len(arrivals)
        while events:
            now, _, arrived, ran = heapq.heappop(events)
            if ran is not None:
                key, began, level = ran
                self.health = finished(self.health, key, now, True, now - began, level=level)
                self.latencies.append(now - arrived)
            else:
                waiting.append(arrived)
            ahead = 0
            for arrived in list(waiting):
                first = choose(snap(*self.holders), req(), self.health, now, ahead=ahead)[0]
                if not available(self.health, first, now):
                    ahead += 1
                    continue
                waiting.remove(arrived)
                key = key_of(first)
                level = self.health.get(key).in_flight + 1
                self.health = started(self.health, key, now)
                end = self._engine_end(key, now)
                n += 1
                heapq.heappush(events, (end, n, arrived, (key, now, level)))
                self.served[key] += 1

    def _engine_end(self, key: HolderKey, now: float) -> float:
        engine = self.engines[key]
        engine.running = sorted(t for t in engine.running if t > now)
        start = now if len(engine.running) < engine.slots else engine.running[0]
        if len(engine.running) >= engine.slots:
            engine.running.pop(0)
        end = start + engine.service_s
        engine.running.append(end)
        return end


def test_with_no_configuration_the_fast_holder_carries_the_work() -> None:
    # Generic OpenAI-compatible engines (default limit 8): fast 4 x 0.2 s, slow 1 x 1.6 s.
    fast = holder(node="fast")
    slow = holder(node="slow")
    fleet = Fleet({key_of(fast): Engine(4, 0.2), key_of(slow): Engine(1, 1.6)}, (fast, slow))
    rng = random.Random(5)
    at, arrivals = 0.0, []
    for _ in range(1500):
        at += rng.expovariate(0.7 * (4 / 0.2 + 1 / 1.6))
        arrivals.append(at)
    fleet.run(arrivals)
    assert fleet.served.total() == 1500
    assert fleet.served[key_of(slow)] < 0.05 * 1500, fleet.served
    assert learned_slots(fleet.health.get(key_of(slow)).speed, at) in (1, None)
    ordered = sorted(fleet.latencies)
    assert ordered[int(0.99 * len(ordered))] < 1.0  # never stuck behind the slow one
