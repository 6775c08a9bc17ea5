"""The Responses API's ``response`` object and its output items, as both the whole
answer (:func:`.responses.answer`) and the stream (:mod:`.responses_stream`) write them.

Item ids derive from the response's: ``resp_<tail>`` holds ``rs_<tail>``,
``msg_<tail>``, ``fc_<tail>``, ``fc_<tail>_1``, ... A message or reasoning item
still in progress has no content yet; its text comes in deltas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import Counts, JsonObject


def item_id(response_id: str, prefix: str, n: int = 0) -> str:
    """``msg_<tail>``, ``fc_<tail>_1``, ... for the items of response ``resp_<tail>``."""
    tail = response_id.removeprefix("resp_")
    return f"{prefix}_{tail}" + (f"_{n}" if n else "")


def message_item(item: str, text: str, status: str = "completed") -> JsonObject:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": item,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if status != "in_progress" else [],
    }


def reasoning_item(item: str, text: str, status: str = "completed") -> JsonObject:
    content = [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []
    return {"id": item, "type": "reasoning", "status": status, "summary": [], "content": content}


def call_item(item: str, call_id: str, name: str, arguments: str, status: str) -> JsonObject:
    return {
        "id": item,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def usage_object(counts: Counts | None) -> JsonObject | None:
    if counts is None:
        return None
    return {
        "input_tokens": counts.input,
        "input_tokens_details": {"cached_tokens": counts.cached, "cache_write_tokens": 0},
        "output_tokens": counts.output,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning},
        "total_tokens": counts.total,
    }


def status_of(reason: str) -> tuple[str, JsonObject | None]:
    """The response status for a chat finish reason, and its incomplete_details."""
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    model: str,
    echo: Mapping[str, Any],
    response_id: str,
    created_at: float,
    status: str,
    output: list[JsonObject],
    *,
    usage: JsonObject | None = None,
    incomplete: JsonObject | None = None,
    error: JsonObject | None = None,
    completed_at: float | None = None,
) -> JsonObject:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "store": False,
        "background": False,
        "truncation": "disabled",
        "usage": usage,
        **echo,
    }
