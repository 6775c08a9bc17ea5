"""Errors rendered in each API dialect's shape, from one ApiError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.api.endpoints import Dialect
from quorum.api.errors import (
    anthropic_type,
    error_body,
    error_code_of,
    framework_error,
    stream_error,
)
from quorum.errors import (
    ApiError,
    BodyTooLarge,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NoReachableHolder,
    NotFound,
    Overloaded,
    Unauthorized,
    UpstreamFailed,
)

ERRORS: list[tuple[ApiError, str]] = [
    (InvalidRequest("bad body", param="model"), "invalid_request_error"),
    (Unauthorized("who are you"), "authentication_error"),
    (Forbidden("not this model", code="model_not_allowed"), "permission_error"),
    (NotFound("no such path", code="unknown_url"), "not_found_error"),
    (ModelNotFound("no such model", param="model"), "not_found_error"),
    (MethodNotAllowed("use POST"), "api_error"),
    (BodyTooLarge("too big"), "request_too_large"),
    (UpstreamFailed("engine broke"), "api_error"),
    (NoReachableHolder("try later", retry_after_s=7), "overloaded_error"),
    (Overloaded("queues full"), "overloaded_error"),
]


@pytest.mark.parametrize(("err", "kind"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_each_dialect_has_its_shape(err: ApiError, kind: str) -> None:
    assert error_body(err) == {
        "error": {
            "message": err.message,
            "type": err.error_type,
            "param": err.param,
            "code": err.code,
        }
    }
    assert err.body() == error_body(err, Dialect.OPENAI)
    assert error_body(err, Dialect.ANTHROPIC) == {
        "type": "error",
        "error": {"type": kind, "message": err.message},
    }
    assert error_body(err, Dialect.OLLAMA) == {"error": err.message}


def test_anthropic_types_by_status() -> None:
    table = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }
    for status, kind in table.items():
        assert anthropic_type(status) == kind
    for status in (405, 409, 500, 502, 504):
        assert anthropic_type(status) == "api_error"


def test_rendering_leaves_the_extra_headers_to_the_error() -> None:
    err = NoReachableHolder("later", retry_after_s=7)
    for dialect in Dialect:
        assert "Retry-After" not in json.dumps(error_body(err, dialect))
    assert err.headers() == {"Retry-After": "7"}


def test_a_broken_stream_ends_with_an_error_event_per_dialect() -> None:
    err = UpstreamFailed("the engine went away")
    openai = stream_error(err)
    assert openai.startswith(b"data: ") and openai.endswith(b"\n\n")
    assert json.loads(openai[6:]) == error_body(err)
    anthropic = stream_error(err, Dialect.ANTHROPIC)
    event, data = anthropic.rstrip(b"\n").split(b"\n")
    assert event == b"event: error"
    assert json.loads(data.removeprefix(b"data: ")) == error_body(err, Dialect.ANTHROPIC)
    ollama = stream_error(err, Dialect.OLLAMA)
    assert ollama.endswith(b"\n") and json.loads(ollama) == {"error": err.message}
    assert b"[DONE]" not in openai + anthropic + ollama


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (json.dumps(error_body(ModelNotFound("x"))).encode(), "model_not_found"),
        (json.dumps(error_body(ModelNotFound("x"), Dialect.ANTHROPIC)).encode(), "not_found_error"),
        (json.dumps(error_body(ModelNotFound("x"), Dialect.OLLAMA)).encode(), None),
        (b'{"error": {"code": "' + b"c" * 500 + b'"}}', "c" * 128),
        (b'{"error": {"message": "no code", "code": null}}', None),
        (b'{"error": {"type": "not_error_shaped"}}', None),
        (b"[" * 100_000, None),
        (b"<html>bad gateway</html>", None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_error_code_of_any_answer(body: bytes, code: str | None) -> None:
    assert error_code_of(body) == code


def test_framework_refusals() -> None:
    missing = framework_error(404, "GET", "/v1/nope")
    assert isinstance(missing, NotFound) and missing.code == "unknown_url"
    assert "GET /v1/nope" in missing.message
    wrong = framework_error(405, "GET", "/v1/chat/completions", allowed={"POST", "OPTIONS"})
    assert isinstance(wrong, MethodNotAllowed)
    assert wrong.message.endswith("use OPTIONS, POST.")
    big = framework_error(413, "POST", "/v1/x", detail="Maximum request body size 10 exceeded")
    assert isinstance(big, BodyTooLarge) and "10 exceeded" in big.message
    assert "over the limit" in str(framework_error(413, "POST", "/v1/x"))
    for status in (302, 400, 500):
        assert framework_error(status, "GET", "/") is None


@given(st.text(), st.sampled_from(list(Dialect)), st.integers(400, 599))
def test_any_message_renders_as_json(message: str, dialect: Dialect, status: int) -> None:
    err = ApiError(message)
    err.status = status
    body = error_body(err, dialect)
    assert json.loads(json.dumps(body)) == body
    inner = body["error"]
    assert (inner if dialect is Dialect.OLLAMA else inner["message"]) == message
