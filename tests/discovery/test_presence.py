"""Presence rules, driven by a fake clock (plain numbers) — no sleeps, no sockets."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from quorum.discovery.presence import (
    HEARTBEAT_INTERVAL_S,
    ONLINE_WINDOW_S,
    Answered,
    Goodbye,
    HeartbeatSent,
    Presence,
    PresenceEvent,
    Refused,
    Seen,
    apply,
    due_heartbeats,
    is_online,
    next_change,
    online,
)


@dataclass
class FakeClock:
    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def run(state: Presence, clock: FakeClock, *events: PresenceEvent) -> Presence:
    for event in events:
        state = apply(state, event, clock.now)
    return state


def test_a_peer_seen_over_mdns_is_known_offline_and_due_at_once() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"))
    assert state.known() == {"b"}
    assert online(state, clock.now) == frozenset()
    assert due_heartbeats(state, clock.now) == {"b"}


def test_an_answer_makes_a_peer_online_for_sixty_seconds() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"), HeartbeatSent("b"), Answered("b"))
    assert online(state, clock.now) == {"b"}
    assert is_online(state, "b", clock.advance(ONLINE_WINDOW_S - 0.001))
    assert not is_online(state, "b", clock.advance(0.001))  # exactly 60 s of silence
    assert online(state, clock.now) == frozenset()
    assert state.known() == {"b"}  # silence does not forget


def test_heartbeats_every_thirty_seconds_keep_a_peer_online() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"))
    for _ in range(40):  # 20 minutes
        for node_id in due_heartbeats(state, clock.now):
            state = run(state, clock, HeartbeatSent(node_id), Answered(node_id))
        assert online(state, clock.now) == {"b"}
        assert due_heartbeats(state, clock.now) == frozenset()
        clock.advance(HEARTBEAT_INTERVAL_S)
        assert due_heartbeats(state, clock.now) == {"b"}


def test_an_unanswered_heartbeat_is_not_resent_before_thirty_seconds() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"), HeartbeatSent("b"))
    assert due_heartbeats(state, clock.advance(HEARTBEAT_INTERVAL_S - 1)) == frozenset()
    assert due_heartbeats(state, clock.advance(1)) == {"b"}


def test_a_pushed_heartbeat_also_postpones_ours() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Answered("b"))
    assert state.known() == {"b"} and online(state, clock.now) == {"b"}
    assert due_heartbeats(state, clock.advance(HEARTBEAT_INTERVAL_S - 1)) == frozenset()
    assert due_heartbeats(state, clock.advance(1)) == {"b"}


def test_a_changed_advert_asks_for_a_heartbeat_now() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"), HeartbeatSent("b"), Answered("b"))
    clock.advance(5)
    state = run(state, clock, Seen("b"))  # e.g. its models digest changed
    assert due_heartbeats(state, clock.now) == {"b"}
    assert online(state, clock.now) == {"b"}
    state = run(state, clock, HeartbeatSent("b"))
    assert due_heartbeats(state, clock.now) == frozenset()


def test_goodbye_removes_at_once() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"), Answered("b"), Seen("c"), Answered("c"))
    state = run(state, clock, Goodbye("b"))
    assert online(state, clock.now) == {"c"}
    assert state.known() == {"c"}
    assert "b" not in due_heartbeats(state, clock.advance(3600))
    assert run(state, clock, Goodbye("nobody")) == state


def test_a_refused_connection_takes_a_peer_offline_at_once_until_it_answers() -> None:
    clock = FakeClock()
    state = run(Presence(), clock, Seen("b"), HeartbeatSent("b"), Answered("b"))
    clock.advance(10)
    state = run(state, clock, Refused("b"))
    assert online(state, clock.now) == frozenset()
    assert state.known() == {"b"}
    assert due_heartbeats(state, clock.now) == frozenset()  # 30 s after the last heartbeat
    assert due_heartbeats(state, clock.advance(20)) == {"b"}
    state = run(state, clock, HeartbeatSent("b"), Answered("b"))
    assert online(state, clock.now) == {"b"}


def test_a_late_event_never_moves_time_back() -> None:
    state = apply(Presence(), Answered("b"), 100.0)
    state = apply(state, Answered("b"), 50.0)
    assert is_online(state, "b", 159.0)
    state = apply(state, HeartbeatSent("b"), 120.0)
    state = apply(state, HeartbeatSent("b"), 110.0)
    assert due_heartbeats(state, 149.0) == frozenset()


def test_next_change_is_the_next_heartbeat_or_expiry() -> None:
    assert next_change(Presence(), 0.0) is None
    state = apply(Presence(), Answered("b"), 100.0)
    assert next_change(state, 100.0) == 100.0 + HEARTBEAT_INTERVAL_S
    state = apply(state, HeartbeatSent("b"), 130.0)
    assert next_change(state, 130.0) == 100.0 + ONLINE_WINDOW_S
    assert next_change(state, 159.0) == 160.0  # heartbeat and expiry both at 160
    assert next_change(state, 160.5) is None  # offline, and the heartbeat is due now
    state = apply(state, Seen("c"), 130.0)  # due now: not a future change
    assert next_change(state, 130.0) == 100.0 + ONLINE_WINDOW_S


def test_states_are_values() -> None:
    a = run(Presence(), FakeClock(), Seen("b"), Seen("a"), Answered("c"))
    b = run(Presence(), FakeClock(), Answered("c"), Seen("a"), Seen("b"))
    assert a == b and hash(a) == hash(b)
    assert [p.node_id for p in a.peers] == ["a", "b", "c"]


EVENT_KINDS = st.sampled_from([Seen, Answered, HeartbeatSent, Refused, Goodbye])
STEPS = st.lists(st.tuples(EVENT_KINDS, st.sampled_from("abc"), st.floats(0, 90)), max_size=40)


@given(STEPS, st.floats(0, 120))
def test_online_matches_the_rules_written_out(
    steps: list[tuple[type[PresenceEvent], str, float]], wait: float
) -> None:
    """Reference model, rules 2, 5 and 6 over the log: the last answer counts unless
    a refusal or a goodbye came after it; it counts for 60 s."""
    state, now, log = Presence(), 0.0, []
    for kind, node_id, gap in steps:
        now += gap
        state = apply(state, kind(node_id), now)
        log.append((now, kind, node_id))
    now += wait
    last_answer: dict[str, float | None] = {}
    for t, kind, node_id in log:
        if kind is Answered:
            last_answer[node_id] = t
        elif kind in (Refused, Goodbye):
            last_answer[node_id] = None
    expected = {n for n, t in last_answer.items() if t is not None and now - t < ONLINE_WINDOW_S}
    assert online(state, now) == expected
    assert online(state, now) <= state.known()
    last_kind = {node_id: kind for _, kind, node_id in log}  # rule 1: known until a goodbye
    assert state.known() == {n for n, kind in last_kind.items() if kind is not Goodbye}
