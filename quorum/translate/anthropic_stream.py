"""A chat-completions stream told as Anthropic's Messages event stream.

The events::

    message_start (usage so far: none), ping
    per content block, numbered from 0 in order:
      content_block_start (thinking | text | tool_use with input {}),
      content_block_delta (thinking_delta | text_delta | input_json_delta)...,
      content_block_stop
    message_delta (stop_reason, stop_sequence, usage with input and output tokens)
    message_stop

A text or thinking block closes when anything else begins; tool-use blocks
stay open until the engine finishes (engines may interleave the arguments of
parallel calls), and the arguments pass through as the engine writes them. A
stream cut before a finish_reason, or broken, ends with an ``error`` event
(``api_error``), never with ``message_stop``.
"""

from __future__ import annotations

from typing import Any

from .anthropic import MessagesRequest, error_body, new_message_id, stop_reason, usage_object
from .chat import Delta, Finish, Reasoning, StreamTranslator, Text, ToolArgs, ToolStart
from .common import JsonObject, sse


class AnthropicStream(StreamTranslator):
    """Feed it the engine's chat stream; it writes the Messages event stream."""

    def __init__(self, request: MessagesRequest, *, message_id: str | None = None) -> None:
        super().__init__()
        self._request = request
        self._id = message_id or new_message_id()
        self._blocks = 0  # content blocks begun
        self._open: list[int] = []  # blocks not yet stopped
        self._current: tuple[str, int] | None = None  # the open text or thinking block
        self._calls: dict[int, int] = {}  # tool call index -> block index

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, **fields})

    def _start(self) -> list[bytes]:
        message: JsonObject = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [self._event("message_start", message=message), self._event("ping")]

    def _begin_block(self, block: JsonObject) -> tuple[int, bytes]:
        index = self._blocks
        self._blocks += 1
        self._open.append(index)
        return index, self._event("content_block_start", index=index, content_block=block)

    def _stop(self, index: int) -> list[bytes]:
        if index not in self._open:
            return []
        self._open.remove(index)
        if self._current is not None and self._current[1] == index:
            self._current = None
        return [self._event("content_block_stop", index=index)]

    def _stop_all(self) -> list[bytes]:
        return [event for index in list(self._open) for event in self._stop(index)]

    def _prose(self, kind: str, text: str) -> list[bytes]:
        """A text or thinking delta, in a block of its kind (opened if need be)."""
        out: list[bytes] = []
        if self._current is None or self._current[0] != kind:
            out += self._stop_all()
            empty: JsonObject = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            index, event = self._begin_block(empty)
            self._current = (kind, index)
            out.append(event)
        index = self._current[1]
        delta = (
            {"type": "text_delta", "text": text}
            if kind == "text"
            else {
                "type": "thinking_delta",
                "thinking": text,
            }
        )
        out.append(self._event("content_block_delta", index=index, delta=delta))
        return out

    def _delta(self, delta: Delta) -> list[bytes]:
        if isinstance(delta, Text):
            return self._prose("text", delta.text)
        if isinstance(delta, Reasoning):
            return self._prose("thinking", delta.text)
        if isinstance(delta, ToolStart):
            out = self._stop(self._current[1]) if self._current is not None else []
            block = {"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}}
            self._calls[delta.index], event = self._begin_block(block)
            return [*out, event]
        if isinstance(delta, ToolArgs):
            partial = {"type": "input_json_delta", "partial_json": delta.fragment}
            index = self._calls[delta.index]
            return [self._event("content_block_delta", index=index, delta=partial)]
        if isinstance(delta, Finish):
            return self._stop_all()
        return []

    def _complete(self, finish: Finish) -> list[bytes]:
        out = self._stop_all()
        reason, sequence = stop_reason(finish, self._request)
        out.append(
            self._event(
                "message_delta",
                delta={"stop_reason": reason, "stop_sequence": sequence},
                usage=usage_object(self.usage),
            )
        )
        out.append(self._event("message_stop"))
        return out

    def _failed(self, message: str, code: str) -> list[bytes]:
        return [sse("error", error_body(502, message))]
