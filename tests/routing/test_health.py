"""Health transitions on a fake clock: in flight, EWMAs, cooldowns and the half-open probe."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from quorum.config import EngineKind
from quorum.fleet import Route
from quorum.routing import (
    Circuit,
    Cooling,
    Health,
    HealthPolicy,
    HolderKey,
    abandoned,
    available,
    circuit,
    cooling,
    finished,
    key_of,
    limit_of,
    retain,
    set_limits,
    started,
)
from quorum.routing.health import REMOTE_LIMIT
from tests.routing.helpers import fail, holder, succeed

KEY: HolderKey = ("id-a", "svc", Route.LOCAL)


def test_in_flight_counts_and_never_goes_negative() -> None:
    h = started(started(Health(), KEY, 0.0), KEY, 0.0)
    assert h.get(KEY).in_flight == 2
    h = finished(h, KEY, 1.0, True, 1.0, 0.1)
    h = abandoned(h, KEY, 1.0, seq=2)
    assert h.get(KEY).in_flight == 0
    assert finished(h, KEY, 2.0, True).get(KEY).in_flight == 0
    assert h.get(KEY).requests == 2


def test_transitions_leave_their_input_alone() -> None:
    before = started(Health(), KEY, 0.0)
    after = fail(before, KEY, 0.0, times=3)
    assert before.get(KEY).in_flight == 1
    assert before.get(KEY).cooldown_until is None
    assert after.get(KEY).cooldown_until == 5.0


def test_ewma_of_ttfb_and_latency() -> None:
    h = finished(started(Health(), KEY, 0.0), KEY, 1.0, True, 2.0, 0.5)
    e = h.get(KEY)
    assert (e.latency_ewma_s, e.ttfb_ewma_s, e.last_ok) == (2.0, 0.5, 1.0)
    h = finished(started(h, KEY, 1.0), KEY, 2.0, True, 4.0, 1.5)
    e = h.get(KEY)
    assert e.latency_ewma_s == pytest.approx(0.3 * 4.0 + 0.7 * 2.0)
    assert e.ttfb_ewma_s == pytest.approx(0.3 * 1.5 + 0.7 * 0.5)
    # Without a ttfb (a JSON answer read whole) the latency stands for it.
    h = finished(started(Health(), KEY, 0.0), KEY, 0.0, True, 3.0)
    assert h.get(KEY).ttfb_ewma_s == 3.0


def test_stale_ewma_restarts_from_the_next_sample() -> None:
    h = succeed(Health(), KEY, 0.0, latency_s=10.0)
    h = succeed(h, KEY, 31.0, latency_s=1.0)
    assert h.get(KEY).latency_ewma_s == 1.0


def test_failures_do_not_change_the_ewma() -> None:
    h = succeed(Health(), KEY, 0.0, latency_s=1.0)
    h = finished(started(h, KEY, 1.0), KEY, 2.0, False, 99.0, 99.0)
    assert h.get(KEY).latency_ewma_s == 1.0


def test_three_consecutive_failures_open_the_circuit() -> None:
    h = fail(Health(), KEY, 0.0, times=2)
    assert circuit(h.get(KEY), 0.0) is Circuit.CLOSED
    h = succeed(h, KEY, 0.5)
    h = fail(h, KEY, 1.0, times=2)
    assert circuit(h.get(KEY), 1.0) is Circuit.CLOSED  # the success reset the count
    h = fail(h, KEY, 1.0)
    e = h.get(KEY)
    assert circuit(e, 1.0) is Circuit.OPEN
    assert (e.cooldown_until, e.cooldown_s, e.consecutive_failures) == (6.0, 5.0, 3)
    assert circuit(e, 5.999) is Circuit.OPEN
    assert circuit(e, 6.0) is Circuit.HALF_OPEN


def test_failed_probes_double_the_cooldown_up_to_a_minute() -> None:
    h, now = fail(Health(), KEY, 0.0, times=3), 0.0
    lengths = []
    for _ in range(6):
        now = h.get(KEY).cooldown_until or now
        h = started(h, KEY, now)
        assert circuit(h.get(KEY), now) is Circuit.PROBING
        h = finished(h, KEY, now + 0.1, False)
        lengths.append(h.get(KEY).cooldown_s)
    assert lengths == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_successful_probe_closes_and_resets() -> None:
    h = fail(Health(), KEY, 0.0, times=3)
    h = fail(started(h, KEY, 5.0), KEY, 5.0)  # a stale failure finishing half-open reopens
    assert h.get(KEY).cooldown_s == 10.0
    h = finished(h, KEY, 5.0, False)  # the earlier request also failed: already open
    assert h.get(KEY).cooldown_until == 15.0
    h = started(h, KEY, 15.0)
    h = finished(h, KEY, 16.0, True, 1.0)
    e = h.get(KEY)
    assert circuit(e, 16.0) is Circuit.CLOSED
    assert (e.consecutive_failures, e.cooldown_s, e.probing) == (0, 0.0, False)
    # The next opening starts from the base cooldown again.
    assert fail(h, KEY, 20.0, times=3).get(KEY).cooldown_s == 5.0


def test_exactly_one_probe_and_an_abandoned_probe_frees_the_turn() -> None:
    a = holder()
    k = key_of(a)
    h = fail(Health(), k, 0.0, times=3)
    h = started(h, k, 1.0)  # an old request still running when it opened
    old = h.seq
    assert not available(h, a, 4.0)
    assert available(h, a, 5.0)
    h = started(h, k, 5.0)
    probe = h.seq
    assert not available(h, a, 5.0)
    assert circuit(h.get(k), 100.0) is Circuit.PROBING  # however long the probe takes
    h = abandoned(h, k, 6.0, old)  # not the probe: still probing
    assert not available(h, a, 6.0)
    h = abandoned(h, k, 6.0, probe)
    assert circuit(h.get(k), 6.0) is Circuit.HALF_OPEN
    assert available(h, a, 6.0)


def test_cooling_lists_every_holder_not_closed() -> None:
    b: HolderKey = ("id-b", "svc", Route.LAN)
    c: HolderKey = ("id-c", "svc", Route.RELAY)
    h = fail(Health(), KEY, 0.0, times=3)
    h = fail(h, b, 2.0, times=3)
    h = succeed(h, c, 0.0)
    assert cooling(h, 6.0) == (
        Cooling("id-a", "svc", Route.LOCAL, Circuit.HALF_OPEN, 5.0, 3, 5.0),
        Cooling("id-b", "svc", Route.LAN, Circuit.OPEN, 7.0, 3, 5.0),
    )
    assert cooling(started(h, KEY, 6.0), 6.0)[0].circuit is Circuit.PROBING


def test_limits_default_per_engine_and_can_be_set() -> None:
    ollama, lms = holder(engine=EngineKind.OLLAMA), holder(node="b", engine=EngineKind.LMSTUDIO)
    assert (limit_of(Health(), ollama), limit_of(Health(), lms)) == (4, 1)
    h = set_limits(Health(), {key_of(ollama): 2})
    assert limit_of(h, ollama) == 2
    h = started(started(h, key_of(ollama), 0.0), key_of(ollama), 0.0)
    assert not available(h, ollama, 0.0)
    with pytest.raises(ValueError, match="at least 1"):
        set_limits(Health(), {KEY: 0})


def test_retain_forgets_gone_holders_but_not_running_requests() -> None:
    gone: HolderKey = ("id-z", "svc", Route.LAN)
    busy: HolderKey = ("id-y", "svc", Route.LAN)
    h = started(succeed(succeed(Health(), KEY, 0.0), gone, 0.0), busy, 0.0)
    kept = retain(h, [KEY])
    assert set(kept.holders) == {KEY, busy}
    assert retain(kept, [KEY, busy]) is kept


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        HealthPolicy(failures=0)
    with pytest.raises(ValueError):
        HealthPolicy(base_cooldown_s=10, max_cooldown_s=5)
    h = fail(Health(policy=HealthPolicy(failures=1, base_cooldown_s=2)), KEY, 0.0)
    assert h.get(KEY).cooldown_until == 2.0


class ProbeMachine(RuleBasedStateMachine):
    """A proxy that checks ``available`` before starting: never two probes at once."""

    def __init__(self) -> None:
        super().__init__()
        self.h = holder()
        self.key = key_of(self.h)
        self.health = Health()
        self.now = 0.0
        self.running: list[tuple[int, bool]] = []  # (seq, started as a probe)

    @rule(dt=st.floats(0, 20))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def start(self) -> None:
        if not available(self.health, self.h, self.now):
            return
        probe = circuit(self.health.get(self.key), self.now) is Circuit.HALF_OPEN
        self.health = started(self.health, self.key, self.now)
        self.running.append((self.health.seq, probe))

    @rule(i=st.integers(0, 20), how=st.sampled_from(["ok", "fail", "abandon"]))
    def end(self, i: int, how: str) -> None:
        if not self.running:
            return
        seq, _ = self.running.pop(i % len(self.running))
        if how == "abandon":
            self.health = abandoned(self.health, self.key, self.now, seq)
        else:
            self.health = finished(self.health, self.key, self.now, how == "ok", 1.0)

    @invariant()
    def at_most_one_probe(self) -> None:
        e = self.health.get(self.key)
        probes = [seq for seq, probe in self.running if probe]
        if e.probing:
            assert probes and e.probe_seq in probes
        assert e.in_flight == len(self.running)
        assert circuit(e, self.now) is Circuit.CLOSED or e.cooldown_until is not None
        assert e.cooldown_s <= self.health.policy.max_cooldown_s

    @invariant()
    def probing_means_unavailable(self) -> None:
        if self.health.get(self.key).probing:
            assert not available(self.health, self.h, self.now)


TestProbeMachine = ProbeMachine.TestCase


def test_a_peers_holder_is_limited_by_the_peer_not_here() -> None:
    local = holder(engine=EngineKind.LMSTUDIO)
    remote = holder(node="b", route=Route.RELAY, engine=EngineKind.LMSTUDIO)
    assert limit_of(Health(), local) == 1
    assert limit_of(Health(), remote) == REMOTE_LIMIT
