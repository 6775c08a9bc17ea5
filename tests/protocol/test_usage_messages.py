"""Per-request usage records (node -> relay control plane) decode as strictly as frames."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import MAX_USAGE_BATCH, RequestUsage, UsageBatch

GOOD = {
    "request_id": "a1b2c3",
    "time_ms": 1_700_000_000_000,
    "model": "qwen3",
    "endpoint": "chat",
    "route": "lan",
    "node": "studio",
    "status": 200,
    "duration_ms": 12.5,
}

counts = st.none() | st.integers(0, 2**53)
millis = st.floats(0, 86_400_000, allow_nan=False, allow_infinity=False) | st.integers(0, 10**6)
records = st.builds(
    RequestUsage,
    request_id=st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=64),
    time_ms=st.integers(0, 2**53),
    model=st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    endpoint=st.sampled_from(["chat", "completion", "embedding", "transcription"]),
    route=st.sampled_from(["local", "lan", "relay"]),
    node=st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    status=st.integers(0, 599),
    duration_ms=millis,
    ttfb_ms=st.none() | millis,
    prompt_tokens=counts,
    completion_tokens=counts,
    key_id=st.none() | st.text(string.hexdigits, min_size=1, max_size=32),
    error=st.none() | st.sampled_from(["engine_error", "client_disconnected"]),
)


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


@given(st.lists(records, max_size=5))
def test_batches_round_trip(items: list[RequestUsage]) -> None:
    batch = UsageBatch(tuple(items))
    assert UsageBatch.decode(batch.encode()) == batch


def test_optional_fields_default_to_none() -> None:
    record = RequestUsage.decode(encode(GOOD))
    assert (record.prompt_tokens, record.completion_tokens, record.key_id) == (None, None, None)


@pytest.mark.parametrize(
    "change",
    [
        {"request_id": ""},
        {"request_id": "has space"},
        {"request_id": "x" * 129},
        {"time_ms": -1},
        {"time_ms": 1.5},
        {"status": 1000},
        {"status": "200"},
        {"duration_ms": -0.1},
        {"duration_ms": True},
        {"duration_ms": 1e12},
        {"ttfb_ms": "3"},
        {"prompt_tokens": -1},
        {"completion_tokens": 2.0},
        {"prompt_tokens": 2**60},
        {"endpoint": ""},
        {"key_id": "not a key id"},
        {"cluster": "other"},
    ],
)
def test_bad_records_are_remote_errors(change: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError):
        UsageBatch.decode(encode({"records": [{**GOOD, **change}]}))


def test_missing_keys_and_oversized_batches_are_refused() -> None:
    partial = {k: v for k, v in GOOD.items() if k != "status"}
    with pytest.raises(RemoteProtocolError):
        RequestUsage.decode(encode(partial))
    with pytest.raises(RemoteProtocolError):
        UsageBatch.decode(encode({"records": [GOOD] * (MAX_USAGE_BATCH + 1)}))
    with pytest.raises(RemoteProtocolError):
        UsageBatch.decode(b'{"records": [1]}')


def test_building_a_bad_record_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        RequestUsage("id", 0, "m", "chat", "local", "n", 200, float("nan"))
    with pytest.raises(LocalProtocolError):
        UsageBatch(("not a record",))  # type: ignore[arg-type]
