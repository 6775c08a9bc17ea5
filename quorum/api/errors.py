"""Errors as each API dialect's clients expect them, rendered once, at the edge. Pure.

An :class:`~quorum.errors.ApiError` knows its status, OpenAI ``type`` and
``code``, message, ``param`` and extra headers (``Retry-After``). Here it
becomes the body a client of its path's dialect can read:

- OpenAI (``/v1``): ``{"error": {"message", "type", "param", "code"}}``;
- Anthropic (``/v1/messages``): ``{"type": "error", "error": {"type", "message"}}``,
  the type from the status (:func:`anthropic_type`);
- Ollama (``/api``): ``{"error": "message"}``.

The framework's own refusals (unknown path, wrong method, body over the
limit) become ``ApiError`` values first (:func:`framework_error`), so they
are rendered the same way.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from quorum.api.body import loads
from quorum.api.endpoints import Dialect
from quorum.errors import ApiError, BodyTooLarge, MethodNotAllowed, NotFound

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (``api_error`` for any other)."""
    return _ANTHROPIC_TYPES.get(status, "api_error")


def error_body(err: ApiError, dialect: Dialect = Dialect.OPENAI) -> dict[str, Any]:
    """The JSON body of ``err`` in ``dialect``."""
    if dialect is Dialect.ANTHROPIC:
        return {
            "type": "error",
            "error": {"type": anthropic_type(err.status), "message": err.message},
        }
    if dialect is Dialect.OLLAMA:
        return {"error": err.message}
    return {
        "error": {
            "message": err.message,
            "type": err.error_type,
            "param": err.param,
            "code": err.code,
        }
    }


def stream_error(err: ApiError, dialect: Dialect = Dialect.OPENAI) -> bytes:
    """The last event of a stream that broke after it started, in ``dialect``.

    SSE for OpenAI (a ``data:`` line, and never a ``[DONE]`` after it) and
    Anthropic (an ``error`` event); one NDJSON line for Ollama.
    """
    data = json.dumps(error_body(err, dialect)).encode()
    if dialect is Dialect.ANTHROPIC:
        return b"event: error\ndata: " + data + b"\n\n"
    if dialect is Dialect.OLLAMA:
        return data + b"\n"
    return b"data: " + data + b"\n\n"


def error_code_of(body: bytes) -> str | None:
    """The machine-readable code of an error answer in any dialect (at most 128 characters).

    OpenAI's ``error.code``, else Anthropic's ``error.type``; None for
    anything else (Ollama's errors carry only a message).
    """
    try:
        data = loads(body)
    except ValueError:
        return None
    inner = data.get("error") if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        return None
    code = inner.get("code")
    if not isinstance(code, str) or not code:
        code = inner.get("type") if data.get("type") == "error" else None
    return code[:128] if isinstance(code, str) and code else None


def framework_error(
    status: int,
    method: str,
    path: str,
    *,
    allowed: Collection[str] = (),
    detail: str = "",
) -> ApiError | None:
    """The ``ApiError`` for a refusal the HTTP framework made itself, or None for others.

    404 (no route), 405 (``allowed`` are the methods the path takes) and 413
    (``detail`` says what the limit is).
    """
    if status == 404:
        return NotFound(f"Unknown path {method} {path}.", code="unknown_url")
    if status == 405:
        return MethodNotAllowed(
            f"{method} is not allowed on {path}; use {', '.join(sorted(allowed))}."
        )
    if status == 413:
        return BodyTooLarge(f"The request body is too large ({detail or 'over the limit'}).")
    return None
