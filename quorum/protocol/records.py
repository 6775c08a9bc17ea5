"""Per-request usage records: what a node ships to the relay's control plane.

Not tunnel frames: the body of ``POST /api/v1/usage`` (a ``UsageBatch``). They
are built like the frame payloads (``messages.py``): frozen, validated on
construction, decoded strictly, so node and relay check the same shape with
the same rules, and a record can name no cluster: the relay files it under
the cluster whose token shipped it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .messages import (
    _MAX_COUNT,
    _MAX_TEXT,
    _build,
    _check_int,
    _check_str,
    _check_tuple,
    _fail,
    _Message,
)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_MS = 10.0 * 86400 * 1000  # no request lasts ten days
MAX_USAGE_BATCH = 1000
"""Most ``RequestUsage`` records in one ``UsageBatch``."""


def _check_ms(name: str, value: object) -> None:
    """A duration in milliseconds: a finite, non-negative JSON number (int or float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        _fail(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value <= _MAX_MS:  # also false for NaN
        _fail(f"{name}={value} is outside 0..{_MAX_MS:.0f}")


@dataclass(frozen=True, slots=True)
class RequestUsage(_Message):
    """What one answered request cost: shipped by the node that took it from its client.

    ``request_id`` makes the record idempotent (the relay stores one record
    per cluster and id, however often it is shipped). ``time_ms`` is when the
    request started (Unix epoch, milliseconds). ``route`` is how it reached
    its server (``local``, ``lan``, ``relay``), ``node`` the serving node's
    name, ``endpoint`` the API label (``chat``, ``embedding``,
    ``transcription``...). Token counts are ``None`` when the answer did not
    report them. ``status`` is the HTTP status the client got (499: it went
    away first); ``error`` the error code, if any.
    """

    request_id: str
    time_ms: int
    model: str
    endpoint: str
    route: str
    node: str
    status: int
    duration_ms: float
    ttfb_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    key_id: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        _check_str("request_id", self.request_id, pattern=_REQUEST_ID)
        _check_int("time_ms", self.time_ms, 0, _MAX_COUNT)
        _check_str("model", self.model, max_len=_MAX_TEXT, empty=True)
        _check_str("endpoint", self.endpoint, max_len=64)
        _check_str("route", self.route, max_len=64)
        _check_str("node", self.node, empty=True)
        _check_int("status", self.status, 0, 999)
        _check_ms("duration_ms", self.duration_ms)
        if self.ttfb_ms is not None:
            _check_ms("ttfb_ms", self.ttfb_ms)
        for name in ("prompt_tokens", "completion_tokens"):
            if (value := getattr(self, name)) is not None:
                _check_int(name, value, 0, _MAX_COUNT)
        if self.key_id is not None:
            _check_str("key_id", self.key_id, max_len=128, pattern=_REQUEST_ID)
        if self.error is not None:
            _check_str("error", self.error, max_len=128)


@dataclass(frozen=True, slots=True)
class UsageBatch(_Message):
    """Records shipped together; the relay commits the whole batch before it answers."""

    records: tuple[RequestUsage, ...] = ()

    def __post_init__(self) -> None:
        for item in _check_tuple("records", self.records, MAX_USAGE_BATCH):
            if not isinstance(item, RequestUsage):
                _fail("records must hold RequestUsage values")

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        records = values.get("records", ())
        if isinstance(records, tuple):
            values["records"] = tuple(_build(RequestUsage, r, None) for r in records)
