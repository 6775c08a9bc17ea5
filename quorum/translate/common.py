"""Pieces every translator shares: reading a client's JSON field by field, encoding
events, ids, token counts and finish reasons.

A request field that is missing, of the wrong type or not supported raises
:class:`~quorum.errors.InvalidRequest` whose message and ``param`` name the
field by its path (``messages[2].content[0].type``), so the client learns what
to fix in the API it spoke, never in the chat-completions shape it was
translated to.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from quorum.errors import InvalidRequest

JsonObject = dict[str, Any]

# --- reading a client's body ---------------------------------------------------------


def at(path: str, key: str | int) -> str:
    """The path of ``key`` inside ``path`` (``messages[2].content``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def bad(path: str, problem: str) -> NoReturn:
    """Refuse the request: ``'path': problem``."""
    raise InvalidRequest(f"'{path}': {problem}" if path else problem, param=path or None)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def as_object(value: Any, path: str) -> JsonObject:
    if not isinstance(value, dict):
        bad(path, f"must be an object, not {_kind(value)}")
    return value


def body_object(value: Any) -> JsonObject:
    """The whole request body, which must be a JSON object."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {_kind(value)}.")
    return value


def get_str(
    obj: Mapping[str, Any], key: str, path: str = "", *, required: bool = False
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            bad(at(path, key), "is required")
        return None
    if not isinstance(value, str):
        bad(at(path, key), f"must be a string, not {_kind(value)}")
    return value


def need_str(obj: Mapping[str, Any], key: str, path: str = "") -> str:
    value = get_str(obj, key, path, required=True)
    assert value is not None
    return value


def get_number(obj: Mapping[str, Any], key: str, path: str = "") -> float | int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad(at(path, key), f"must be a number, not {_kind(value)}")
    return value


def get_int(
    obj: Mapping[str, Any], key: str, path: str = "", *, minimum: int | None = None
) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        bad(at(path, key), f"must be an integer, not {_kind(value)}")
    if minimum is not None and value < minimum:
        bad(at(path, key), f"must be at least {minimum}, not {value}")
    return value


def get_bool(obj: Mapping[str, Any], key: str, path: str = "") -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        bad(at(path, key), f"must be true or false, not {_kind(value)}")
    return value


def get_list(obj: Mapping[str, Any], key: str, path: str = "") -> list[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        bad(at(path, key), f"must be an array, not {_kind(value)}")
    return value


def get_object(obj: Mapping[str, Any], key: str, path: str = "") -> JsonObject | None:
    value = obj.get(key)
    return None if value is None else as_object(value, at(path, key))


def stop_list(value: Any, path: str) -> list[str] | None:
    """A stop sequence or a list of them (None when absent or empty)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value) or None
    bad(path, "must be a string or an array of strings")


def put(target: JsonObject, key: str, value: Any) -> None:
    """Set ``key`` only when there is a value (engines differ on what null means)."""
    if value is not None:
        target[key] = value


# --- encoding ------------------------------------------------------------------------


# One encoder for every event: json.dumps with arguments builds a new one on each call,
# which costs more than encoding a stream event does.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


# Placeholders carry a secret of this process, so no text from a client can pass for one.
_NONCE = uuid.uuid4().hex


def slot(name: str) -> str:
    """A placeholder for a value a :class:`Template` fills in each time."""
    return f"\x00{_NONCE}{name}\x00"


_SLOT = re.compile(rf'"\\u0000{_NONCE}(\w+)\\u0000"')


class Template:
    """The compact JSON of an object some of whose values change on each use.

    Stream events that go out once per token (text deltas) differ only in a
    number and the text: the rest is encoded once, and :meth:`fill` gives the
    same text ``dumps`` would give for the whole object. Built from the object
    with :func:`slot` placeholders where the changing values go.
    """

    def __init__(self, obj: Any) -> None:
        parts = _SLOT.split(dumps(obj))
        self._fixed = parts[0::2]
        self._slots = parts[1::2]

    def fixed(self, before: str = "", after: str = "") -> tuple[str, ...]:
        """The fixed text around the slots, with ``before`` and ``after`` added at the
        ends: an encoded value goes between each two (in :attr:`slots` order)."""
        fixed = [*self._fixed]
        fixed[0], fixed[-1] = before + fixed[0], fixed[-1] + after
        return tuple(fixed)

    def pieces(self, before: str = "", after: str = "") -> tuple[bytes, ...]:
        """:meth:`fixed`, UTF-8."""
        return tuple(f.encode() for f in self.fixed(before, after))

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(self._slots)

    def fill(self, **values: str | int) -> str:
        out = [self._fixed[0]]
        for name, fixed in zip(self._slots, self._fixed[1:], strict=True):
            value = values[name]
            # A str is encoded by the encoder's fast path; an int is its digits.
            out.append(str(value) if isinstance(value, int) else _ENCODER.encode(value))
            out.append(fixed)
        return "".join(out)


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event with a name (the Responses and Anthropic streams name theirs)."""
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


def ndjson(line: Mapping[str, Any]) -> bytes:
    return dumps(line).encode() + b"\n"


def arguments_object(text: str) -> JsonObject | None:
    """A tool call's JSON arguments as an object, or None when they are not one."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def id_tail(chat_id: str | None) -> str:
    """The distinctive part of an engine's answer id, to derive our ids from it."""
    if chat_id:
        tail = chat_id.rsplit("-", 1)[-1].rsplit("_", 1)[-1]
        if tail.isalnum() and len(tail) >= 8:
            return tail
    return uuid.uuid4().hex


# --- token counts and finish reasons -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Token counts of one answer, in the engine's words mapped to ours."""

    input: int = 0
    output: int = 0
    cached: int = 0  # input tokens served from the engine's prompt cache
    reasoning: int = 0  # output tokens spent thinking

    @property
    def total(self) -> int:
        return self.input + self.output


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def _detail(usage: Mapping[str, Any], group: str, key: str) -> int:
    details = usage.get(group)
    value = _count(details.get(key)) if isinstance(details, dict) else None
    return value or 0


def counts_from(obj: Any) -> Counts | None:
    """Token counts in a chat answer or chunk: its ``usage``, else llama.cpp's ``timings``
    (whose ``prompt_n`` counts only the prompt tokens not reused from its cache)."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
        if prompt is not None or completion is not None:
            return Counts(
                input=prompt or 0,
                output=completion or 0,
                cached=_detail(usage, "prompt_tokens_details", "cached_tokens"),
                reasoning=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
            )
    timings = obj.get("timings")
    if isinstance(timings, dict):
        prompt, predicted = _count(timings.get("prompt_n")), _count(timings.get("predicted_n"))
        if prompt is not None or predicted is not None:
            return Counts(input=prompt or 0, output=predicted or 0)
    return None


# Chat-completions finish reasons, as engines spell them, to the four OpenAI defines.
_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: Any) -> str | None:
    """``stop``, ``length``, ``tool_calls`` or ``content_filter`` (None: not finished).

    An unknown reason (``abort``, ``error``) still finishes the answer, as a stop.
    """
    if not isinstance(value, str) or not value:
        return None
    return _FINISH.get(value, "stop")


def message_of(error: Any, default: str) -> str:
    """The message in an OpenAI-shaped error body (``{"error": {"message"}}``), or default."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    return default
