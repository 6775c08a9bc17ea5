"""``choose`` with health: cooldowns, load, latency, turns and aliases."""

from __future__ import annotations

import pytest

from quorum.config import EngineKind, ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import Route
from quorum.routing import (
    REPLAY_LIMIT_BYTES,
    Health,
    available,
    choose,
    key_of,
    set_limits,
    started,
)
from tests.routing.helpers import fail, holder, req, snap, succeed


def test_without_health_the_order_is_loaded_route_name() -> None:
    warm_relay = holder(node="r", route=Route.RELAY, loaded=True)
    cold_local = holder(node="a", loaded=False)
    unknown_lan = holder(node="c", route=Route.LAN)
    warm_lan = holder(node="b", route=Route.LAN, loaded=True)
    assert choose(snap(warm_relay, cold_local, unknown_lan, warm_lan), req()) == (
        warm_lan,
        unknown_lan,  # an engine that does not say counts as loaded
        warm_relay,
        cold_local,
    )


def test_empty_health_is_the_same_as_none() -> None:
    hs = (holder(node="b", route=Route.LAN), holder(node="a"), holder(node="c", loaded=False))
    assert choose(snap(*hs), req(), Health(), 123.0) == choose(snap(*hs), req())


def test_cooling_holder_is_skipped_until_its_cooldown_ends() -> None:
    local, lan = holder(), holder(node="b", route=Route.LAN)
    health = fail(Health(), key_of(local), now=10.0, times=3)
    assert choose(snap(local, lan), req(), health, 10.0) == (lan,)
    assert choose(snap(local, lan), req(), health, 14.9) == (lan,)
    # Half-open: the local holder is back in its place, for one probe.
    assert choose(snap(local, lan), req(), health, 15.0) == (local, lan)
    probing = started(health, key_of(local), 15.0)
    assert choose(snap(local, lan), req(), probing, 15.1) == (lan,)


def test_every_holder_cooling_is_503_saying_when() -> None:
    only = holder()
    health = fail(Health(), key_of(only), now=100.0, times=3)
    with pytest.raises(NoReachableHolder, match=r"cooling down; .* again in 4 s"):
        choose(snap(only), req(), health, 101.0)
    with pytest.raises(NoReachableHolder, match="again in 1 s"):
        choose(snap(only), req(), started(health, key_of(only), 105.0), 105.5)


def test_two_failures_do_not_cool_but_demote() -> None:
    a, b = holder(node="a"), holder(node="b")
    health = fail(Health(), key_of(a), now=1.0, times=2)
    assert choose(snap(a, b), req(), health, 1.0) == (b, a)
    health = succeed(health, key_of(a), 2.0)  # one success clears the failures
    assert choose(snap(a, b), req(), health, 2.0)[0] == b  # b's turn: a started last


def test_a_full_holder_goes_after_a_free_one_unless_waiting_is_quicker() -> None:
    local = holder(engine=EngineKind.LMSTUDIO)  # limit 1
    relay = holder(node="r", route=Route.RELAY)
    health = started(Health(), key_of(local), 0.0)
    assert not available(health, local, 0.0)
    assert choose(snap(local, relay), req(), health, 0.0) == (relay, local)
    # A relay holder that must load the model first: waiting for the local slot is quicker.
    cold = holder(node="r", route=Route.RELAY, loaded=False)
    assert choose(snap(local, cold), req(), health, 0.0) == (local, cold)


def test_configured_limit_wins_over_engine_default() -> None:
    a, b = holder(node="a", engine=EngineKind.VLLM), holder(node="b", route=Route.LAN)
    health = set_limits(Health(), {key_of(a): 1})
    health = started(health, key_of(a), 0.0)
    assert choose(snap(a, b), req(), health, 0.0) == (b, a)


def test_loaded_beats_route_even_when_busy() -> None:
    cold_local = holder(loaded=False)
    warm_lan = holder(node="b", route=Route.LAN, loaded=True)
    health = Health()
    for _ in range(5):
        health = started(health, key_of(warm_lan), 0.0)
    # Still below the limit (8), so the loaded holder stays first.
    assert choose(snap(cold_local, warm_lan), req(), health, 0.0)[0] == warm_lan


