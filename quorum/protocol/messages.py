"""Payloads carried as compact JSON: HELLO, PRESENCE, USAGE, GOAWAY and the two heads.

``records.py`` holds two more messages built the same way (``RequestUsage``,
``UsageBatch``), which travel over HTTP to the relay's control plane.

Each message is a frozen dataclass that validates itself on construction, so
one set of checks guards both directions: building a bad value locally raises
``LocalProtocolError`` (our bug never reaches the wire); ``decode`` turns the
same failure into ``RemoteProtocolError``.

Decoding is strict: the payload is one UTF-8 JSON object, with no duplicate
keys, no NaN/Infinity, no key this version does not know (a new field rides
on a new capability announced in HELLO, so a peer never sends one that was
not asked for), every required key present and every value of the right JSON
type (``true`` is not an integer) and range. Lists decode to tuples. A
``ModelInfo`` drops unknown keys, so nodes of any release read each other's.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn, Self, TypeVar

from quorum.errors import LocalProtocolError, RemoteProtocolError

from .frames import MAX_STREAM_ID, VERSION, Role

_MAX_NAME = 256
_MAX_TEXT = 1024
_MAX_COUNT = 2**53  # counters stay exact in any JSON implementation
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"[^\r\n\x00]*")  # no header injection on the far side
_PATH = re.compile(r"/[^\x00-\x20\x7f]*")
_METHOD = re.compile(r"[A-Z]{1,16}")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

Headers = tuple[tuple[str, str], ...]


class GoAwayReason(IntEnum):
    SHUTDOWN = 1
    """The sender is draining (SIGTERM, restart): reconnect, possibly elsewhere."""
    REPLACED = 2
    """A newer connection with the same node id won; this one must not reconnect."""
    PROTOCOL_ERROR = 3
    """The receiver broke the protocol; the sender closes after this frame."""
    INTERNAL = 4
    """The sender failed in a way unrelated to the peer."""


def _fail(message: str) -> NoReturn:
    raise LocalProtocolError(message)


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        _fail(f"{name}={value} is outside {lo}..{hi}")


def _check_str(
    name: str,
    value: object,
    *,
    max_len: int = _MAX_NAME,
    empty: bool = False,
    pattern: re.Pattern[str] | None = None,
) -> None:
    if not isinstance(value, str):
        _fail(f"{name} must be a string, got {type(value).__name__}")
    if not value and not empty:
        _fail(f"{name} must not be empty")
    if len(value) > max_len:
        _fail(f"{name} is longer than {max_len} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON "\ud800" escape
            _fail(f"{name} is not valid Unicode")
    if pattern is not None and value and not pattern.fullmatch(value):
        _fail(f"{name} has a forbidden character or shape")


def _check_opt_str(name: str, value: object) -> None:
    if value is not None:
        _check_str(name, value)


def _check_tuple(name: str, value: object, max_items: int) -> tuple[object, ...]:
    if not isinstance(value, tuple):
        _fail(f"{name} must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        _fail(f"{name} has more than {max_items} items")
    return value


def _check_headers(value: object) -> None:
    for item in _check_tuple("headers", value, 512):
        if not isinstance(item, tuple) or len(item) != 2:
            _fail("each header must be a [name, value] pair")
        _check_str("header name", item[0], pattern=_TOKEN)
        _check_str("header value", item[1], max_len=16384, empty=True, pattern=_HEADER_VALUE)


def _tuplify(value: object, depth: int = 0) -> object:
    if isinstance(value, list):
        # No field nests lists more than twice; refusing deeper ones early keeps
        # a hostile payload from exhausting the stack here.
        if depth >= 4:
            raise RemoteProtocolError("payload nests lists too deeply")
        return tuple(_tuplify(item, depth + 1) for item in value)
    return value


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_object_pairs,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RemoteProtocolError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("payload must be a JSON object")
    return obj


T = TypeVar("T")


def _build(cls: type[T], obj: object, convert: Callable[[dict[str, Any]], None] | None) -> T:
    """Construct ``cls`` from a parsed JSON object; any failure is the peer's."""
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{cls.__name__} must be a JSON object")
    known = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in known}
    required = {
        f.name
        for f in known
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if (unknown := obj.keys() - names) and cls is not ModelInfo:
        raise RemoteProtocolError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    if missing := required - obj.keys():
        raise RemoteProtocolError(f"{cls.__name__}: missing keys {sorted(missing)}")
    values = {key: _tuplify(value) for key, value in obj.items() if key in names}
    try:
        if convert is not None:
            convert(values)
        factory: Callable[..., T] = cls
        return factory(**values)
    except (LocalProtocolError, ValueError) as exc:  # ValueError: an unknown enum value
        raise RemoteProtocolError(f"{cls.__name__}: {exc}") from None


class _Message:
    """Shared JSON encode/decode for the dataclasses below."""

    __slots__ = ()

    def encode(self) -> bytes:
        body = dataclasses.asdict(self)  # type: ignore[call-overload]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse and validate ``payload``; raise ``RemoteProtocolError`` on any fault."""
        return _build(cls, _parse(payload), cls._convert)

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Build from an already parsed JSON value, with the same checks as ``decode``."""
        return _build(cls, obj, cls._convert)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return body

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        """Turn JSON-shaped values into field types in place (enums, nested messages)."""


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """First frame each side sends: who it is and what it can do."""

    version: int
    node_id: str
    role: Role
    max_streams: int
    """How many concurrent streams the sender accepts from its peer."""
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_int("version", self.version, VERSION, VERSION)
        _check_str("node_id", self.node_id)
        if not isinstance(self.role, Role):
            _fail("role must be a Role")
        _check_int("max_streams", self.max_streams, 1, MAX_STREAM_ID)
        for item in _check_tuple("capabilities", self.capabilities, 64):
            _check_str("capability", item, pattern=_CAPABILITY)

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        values["role"] = Role(values["role"]) if type(values["role"]) is int else None


_MAX_LOAD = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ModelInfo(_Message):
    """One model a node serves, and the service that serves it: the one presence format
    of LAN peers (``/quorum/v1/local``) and relay peers (``Presence``) alike."""

    id: str
    type: str = "llm"
    """Service type: llm, stt, tts, image, embedding (free-form, routing matches exactly)."""
    service: str = ""
    features: tuple[str, ...] = ()
    engine: str = ""
    """The engine kind behind the service (``ollama``, ``vllm``, ...; empty: unknown)."""
    loaded: bool | None = None
    """Whether the engine has the model in memory (None: it does not say)."""
    limit: int = 0
    """Requests the service takes at once (0: unknown)."""
    # The health snapshot (None: not said): requests the service runs, requests of the
    # model waiting at the node, one request's learned run time, the wait there now.
    in_flight: int | None = None
    queued: int | None = None
    service_ms: int | None = None
    wait_ms: int | None = None

    def __post_init__(self) -> None:
        _check_str("model id", self.id, max_len=_MAX_TEXT)
        _check_str("model type", self.type, max_len=64)
        _check_str("service", self.service, empty=True)
        for item in _check_tuple("features", self.features, 64):
            _check_str("feature", item, max_len=64)
        _check_str("engine", self.engine, empty=True, max_len=64)
        if self.loaded is not None and not isinstance(self.loaded, bool):
            _fail("loaded must be a boolean or null")
        _check_int("limit", self.limit, 0, 1_000_000)
        for name in ("in_flight", "queued", "service_ms", "wait_ms"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, _MAX_LOAD)


@dataclass(frozen=True, slots=True)
class Presence(_Message):
    """A node's model list (node to relay), or a peer's as the relay forwards it.

    ``age_ms`` is how old the heartbeat already was when this frame was sent
    (0 when a node speaks for itself), so freshness survives a relay's replay
    of the last known presence. ``online=False`` announces a departure.
    """

    node_id: str
    models: tuple[ModelInfo, ...] = ()
    online: bool = True
    age_ms: int = 0
    name: str = ""
    """The node's display name (shown to clients as X-Quorum-Node)."""

    def __post_init__(self) -> None:
        _check_str("node_id", self.node_id)
        _check_str("name", self.name, empty=True)
        for item in _check_tuple("models", self.models, 4096):
            if not isinstance(item, ModelInfo):
                _fail("models must hold ModelInfo values")
        if not isinstance(self.online, bool):
            _fail("online must be a boolean")
        _check_int("age_ms", self.age_ms, 0, 2**31 - 1)

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        models = values.get("models", ())
        if isinstance(models, tuple):
            values["models"] = tuple(_build(ModelInfo, m, None) for m in models)


@dataclass(frozen=True, slots=True)
class UsageRecord(_Message):
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        _check_str("model", self.model, max_len=_MAX_TEXT)
        for name in ("requests", "prompt_tokens", "completion_tokens", "errors"):
            _check_int(name, getattr(self, name), 0, _MAX_COUNT)


@dataclass(frozen=True, slots=True)
class Usage(_Message):
    """Counters a node reports for the requests it served since its last report."""

    records: tuple[UsageRecord, ...] = ()

    def __post_init__(self) -> None:
        for item in _check_tuple("records", self.records, 4096):
            if not isinstance(item, UsageRecord):
                _fail("records must hold UsageRecord values")

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        records = values.get("records", ())
        if isinstance(records, tuple):
            values["records"] = tuple(_build(UsageRecord, r, None) for r in records)


@dataclass(frozen=True, slots=True)
class GoAway(_Message):
    """No new streams from now on; streams up to ``last_stream_id`` will finish.

    ``last_stream_id`` is the highest stream id *opened by the receiver* that
    the sender accepted (0 if none); the receiver's streams above it were
    never processed and are safe to retry.
    """

    last_stream_id: int
    reason: GoAwayReason
    message: str = ""

    def __post_init__(self) -> None:
        _check_int("last_stream_id", self.last_stream_id, 0, MAX_STREAM_ID)
        if not isinstance(self.reason, GoAwayReason):
            _fail("reason must be a GoAwayReason")
        _check_str("message", self.message, max_len=_MAX_TEXT, empty=True)

    @staticmethod
    def _convert(values: dict[str, Any]) -> None:
        raw = values["reason"]
        values["reason"] = GoAwayReason(raw) if type(raw) is int else None


@dataclass(frozen=True, slots=True)
class RequestHead(_Message):
    """Opens a stream: the HTTP request line and headers, plus where it should go.

    ``node`` names the target node when the opener already chose one (the
    relay routes on it); ``model`` lets the holder pick the service.
    ``deadline_ms`` is the time budget left when the frame was sent, relative
    because the two ends' clocks are not comparable; ``None`` means no deadline.
    """

    method: str
    path: str
    headers: Headers = ()
    node: str | None = None
    model: str | None = None
    deadline_ms: int | None = None

    def __post_init__(self) -> None:
        _check_str("method", self.method, pattern=_METHOD)
        _check_str("path", self.path, max_len=8192, pattern=_PATH)
        _check_headers(self.headers)
        _check_opt_str("node", self.node)
        if self.model is not None:
            _check_str("model", self.model, max_len=_MAX_TEXT)
        if self.deadline_ms is not None:
            _check_int("deadline_ms", self.deadline_ms, 0, 2**31 - 1)


@dataclass(frozen=True, slots=True)
class ResponseHead(_Message):
    """The answer's status and headers; sent once, by the side that accepted the stream."""

    status: int
    headers: Headers = ()

    def __post_init__(self) -> None:
        _check_int("status", self.status, 100, 599)
        _check_headers(self.headers)
