"""Memory given back after large request bodies: when, and how often (pure, fake clock)."""

from __future__ import annotations

import asyncio

from quorum.memory import LARGE_BYTES, MIN_INTERVAL_S, LargeBodies, return_large_blocks


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting() -> tuple[LargeBodies, list[str], Clock]:
    calls: list[str] = []
    clock = Clock()
    bodies = LargeBodies(
        trim=lambda: calls.append("trim"), clock=clock, collect=lambda: calls.append("collect")
    )
    return bodies, calls, clock


def test_small_bodies_never_cost_a_collection() -> None:
    bodies, calls, _ = counting()
    for size in (None, 0, LARGE_BYTES - 1):
        with bodies.holding(size):
            pass
    assert calls == []


def test_a_large_body_is_collected_then_trimmed_when_released() -> None:
    bodies, calls, _ = counting()
    with bodies.holding(LARGE_BYTES):
        assert calls == []  # not while it is in use
    assert calls == ["collect", "trim"]


def test_a_flood_of_large_bodies_settles_at_most_twice_a_second() -> None:
    bodies, calls, clock = counting()
    for _ in range(50):  # 50 bodies released within one interval: one settle now
        with bodies.holding(8 * LARGE_BYTES):
            pass
        clock.now += MIN_INTERVAL_S / 100
    assert calls == ["collect", "trim"]
    clock.now += MIN_INTERVAL_S
    bodies.settle()  # what the loop's timer does: the owed settle happens once
    assert calls == ["collect", "trim"] * 2
    bodies.settle()
    assert calls == ["collect", "trim"] * 2  # nothing owed: nothing done


def test_the_owed_settle_runs_by_itself_on_the_loop() -> None:
    async def flood() -> list[str]:
        calls: list[str] = []
        bodies = LargeBodies(trim=lambda: calls.append("trim"), collect=lambda: None)
        for _ in range(3):
            with bodies.holding(LARGE_BYTES):
                pass
        assert calls == ["trim"]
        await asyncio.sleep(MIN_INTERVAL_S * 1.5)  # the scheduled settle's time passes
        return calls

    assert asyncio.run(flood()) == ["trim", "trim"]


def test_glibc_takes_the_threshold() -> None:
    assert return_large_blocks()  # these machines run glibc: the call must take
