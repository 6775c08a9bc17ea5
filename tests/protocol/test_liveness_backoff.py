"""Ping schedule, death verdict and reconnect delays, with an injected clock and rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.protocol import Liveness, Reconnect, backoff


class FixedRng:
    """An rng that always returns the same fraction."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_ping_due_every_interval_with_jitter_spread() -> None:
    live = Liveness(100.0, interval=10, dead_after=25, jitter=0.2)
    assert live.next_ping_due(100.0, 0.0) == 110.0
    assert live.next_ping_due(100.0, 1.0) == pytest.approx(112.0)
    assert live.next_ping_due(100.0, -1.0) == pytest.approx(108.0)
    live.on_ping_sent(110.0)
    assert live.next_ping_due(111.0, 0.0) == 120.0
    assert live.next_ping_due(130.0, 0.0) == 130.0  # overdue: now, never in the past


def test_silent_peer_is_dead_after_dead_after_and_any_frame_revives() -> None:
    live = Liveness(0.0)
    assert not live.is_dead(24.9)
    assert live.is_dead(25.0)
    live.on_frame_received(20.0)
    assert live.dead_at() == 45.0
    assert not live.is_dead(44.0)
    live.on_frame_received(10.0)  # an out-of-order clock reading never moves death closer
    assert live.dead_at() == 45.0


def test_liveness_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Liveness(0.0, interval=30, dead_after=25)
    with pytest.raises(ValueError):
        Liveness(0.0, jitter=1.5)
    with pytest.raises(ValueError):
        Liveness(0.0).next_ping_due(0.0, 2.0)


def test_first_retry_is_within_one_second() -> None:
    assert backoff(0, FixedRng(0.0)) == 0.0
    assert backoff(0, FixedRng(0.999)) == pytest.approx(0.999)


def test_backoff_ceiling_doubles_up_to_thirty_seconds() -> None:
    ceilings = [backoff(n, FixedRng(1.0)) for n in range(8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff(10_000, FixedRng(1.0)) == 30.0  # no overflow for huge attempt counts
    with pytest.raises(ValueError):
        backoff(-1, FixedRng(0.5))


@given(st.integers(0, 200), st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_bounds(attempt: int, seed: int) -> None:
    delay = backoff(attempt, random.Random(seed))
    assert 0.0 <= delay < (1.0 if attempt == 0 else min(30.0, 2.0**attempt))


def test_same_rng_same_delays() -> None:
    first = [backoff(n, random.Random(7)) for n in range(6)]
    assert first == [backoff(n, random.Random(7)) for n in range(6)]


def test_reconnect_counter_resets_only_after_a_minute_of_health() -> None:
    rng = FixedRng(1.0)
    state = Reconnect()
    delays = []
    for _ in range(4):
        delay, state = state.next_delay(rng)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    # Up for 59 s, then lost: keeps backing off.
    state = state.connected(1000.0).disconnected(1059.0)
    delay, state = state.next_delay(rng)
    assert delay == 16.0
    # Up for a full minute: starts over with the quick first try.
    state = state.connected(2000.0).disconnected(2060.0)
    delay, state = state.next_delay(rng)
    assert delay == 1.0
    assert state == Reconnect(attempt=1)


def test_disconnect_without_connect_keeps_the_count() -> None:
    state = Reconnect(attempt=3).disconnected(50.0)
    assert state.attempt == 3
