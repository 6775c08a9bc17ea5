"""The chat-completions side of every translation: what an engine answered, read once.

- :class:`~.sse.ChatSseDecoder` turns the engine's ``text/event-stream`` bytes, cut
  anywhere, into chunk objects (``data: [DONE]`` ends it).
- :class:`ChatStreamParser` turns chunk objects into a few plain deltas
  (:class:`Text`, :class:`Reasoning`, :class:`ToolStart`, :class:`ToolArgs`,
  :class:`Finish`) whatever the engine's habits: a tool call's name and
  arguments in one chunk or spread over many, ``reasoning`` or
  ``reasoning_content``, usage in the last chunk or in llama.cpp's ``timings``.
- :func:`parse_answer` reads a whole chat or text completion the same way.
- :class:`~.stream.StreamTranslator` (its own module) is the frame of every
  translated stream.

Only the first choice is read: translated requests never ask for ``n > 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quorum.errors import UpstreamFailed

from .common import Counts, counts_from, dumps, finish_reason, message_of, new_id
from .shape import reasoning_of as _reasoning_of
from .sse import ChatSseDecoder as ChatSseDecoder  # re-exported: the engine side in one place

CUT = "The engine ended the answer without a finish_reason: it was cut off before it finished."


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    index: int  # 0, 1, ... in the order the calls began
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    index: int
    fragment: str  # a piece of the JSON arguments text


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # stop | length | tool_calls | content_filter
    stop_sequence: str | None = None  # the stop string that ended it, when the engine says


Delta = Text | Reasoning | ToolStart | ToolArgs | Finish


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the engine wrote it


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """A whole chat (or text) completion, reduced to what translations need."""

    id: str
    model: str
    text: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    finish: Finish | None
    usage: Counts | None
    timings: Mapping[str, Any] | None = None  # llama.cpp's, in milliseconds


def _finish_of(choice: Mapping[str, Any], has_tools: bool) -> Finish | None:
    reason = finish_reason(choice.get("finish_reason"))
    if reason is None:
        return None
    if reason == "stop" and has_tools:
        reason = "tool_calls"  # some engines say "stop" after a tool call
    matched = choice.get("stop_reason")  # vLLM: the stop string that matched
    return Finish(reason, matched if reason == "stop" and isinstance(matched, str) else None)


def _timings(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    timings = obj.get("timings")
    return timings if isinstance(timings, dict) else None


def _arguments_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else dumps(value)  # a few engines send an object


def parse_answer(obj: Any) -> ChatAnswer:
    """Read a whole chat or text completion; :class:`UpstreamFailed` if it is not one."""
    if not isinstance(obj, dict):
        raise UpstreamFailed("The engine's answer is not a JSON object.")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamFailed("The engine's answer has no choices.")
    choice = choices[0]
    message = choice.get("message")
    calls: list[ToolCall] = []
    if isinstance(message, dict):
        text = message.get("content")
        reasoning = _reasoning_of(message)
        for raw in message.get("tool_calls") or ():
            fn = raw.get("function") if isinstance(raw, dict) else None
            if not isinstance(fn, dict):
                raise UpstreamFailed("The engine's answer has a tool call without a function.")
            call_id = raw.get("id")
            calls.append(
                ToolCall(
                    call_id if isinstance(call_id, str) and call_id else new_id("call_"),
                    str(fn.get("name") or ""),
                    _arguments_text(fn.get("arguments")),
                )
            )
    else:
        text, reasoning = choice.get("text"), ""
    model, answer_id = obj.get("model"), obj.get("id")
    return ChatAnswer(
        id=answer_id if isinstance(answer_id, str) else "",
        model=model if isinstance(model, str) else "",
        text=text if isinstance(text, str) else "",
        reasoning=reasoning,
        tool_calls=tuple(calls),
        finish=_finish_of(choice, bool(calls)),
        usage=counts_from(obj),
        timings=_timings(obj),
    )


@dataclass
class _Call:
    index: int
    id: str = ""
    name: str = ""
    started: bool = False
    pending: list[str] = field(default_factory=list)


class ChatStreamParser:
    """Chat-completion chunks to :data:`Delta` values, tool calls numbered 0, 1, ..."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.usage: Counts | None = None
        self.timings: Mapping[str, Any] | None = None
        self.finish: Finish | None = None
        self._calls: dict[Any, _Call] = {}

    def feed(self, chunk: Mapping[str, Any]) -> list[Delta]:
        if chunk.get("error"):
            raise UpstreamFailed(
                message_of(chunk, "The engine reported an error mid-answer."), code="engine_error"
            )
        if not self.id and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if not self.model and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if (counts := counts_from(chunk)) is not None:
            self.usage = counts
        self.timings = _timings(chunk) or self.timings
        out: list[Delta] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        return out

    def _choice(self, choice: Mapping[str, Any], out: list[Delta]) -> None:
        if self.finish is not None:
            return  # nothing counts after the finish (a usage-only chunk may follow)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if reasoning := _reasoning_of(delta):
                out.append(Reasoning(reasoning))
            content = delta.get("content")
            for raw in delta.get("tool_calls") or ():
                if isinstance(raw, dict):
                    self._tool(raw, out)
        else:
            content = choice.get("text")  # a text completion's chunk
        if isinstance(content, str) and content:
            out.append(Text(content))
        finish = _finish_of(choice, bool(self._calls))
        if finish is not None:
            for call in self._calls.values():
                if not call.started:  # a call whose name never came: still say it
                    self._start(call, out)
            self.finish = finish
            out.append(finish)

    def _tool(self, raw: Mapping[str, Any], out: list[Delta]) -> None:
        key: Any = raw.get("index")
        if not isinstance(key, int):
            # No index: the call with this id, else a new one if it has an id, else the last.
            call_id = raw.get("id")
            key = next((k for k, c in self._calls.items() if call_id and c.id == call_id), None)
            if key is None:
                new = call_id or not self._calls
                key = ("auto", len(self._calls)) if new else next(reversed(self._calls))
        call = self._calls.get(key) or self._calls.setdefault(key, _Call(len(self._calls)))
        if isinstance(raw.get("id"), str) and raw["id"] and not call.id:
            call.id = raw["id"]
        fn = raw.get("function")
        fn = fn if isinstance(fn, dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"] and not call.name:
            call.name = fn["name"]
        args = _arguments_text(fn.get("arguments"))
        if not call.started and call.name:
            self._start(call, out)
        if args:
            if call.started:
                out.append(ToolArgs(call.index, args))
            else:
                call.pending.append(args)

    def _start(self, call: _Call, out: list[Delta]) -> None:
        call.started = True
        call.id = call.id or new_id("call_")
        out.append(ToolStart(call.index, call.id, call.name))
        if call.pending:
            out.append(ToolArgs(call.index, "".join(call.pending)))
            call.pending.clear()
