"""The capacity model and the expected-completion estimate: pure, on a fake clock."""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace

import pytest
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
from quorum.routing.capacity import BASE_TTL_S, LEVEL_TTL_S, Speed, base_s, learned_slots
from quorum.routing.estimate import REPORT_TTL_S
from tests.routing.helpers import holder, req, snap


def test_level_one_is_the_base_and_a_saturated_level_caps_the_slots() -> None:
    speed = learn(NO_SPEED, 1, 0.2, 0.0, 0.3)
    speed = learn(speed, 2, 0.21, 0.1, 0.3)
    assert base_s(speed, 1.0) == 0.2
    assert learned_slots(speed, 1.0) is None  # level 2 runs as fast: not saturated
    speed = learn(speed, 3, 0.4, 0.2, 0.3)  # the third waited for a slot...
    assert learned_slots(speed, 1.0) is None  # ... or was slowed by something else, once
    speed = learn(speed, 3, 0.4, 0.3, 0.3)  # twice: it waits for a slot
    assert learned_slots(speed, 1.0) == 2


def test_levels_are_forgotten_after_their_ttl_so_the_cap_is_tried_again() -> None:
    speed = learn(learn(learn(NO_SPEED, 1, 1.0, 0.0, 0.3), 2, 2.0, 0.0, 0.3), 2, 2.0, 0.0, 0.3)
    assert learned_slots(speed, 1.0) == 1
    # The cap keeps requests from level 2, so level 2 is kept while level 1 is fed...
    later = learn(speed, 1, 1.0, LEVEL_TTL_S + 1, 0.3)
    assert 2 in later.levels and learned_slots(later, LEVEL_TTL_S + 1) == 1
    # ... but not for ever: then the holder is tried at level 2 again, one more at once.
    much_later = learn(learn(later, 1, 1.0, BASE_TTL_S + 1, 0.3), 1, 1.0, BASE_TTL_S + 1, 0.3)
    assert 2 not in much_later.levels and learned_slots(much_later, BASE_TTL_S + 1) == 2
    # Level 2 runs as fast now (the engine got a second slot): one more again.
    now = BASE_TTL_S + 2
    much_later = learn(much_later, 2, 1.0, now, 0.3)
    assert learned_slots(much_later, now) == 2  # seen once: not enough
    much_later = learn(much_later, 2, 1.0, now, 0.3)
    assert learned_slots(much_later, now) == 3
    for _ in range(2):
        much_later = learn(much_later, 3, 1.0, now, 0.3)
    assert learned_slots(much_later, now) == 4
    # Level 4 waits: capped at 3 again.
    for _ in range(2):
        much_later = learn(much_later, 4, 2.0, now, 0.3)
    assert learned_slots(much_later, now) == 3


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


def _streams(speed: Speed, level: int, latency: float, first: float, times: int = 3) -> Speed:
    for i in range(times):
        speed = learn(speed, level, latency, 0.1 * i, 0.3, ttfb_s=first)
    return speed


def test_a_stream_that_waited_for_a_slot_shows_it_in_its_first_byte() -> None:
    # Four slots of 0.2 s: a fifth stream waits about a fifth of a run. Its whole time
    # (0.24 s) stays under 1.3x the base, but its first byte comes 40 ms later.
    speed = NO_SPEED
    for level in (1, 2, 3, 4):
        speed = _streams(speed, level, 0.2, 0.02)
    assert learned_slots(speed, 1.0) is None
    assert learned_slots(_streams(speed, 5, 0.24, 0.06), 1.0) == 4
    # The same whole times without a stream's first byte say nothing of a wait.
    whole = NO_SPEED
    for level, latency in ((1, 0.2), (2, 0.2), (3, 0.2), (4, 0.2), (5, 0.24)):
        whole = learn(whole, level, latency, 0.0, 0.3, ttfb_s=latency)
    assert learned_slots(whole, 1.0) is None
    # A first byte a little later under load (prefill beside others) is no wait.
    assert learned_slots(_streams(speed, 5, 0.21, 0.035), 1.0) is None


def test_a_node_short_of_cpu_answering_later_at_each_level_is_no_wait() -> None:
    # Each level's first byte 10 ms later than the one below (the node's own loop lags
    # as it runs more): 150 ms later at level 16 than at level 1, yet no level waited.
    speed = NO_SPEED
    for level in range(1, 17):
        speed = _streams(speed, level, 0.2, 0.02 + 0.01 * level)
    assert learned_slots(speed, 1.0) is None


@given(st.floats(0.05, 5), st.floats(0.0, 0.04), st.integers(2, 64))
def test_streams_that_never_waited_never_cap_the_slots(run: float, jitter: float, top: int) -> None:
    speed = NO_SPEED
    for level in range(1, top + 1):
        speed = _streams(speed, level, run, 0.1 * run + jitter * run)
    assert learned_slots(speed, 1.0) is None


