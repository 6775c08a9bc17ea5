"""The chat-completions side of every translation: what an engine answered, read once.

- :class:`~.sse.ChatSseDecoder` turns the engine's ``text/event-stream`` bytes, cut
  anywhere, into chunk objects (``data: [DONE]`` ends it).
- :class:`ChatStreamParser` turns chunk objects into a few plain deltas
  (:class:`Text`, :class:`Reasoning`, :class:`ToolStart`, :class:`ToolArgs`,
  :class:`Finish`) whatever the engine's habits: a tool call's name and
  arguments in one chunk or spread over many, ``reasoning`` or
  ``reasoning_content``, usage in the last chunk or in llama.cpp's ``timings``.
- :func:`parse_answer` reads a whole chat or text completion the same way.
- :class:`StreamTranslator` is the frame of every translated stream: fed the
  engine's bytes (``feed_sse``) or chunks (``feed``), it writes the foreign
  API's events; ``end()`` writes that API's normal end only if a choice
  finished, its error event otherwise; ``fail(message)`` writes the error
  event for a stream that broke. Whatever happens, exactly one of the two
  ends is written, and nothing after it.

Only the first choice is read: translated requests never ask for ``n > 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quorum.errors import UpstreamFailed

from .common import Counts, counts_from, dumps, finish_reason, message_of, new_id
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


def _reasoning_of(delta: Mapping[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


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


class StreamTranslator(ABC):
    """The frame of a translated stream; subclasses say how each delta is written."""

    media_type: ClassVar[str] = "text/event-stream"

    def __init__(self) -> None:
        self._decoder = ChatSseDecoder()
        self._parser = ChatStreamParser()
        self._started = False
        self.closed = False
        self.error: str | None = None  # why the stream ended with an error event

    @property
    def usage(self) -> Counts | None:
        """The token counts the engine reported (at the end of its stream)."""
        return self._parser.usage

    @property
    def finished(self) -> bool:
        """A choice finished: the answer is whole."""
        return self._parser.finish is not None

    def feed_sse(self, data: bytes) -> bytes:
        """The engine's stream bytes (any split) -> this API's stream bytes."""
        if self.closed:
            return b""
        try:
            chunks = self._decoder.feed(data)
        except UpstreamFailed as exc:
            return self.fail(exc.message)
        return b"".join(self.feed(chunk) for chunk in chunks)

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One chat-completion chunk (a parsed object) -> this API's stream bytes."""
        if self.closed:
            return b""
        out = self._begin()
        try:
            for delta in self._parser.feed(chunk):
                out.extend(self._delta(delta))
        except UpstreamFailed as exc:
            return b"".join(out) + self.fail(exc.message, code=exc.code or "engine_error")
        return b"".join(out)

    def end(self) -> bytes:
        """The engine's stream is over: the normal end if it finished, else an error."""
        if self.closed:
            return b""
        try:
            rest = b"".join(self.feed(chunk) for chunk in self._decoder.end())
        except UpstreamFailed as exc:
            return self.fail(exc.message)
        if self.closed:
            return rest
        finish = self._parser.finish
        if finish is None:
            return rest + self.fail(CUT, code="answer_cut")
        self.closed = True
        return rest + b"".join([*self._begin(), *self._complete(finish)])

    def fail(self, message: str, *, code: str = "engine_error") -> bytes:
        """End the stream with this API's error event (the engine broke off or failed)."""
        if self.closed:
            return b""
        self.closed = True
        self.error = message
        return b"".join([*self._begin(), *self._failed(message, code)])

    def _begin(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return self._start()

    @abstractmethod
    def _start(self) -> list[bytes]:
        """The events that open the stream (before the first delta)."""

    @abstractmethod
    def _delta(self, delta: Delta) -> list[bytes]:
        """The events for one delta."""

    @abstractmethod
    def _complete(self, finish: Finish) -> list[bytes]:
        """The events of a whole answer's end (usage is known by now)."""

    @abstractmethod
    def _failed(self, message: str, code: str) -> list[bytes]:
        """The events of a broken answer's end."""