def test_much_slower_holder_yields_noise_does_not() -> None:
    fast, slow = holder(node="a"), holder(node="b")
    health = succeed(Health(), key_of(fast), 0.0, latency_s=1.0)
    health = succeed(health, key_of(slow), 0.0, latency_s=1.6)  # over 1.5 times as slow
    s = snap(fast, slow)
    for now in (1.0, 2.0):
        assert choose(s, req(), health, now)[0] == fast
        health = succeed(health, key_of(fast), now, latency_s=1.0)
    # Within a factor of 1.5 they count as equal and take turns.
    health = succeed(Health(), key_of(fast), 0.0, latency_s=1.0)
    health = succeed(health, key_of(slow), 0.0, latency_s=1.4)
    assert choose(s, req(), health, 1.0)[0] == fast  # it started least recently
    health = succeed(health, key_of(fast), 1.0, latency_s=1.0)
    assert choose(s, req(), health, 2.0)[0] == slow


def test_stale_latency_counts_as_unknown() -> None:
    fast, slow = holder(node="a"), holder(node="b")
    health = succeed(Health(), key_of(slow), 0.0, latency_s=10.0)
    health = succeed(health, key_of(fast), 0.0, latency_s=1.0)
    assert choose(snap(fast, slow), req(), health, 10.0)[0] == fast
    health = succeed(health, key_of(fast), 40.0, latency_s=1.0)
    # 'slow' has not answered for over 30 s: measured again, it gets its turn.
    assert choose(snap(fast, slow), req(), health, 40.5)[0] == slow


def test_equal_holders_take_turns_in_sequence() -> None:
    a, b = holder(node="a"), holder(node="b")
    s, health, picks = snap(a, b), Health(), []
    for i in range(6):
        first = choose(s, req(), health, float(i))[0]
        picks.append(first.node_name)
        health = succeed(health, key_of(first), float(i), 0.5)
    assert picks == ["a", "b"] * 3


def test_big_body_does_not_probe_while_a_closed_holder_is_free() -> None:
    local, lan = holder(), holder(node="b", route=Route.LAN)
    health = fail(Health(), key_of(local), now=0.0, times=3)
    small, big = req(size_bytes=REPLAY_LIMIT_BYTES), req(size_bytes=REPLAY_LIMIT_BYTES + 1)
    assert choose(snap(local, lan), small, health, 5.0) == (local, lan)
    assert choose(snap(local, lan), big, health, 5.0) == (lan, local)
    assert choose(snap(local, lan), big, health, 5.0, replay_limit_bytes=1 << 30) == (local, lan)


def test_alias_routes_to_its_target_with_types_intact() -> None:
    target = holder("llama3.1:8b")
    aliases = {"llama3": "llama3.1:8b", "w": "whisper"}
    assert choose(snap(target), req("llama3"), aliases=aliases) == (target,)
    with pytest.raises(ModelNotFound, match=r"'llama3' \(an alias of 'llama3.1:8b'\) is a llm"):
        choose(snap(target), req("llama3", "/v1/audio/transcriptions"), aliases=aliases)
    with pytest.raises(ModelNotFound, match=r"'w' \(an alias of 'whisper'\) does not exist"):
        choose(snap(target), req("w"), aliases=aliases)


def test_alias_wins_over_a_model_of_the_same_name() -> None:
    real, target = holder("llama3", node="b"), holder("llama3.1:8b")
    assert choose(snap(real, target), req("llama3"), aliases={"llama3": "llama3.1:8b"}) == (target,)


def test_types_and_forwarding_still_filter() -> None:
    stt = holder(type_=ServiceType.STT, service="asr")
    llm = holder(service="chat")
    lan = holder(node="b", route=Route.LAN)
    s = snap(stt, llm, lan)
    assert choose(s, req(path="/v1/audio/transcriptions"), Health(), 0.0) == (stt,)
    assert choose(s, req(forwarded=True), Health(), 0.0) == (llm,)
