"""A chat or text completion stream told as Ollama's NDJSON stream.

One JSON object a line: ``/api/chat`` lines carry ``message`` (``content``,
``thinking``), ``/api/generate`` lines carry ``response`` (and ``thinking``),
all with ``done: false``. Tool calls go out whole, with object arguments, in
one line when the engine finishes its choice (as Ollama sends them). The last
line has ``done: true``, ``done_reason``, the token counts and the durations:
from llama.cpp's timings when the engine gives them, else measured here with
the injected clock (prompt evaluation until the first token, evaluation
after). A stream cut before a finish_reason, or broken, ends with an
``{"error": ...}`` line, never with ``done: true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from .chat import Delta, Finish, Reasoning, Text, ToolArgs, ToolStart
from .common import JsonObject, Template, ndjson, slot
from .ollama import OllamaRequest, done_reason, error_body, metrics, rfc3339, tool_calls
from .stream import StreamTranslator


class OllamaStream(StreamTranslator):
    """Feed it the engine's chat (or completion) stream; it writes Ollama's NDJSON lines.

    Make it when the request goes to the engine: its clock starts then.
    """

    media_type: ClassVar[str] = "application/x-ndjson"

    def __init__(
        self,
        request: OllamaRequest,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__()
        self._request = request
        self._clock = clock
        self._wall = wall
        self._began = clock()
        self._first: int | None = None  # when the first token came
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]
        self._templates: dict[str, Template] = {}  # lines of text or thoughts
        self._pieces: dict[str, tuple[bytes, ...]] = {}  # the same, as bytes
        self._second = -1  # the wall-clock second self._stamp is for
        self._stamp = ""

    def _now(self) -> str:
        """``rfc3339`` of the wall clock, its seconds formatted once per second."""
        ns = self._wall()
        second, fraction = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second, self._stamp = second, rfc3339(second * 1_000_000_000)[:-11]
        return f"{self._stamp}.{fraction:09d}Z"

    def _line(self, **fields: Any) -> bytes:
        line: JsonObject = {"model": self._request.model, "created_at": self._now()}
        return ndjson({**line, **fields, "done": False})

    def _say(self, content: str = "", thinking: str = "", calls: Any = None) -> bytes:
        if calls and self._request.kind == "chat":  # /api/generate has no tool calls
            message: JsonObject = {"role": "assistant", "content": content, "tool_calls": calls}
            return self._line(message=message)
        # Text and thoughts go out once per token: from a template, as _line would write them.
        key = "thinking" if thinking else "content"
        template = self._templates.get(key)
        if template is None:
            text = slot("text")
            fields: JsonObject
            if self._request.kind == "chat":
                said = {"content": text} if key == "content" else {"content": "", key: text}
                fields = {"message": {"role": "assistant", **said}}
            else:
                fields = {"response": text} if key == "content" else {"response": "", key: text}
            line = {"model": self._request.model, "created_at": slot("at"), **fields, "done": False}
            template = self._templates[key] = Template(line)
        return (template.fill(at=self._now(), text=thinking or content) + "\n").encode()

    def _start(self) -> list[bytes]:
        return []

    def _plain(self, reasoning: bool, text: str, literal: bytes) -> bytes:
        """A line of text or thoughts: ``_say``'s bytes, with the text as the engine's chunk
        held it."""
        key = "thinking" if reasoning else "content"
        pieces = self._pieces.get(key)
        if pieces is None or self._first is None:
            template = self._templates.get(key)
            if template is not None and template.slots == ("at", "text"):
                before, between, after = template.fixed(after="\n")
                # The time is a JSON string with nothing to escape: its quotes go here.
                self._pieces[key] = (f'{before}"'.encode(), f'"{between}'.encode(), after.encode())
            return super()._plain(reasoning, text, literal)
        return b"%s%s%s%s%s" % (pieces[0], self._now().encode(), pieces[1], literal, pieces[2])

    def _delta(self, delta: Delta) -> list[bytes]:
        if self._first is None and not isinstance(delta, Finish):
            self._first = self._clock()
        if isinstance(delta, Text):
            return [self._say(content=delta.text)]
        if isinstance(delta, Reasoning):
            return [self._say(thinking=delta.text)]
        if isinstance(delta, ToolStart):
            self._calls[delta.index] = [delta.id, delta.name, []]
        elif isinstance(delta, ToolArgs):
            self._calls[delta.index][2].append(delta.fragment)
        elif isinstance(delta, Finish) and self._calls:
            whole = [(c[0], c[1], "".join(c[2])) for _, c in sorted(self._calls.items())]
            return [self._say(calls=tool_calls(whole))]  # raises if arguments are not JSON
        return []

    def _complete(self, finish: Finish) -> list[bytes]:
        now = self._clock()
        first = self._first if self._first is not None else now
        last: JsonObject = {"model": self._request.model, "created_at": self._now()}
        if self._request.kind == "chat":
            last["message"] = {"role": "assistant", "content": ""}
        else:
            last["response"] = ""
        last["done"] = True
        last["done_reason"] = done_reason(finish)
        last.update(
            metrics(
                self._request,
                self.usage,
                self._parser.timings,
                elapsed_ns=now - self._began,
                prompt_ns=first - self._began,
            )
        )
        return [ndjson(last)]

    def _failed(self, message: str, code: str) -> list[bytes]:
        return [ndjson(error_body(message))]
