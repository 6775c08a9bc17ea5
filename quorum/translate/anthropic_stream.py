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
from .chat import Delta, Finish, Reasoning, Text, ToolArgs, ToolStart
from .common import JsonObject, Template, slot, sse
from .stream import StreamTranslator


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
        self._templates: dict[tuple[str, int], Template] = {}  # content_block_delta events
        self._pieces: dict[tuple[str, int], tuple[bytes, ...]] = {}  # the same, as bytes

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
        kind = "text_delta" if kind == "text" else "thinking_delta"
        out.append(self._block_delta(self._current[1], kind, text))
        return out

    def _block_delta(self, index: int, kind: str, text: str) -> bytes:
        """A ``content_block_delta`` (one per token): ``_event``'s bytes, from a template."""
        template = self._templates.get((kind, index))
        if template is None:
            key = {"text_delta": "text", "thinking_delta": "thinking"}.get(kind, "partial_json")
            data = {"type": "content_block_delta", "index": index}
            template = Template({**data, "delta": {"type": kind, key: slot("text")}})
            self._templates[(kind, index)] = template
        return b"event: content_block_delta\ndata: %s\n\n" % template.fill(text=text).encode()

    def _plain(self, reasoning: bool, text: str, literal: bytes) -> bytes:
        """A text or thinking delta in the open block of its kind: ``_prose``'s bytes,
        with the text as the engine's chunk held it."""
        pieces = self._open_pieces(reasoning, text)
        if pieces is None:
            return super()._plain(reasoning, text, literal)
        return pieces[0] + literal + pieces[1]

    def _plains(self, reasoning: bool, texts: list[str]) -> bytes:
        """Many deltas at once: each text between the same two pieces, in quotes."""
        pieces = self._open_pieces(reasoning, texts[0])
        if pieces is None:
            return super()._plains(reasoning, texts)
        before, after = pieces[0] + b'"', b'"' + pieces[1]
        return before + (after + before).join(t.encode() for t in texts) + after

    def _open_pieces(self, reasoning: bool, text: str) -> tuple[bytes, ...] | None:
        """The bytes around a delta's text in the open block of its kind (None if the
        block is not open: the delta opens it)."""
        current = self._current
        if current is None or current[0] != ("thinking" if reasoning else "text"):
            return None
        key = ("thinking_delta" if reasoning else "text_delta", current[1])
        pieces = self._pieces.get(key)
        if pieces is None:
            self._block_delta(current[1], key[0], text)  # makes the template
            pieces = self._templates[key].pieces("event: content_block_delta\ndata: ", "\n\n")
            self._pieces[key] = pieces
        return pieces

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
            index = self._calls[delta.index]
            return [self._block_delta(index, "input_json_delta", delta.fragment)]
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
