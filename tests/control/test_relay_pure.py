"""The relay's decisions as pure functions: key format and lifetime, the failure bucket,
presence expiry and the choice of a serving node, all with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.protocol import ModelInfo
from quorum.ratelimit import Bucket, FailureLimiter, client_address, take, wait_s
from relay.keys import (
    KeyState,
    allows_model,
    key_prefix,
    key_state,
    new_key,
    parse_duration,
    parse_models,
    same_secret,
    secret_hash,
)
from relay.presence import ONLINE_FOR_S, Candidate, holders, is_online, online_models


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- keys ---------------------------------------------------------------------------


def test_new_keys_have_a_visible_prefix_and_a_secret() -> None:
    key, prefix = new_key()
    assert key.startswith(f"qk_{prefix}_") and len(prefix) == 8
    assert key_prefix(key) == prefix
    assert len(key) > 40
    assert new_key()[0] != key
    assert secret_hash(key) != key and len(secret_hash(key)) == 64
    for bad in ("", "qk_", "qk_zzzzzzzz_" + "a" * 43, "qc_" + key[3:], key + " "):
        assert key_prefix(bad) is None


def test_secret_comparison() -> None:
    assert same_secret("qa_" + "x" * 40, "qa_" + "x" * 40)
    assert not same_secret("qa_" + "x" * 40, "qa_" + "x" * 39)
    assert not same_secret("", "qa_x")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_combined_and_bad_durations() -> None:
    assert parse_duration("1d12h") == 1.5 * 86400
    for bad in ("", "30", "d", "-1d", "0d", "1y", "1d x", "1.5d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_model_lists() -> None:
    assert parse_models(None) is None
    assert parse_models("") is None
    assert parse_models("*") is None
    assert parse_models(" a, b ,a,") == ("a", "b")
    assert allows_model(None, "anything")
    assert allows_model(("a",), "a")
    assert not allows_model(("a",), "b")
    assert allows_model(("a",), None)


def test_key_states_with_a_clock() -> None:
    assert key_state(None, None, 1e12) is KeyState.ACTIVE
    assert key_state(None, 100.0, 99.9) is KeyState.ACTIVE
    assert key_state(None, 100.0, 100.0) is KeyState.EXPIRED
    assert key_state(50.0, 100.0, 10.0) is KeyState.REVOKED


# -- the failure bucket ------------------------------------------------------------------


def test_bucket_takes_refills_and_caps() -> None:
    ok, b = take(None, 0.0, rate=1.0, burst=2.0)
    assert ok and b == Bucket(1.0, 0.0)
    ok, b = take(b, 0.0, 1.0, 2.0)
    assert ok and b.tokens == 0.0
    ok, b = take(b, 0.5, 1.0, 2.0)
    assert not ok and b.tokens == 0.5
    assert wait_s(b, 0.5, 1.0, 2.0) == 0.5
    ok, b = take(b, 100.0, 1.0, 2.0)
    assert ok and b.tokens == 1.0  # capped at the burst, then one taken


def test_a_clock_going_backwards_gives_nothing() -> None:
    _, b = take(None, 10.0, 1.0, 1.0)
    ok, b2 = take(b, 5.0, 1.0, 1.0)
    assert not ok and b2.updated == 10.0


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=50))
def test_never_more_successes_than_burst_plus_refill(gaps: list[float]) -> None:
    bucket, now, granted = None, 0.0, 0
    for gap in gaps:
        now += gap
        ok, bucket = take(bucket, now, 0.5, 3.0)
        granted += ok
    assert granted <= 3 + now * 0.5 + 1e-9


def test_limiter_blocks_an_address_after_its_burst_only() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(rate=0.2, burst=3, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("1.2.3.4") is None
        limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 5
    assert limiter.retry_after("5.6.7.8") is None  # others are not affected
    clock.now += 5
    assert limiter.retry_after("1.2.3.4") is None
    limiter.failed("1.2.3.4")
    assert limiter.retry_after("1.2.3.4") == 5


def test_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(rate=1.0, burst=2, clock=clock, max_addresses=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) <= 100
    assert limiter.retry_after("10.0.3.231") is None  # the newest is kept: one failure of two


def test_client_address() -> None:
    assert client_address("10.0.0.1", "6.6.6.6", False) == "10.0.0.1"
    assert client_address("127.0.0.1", "6.6.6.6, 7.7.7.7", True) == "7.7.7.7"
    assert client_address("127.0.0.1", None, True) == "127.0.0.1"
    assert client_address(None, None, False) == "unknown"


# -- presence ----------------------------------------------------------------------------


def test_online_while_the_last_heartbeat_is_under_a_minute_old() -> None:
    assert ONLINE_FOR_S == 60.0
    assert not is_online(None, 0.0)
    assert is_online(100.0, 100.0)
    assert is_online(100.0, 159.99)
    assert not is_online(100.0, 160.0)
    assert is_online(100.0, 90.0)  # stamped "in the future": a clock stepped back


def cand(node: str, models: list[tuple[str, str]], seen: float, load: int = 0) -> Candidate:
    return Candidate(node, node, tuple(ModelInfo(m, t) for m, t in models), seen, load)


def test_holders_are_online_typed_and_least_busy_first() -> None:
    now = 1000.0
    nodes = [
        cand("a", [("m", "llm")], now - 10, load=5),
        cand("b", [("m", "llm")], now - 59, load=1),
        cand("c", [("m", "llm")], now - 61),  # offline: never routed to
        cand("d", [("m", "stt")], now),  # wrong type for a chat
        cand("e", [("m", "llm")], now, load=1),
        Candidate("f", "f", (ModelInfo("m", "llm"),), now, 0, draining=True),
    ]
    assert [c.node_id for c in holders(nodes, "m", ("llm",), now)] == ["b", "e", "a"]
    assert [c.node_id for c in holders(nodes, "m", ("stt",), now)] == ["d"]
    assert holders(nodes, "other", ("llm",), now) == []
    assert holders(nodes, "m", ("llm",), now + 100) == []


def test_online_models_respect_the_keys_allowed_list() -> None:
    now = 50.0
    nodes = [cand("a", [("x", "llm"), ("y", "llm")], now), cand("b", [("y", "llm")], now - 70)]
    assert {m: [c.node_id for c in cs] for m, cs in online_models(nodes, now, None).items()} == {
        "x": ["a"],
        "y": ["a"],
    }
    assert list(online_models(nodes, now, ("y", "z"))) == ["y"]