def test_tokens_per_second_are_learned_over_the_generation() -> None:
    streamed = learn(NO_SPEED, 1, 1.0, 0.0, 0.3, tokens=40, ttfb_s=0.2)
    assert streamed.tokens_per_s == pytest.approx(50.0)  # 40 tokens after the first byte
    whole = learn(NO_SPEED, 1, 1.0, 0.0, 0.3, tokens=40, ttfb_s=1.0)
    assert whole.tokens_per_s == pytest.approx(40.0)
    assert learn(NO_SPEED, 1, 1.0, 0.0, 0.3).tokens_per_s is None


def test_an_unmeasured_holder_takes_one_request_before_its_speed_is_known() -> None:
    a, b, c = holder(node="a"), holder(node="b"), holder(node="c")
    health = started(Health(), key_of(a), 0.0)
    # a runs one and has not answered: it counts as full, the others go first.
    assert choose(snap(a, b, c), req(), health, 0.0)[-1] == a
    health = started(started(health, key_of(b), 0.0), key_of(c), 0.0)
    assert {e.slots for e in (estimate(health, h, 0.0) for h in (a, b, c))} == {1}
    # Once a answered (0.5 s), its learned speed and the default slots count.
    health = finished(health, key_of(a), 0.5, True, 0.5, level=1)
    assert estimate(health, a, 0.5).slots == 8
    # A holder whose engine publishes its slots is not held to one.
    published = replace(holder(node="d"), limit=4)
    assert estimate(started(Health(), key_of(published), 0.0), published, 0.0).slots == 4


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


def test_a_level_not_seen_yet_counts_as_if_the_holder_ran_only_what_was_seen() -> None:
    h = holder(node="medium")
    health = _taught(h, 0.4)
    health = finished(started(health, key_of(h), 0.0), key_of(h), 0.0, True, 0.6, level=3)
    for _ in range(6):
        health = started(health, key_of(h), 0.0)
    # The seventh would start at level 7: seen up to 3 (once, not enough to cap the slots),
    # so it counts as if the holder ran 3 at once: 7 / 3 of level 3's time.
    assert estimate(health, h, 0.0).run_s == pytest.approx(0.6 * 7 / 3)
    assert limit_of(health, h, 0.0) == 8


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


def test_a_report_of_this_nodes_own_requests_does_not_outlive_them() -> None:
    lan = holder(node="b", route=Route.LAN)
    key = key_of(lan)
    health = started(started(Health(), key, 0.0), key, 0.0)
    # The peer's answer says 2 run there: this node's own two, nobody else's.
    health = reported(health, key, Load(in_flight=2, queued=0, service_s=0.25), 0.0)
    assert estimate(health, lan, 0.0).busy == 2
    health = finished(finished(health, key, 0.5, True, 0.5), key, 0.5, True, 0.5)
    assert estimate(health, lan, 0.5).busy == 0  # they ended: the peer is idle
    # Another node's 3 requests count on top of this node's own, for less as they age.
    health = reported(started(health, key, 1.0), key, Load(4, 0, 0.25), 1.0)
    assert estimate(health, lan, 1.0).busy == 4
    assert estimate(health, lan, 1.0 + REPORT_TTL_S / 3).busy == 1 + 2


def test_a_report_made_when_a_request_started_there_counts_the_requests_of_then() -> None:
    # An answer's head comes after it waited inside the peer's engine: meanwhile this
    # node's own requests there went from 6 (when the peer counted) down to 2.
    lan = holder(node="b", route=Route.LAN)
    key = key_of(lan)
    health = Health()
    for _ in range(2):
        health = started(health, key, 0.0)
    health = reported(health, key, Load(in_flight=6, queued=0, service_s=0.3), 1.0, own=6)
    assert estimate(health, lan, 1.0).busy == 2  # only this node's two still running


def test_the_peers_announced_limit_and_configuration_come_before_learning() -> None:
    h = holder(engine=EngineKind.OPENAI)
    health = _taught(h, 1.0)
    for _ in range(2):
        health = finished(started(health, key_of(h), 0.0), key_of(h), 0.0, True, 3.0, level=2)
    assert limit_of(health, h, 0.0) == 1  # learned: level 2 waited
    assert limit_of(health, h) == 8  # without ``now``: the engine's default
    assert limit_of(health, replace(h, limit=4), 0.0) == 4  # a local engine published it


def test_a_peer_that_answers_as_if_it_ran_fewer_runs_fewer_before_it_says_so() -> None:
    lan = replace(holder(node="b", route=Route.LAN), limit=8)  # its last presence said 8
    health = _taught(lan, 0.25)
    for _ in range(2):
        health = finished(started(health, key_of(lan), 0.0), key_of(lan), 0.0, True, 0.5, level=3)
    assert limit_of(health, lan, 0.0) == 2  # the third waited over there
    assert limit_of(health, lan) == 8
    assert limit_of(health, replace(lan, limit=1), 0.0) == 1  # never above what it announced


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
