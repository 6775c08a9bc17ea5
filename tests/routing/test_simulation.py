"""200 requests over two equal holders split evenly, whatever the timing; a slow one yields."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.fleet import Route
from quorum.routing import Health, key_of, set_limits
from tests.routing.helpers import Simulation, holder, req, run_random, snap

A, B = holder(node="a"), holder(node="b")
EQUAL = snap(A, B)


def within_40_60(sim: Simulation, total: int = 200) -> bool:
    share = sim.served[key_of(A)]
    return sim.served.total() == total and 0.4 * total <= share <= 0.6 * total


def test_one_at_a_time_alternates_exactly() -> None:
    sim = Simulation(EQUAL)
    for i in range(200):
        sim.send(req(), lambda _key: 0.5)
        sim.advance(i + 1.0)  # each ends before the next arrives
    assert sim.served[key_of(A)] == sim.served[key_of(B)] == 100


def test_200_concurrent_split_evenly() -> None:
    sim = Simulation(EQUAL, health=set_limits(Health(), {key_of(A): 500, key_of(B): 500}))
    for _ in range(200):
        sim.send(req(), lambda _key: 10.0)  # none ends before all have started
    assert sim.served[key_of(A)] == sim.served[key_of(B)] == 100
    assert sim.health.get(key_of(A)).in_flight == 100


def test_200_concurrent_at_the_default_limit_queue_and_split() -> None:
    sim = Simulation(EQUAL)  # OpenAI-compatible engines: 8 at a time each
    for _ in range(200):
        sim.send(req(), lambda _key: 1.0)
    sim.drain()
    assert sim.waited > 0
    assert sim.served[key_of(A)] == sim.served[key_of(B)] == 100


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.05, 0.3, 1.0, 5.0]))
def test_random_arrivals_and_latencies_split_within_40_60(seed: int, gap: float) -> None:
    sim = run_random(EQUAL, seed, mean_gap_s=gap)
    assert within_40_60(sim), sim.served


def test_the_same_inputs_give_the_same_split() -> None:
    assert run_random(EQUAL, 7).served == run_random(EQUAL, 7).served


def test_three_equal_lan_holders_share_too() -> None:
    hs = [holder(node=n, route=Route.LAN) for n in "xyz"]
    sim = run_random(snap(*hs), 3, requests=300)
    assert all(80 <= sim.served[key_of(h)] <= 120 for h in hs), sim.served


def test_a_four_times_slower_holder_takes_less() -> None:
    sim = run_random(EQUAL, 11, mean_gap_s=0.3, slower={key_of(B): 4.0})
    assert sim.served[key_of(B)] < 0.4 * 200, sim.served


def test_the_local_holder_takes_everything_while_it_has_room() -> None:
    lan = holder(node="b", route=Route.LAN)
    sim = run_random(snap(A, lan), 5, mean_gap_s=1.0)
    assert sim.served[key_of(A)] > 190, sim.served
