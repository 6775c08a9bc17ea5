"""JSON payloads are decoded strictly; building a bad one locally is our own error."""

from __future__ import annotations

import json

import pytest

from quorum.errors import LocalProtocolError, RemoteProtocolError
from quorum.protocol import (
    GoAway,
    GoAwayReason,
    Hello,
    ModelInfo,
    Presence,
    RequestHead,
    ResponseHead,
    Role,
    Usage,
)

GOOD_HEAD = {"method": "GET", "path": "/v1/models", "headers": [["accept", "*/*"]]}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_defaults_fill_missing_optional_keys() -> None:
    head = RequestHead.decode(encode({"method": "GET", "path": "/v1/models"}))
    assert head == RequestHead("GET", "/v1/models")
    assert head.deadline_ms is None


@pytest.mark.parametrize(
    "change",
    [
        {"method": 1},
        {"method": "get"},
        {"method": ""},
        {"path": "v1/models"},
        {"path": "/v1/models x"},
        {"path": None},
        {"headers": [["accept"]]},
        {"headers": [["bad name", "x"]]},
        {"headers": [["x-injected", "a\r\nHost: evil"]]},
        {"headers": [["accept", 5]]},
        {"headers": {"accept": "*/*"}},
        {"deadline_ms": -1},
        {"deadline_ms": 1.5},
        {"deadline_ms": True},
        {"node": 7},
        {"model": ""},
        {"extra": 1},
    ],
)
def test_request_head_rejects_wrong_types_and_values(change: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError):
        RequestHead.decode(encode({**GOOD_HEAD, **change}))


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'"a string"',
        b"\xff\xfe",
        b'{"method": "GET", "method": "PUT", "path": "/"}',
        b'{"method": "GET", "path": "/", "deadline_ms": NaN}',
        b'{"method": "GET", "path": "/", "deadline_ms": 1' + b"0" * 5000 + b"}",
        b"[" * 100_000,
        b'{"method": "GET", "path": "/", "headers": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"method": "GET", "path": "/", "headers": [[[["a", "b"]]]]}',
        b'{"method": "GET", "path": "/\\ud800"}',
        b'{"path": "/"}',
    ],
)
def test_malformed_json_is_a_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        RequestHead.decode(payload)


def test_status_must_be_an_http_status() -> None:
    assert ResponseHead.decode(encode({"status": 503})).status == 503
    for status in (99, 600, "200", 200.0, None, False):
        with pytest.raises(RemoteProtocolError):
            ResponseHead.decode(encode({"status": status}))


def test_hello_checks_role_version_and_capabilities() -> None:
    good = {"version": 1, "node_id": "studio", "role": 1, "max_streams": 8}
    assert Hello.decode(encode(good)).role is Role.NODE
    for change in (
        {"version": 2},
        {"role": 3},
        {"role": "node"},
        {"max_streams": 0},
        {"node_id": ""},
        {"capabilities": ["UPPER"]},
        {"capabilities": "presence"},
    ):
        with pytest.raises(RemoteProtocolError):
            Hello.decode(encode({**good, **change}))


def test_presence_validates_nested_models() -> None:
    good = {"node_id": "studio", "models": [{"id": "qwen3", "type": "llm"}]}
    assert Presence.decode(encode(good)).models == (ModelInfo("qwen3", "llm"),)
    # A model's unknown keys (a newer node's) are dropped; the presence's own are not.
    newer = {"node_id": "studio", "models": [{"id": "m", "oops": 1}]}
    assert Presence.decode(encode(newer)).models == (ModelInfo("m"),)
    for models in ([{"type": "llm"}], [{"id": "m", "loaded": 1}], ["qwen3"], [{"id": 3}]):
        with pytest.raises(RemoteProtocolError):
            Presence.decode(encode({"node_id": "studio", "models": models}))
    with pytest.raises(RemoteProtocolError):
        Presence.decode(encode({**good, "online": 1}))


def test_usage_counts_are_non_negative_integers() -> None:
    assert (
        Usage.decode(encode({"records": [{"model": "m", "requests": 2}]})).records[0].requests == 2
    )
    for requests in (-1, 1.0, "2", 2**60):
        with pytest.raises(RemoteProtocolError):
            Usage.decode(encode({"records": [{"model": "m", "requests": requests}]}))


def test_goaway_reason_must_be_known() -> None:
    good = {"last_stream_id": 3, "reason": 1}
    assert GoAway.decode(encode(good)).reason is GoAwayReason.SHUTDOWN
    for reason in (0, 99, "shutdown", None):
        with pytest.raises(RemoteProtocolError):
            GoAway.decode(encode({**good, "reason": reason}))


def test_building_a_bad_message_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        RequestHead("GET", "/x", (("x", "a\nb"),))
    with pytest.raises(LocalProtocolError):
        ResponseHead(42)
    with pytest.raises(LocalProtocolError):
        Hello(1, "", Role.NODE, 1)
    with pytest.raises(LocalProtocolError):
        RequestHead("GET", "/\ud800")
