"""A chat-completions stream told as the Responses API's event stream.

The events, each with a ``sequence_number`` counting from 0::

    response.created, response.in_progress            (status in_progress)
    per output item, in output_index order:
      reasoning:  output_item.added, content_part.added, reasoning_text.delta...,
                  reasoning_text.done, content_part.done, output_item.done
      message:    output_item.added, content_part.added, output_text.delta..., output_text.done,
                  content_part.done, output_item.done
      tool call:  output_item.added, function_call_arguments.delta..., function_call_arguments.done,
                  output_item.done
    response.completed                                (or response.incomplete: out of tokens)

Items close when the engine finishes its choice; the last event waits for the
end of the engine's stream, whose final chunk carries the usage. A stream cut
before a finish_reason, or broken, ends with an ``error`` event and then
``response.failed`` (the items so far marked ``incomplete``), never with
``response.completed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .chat import Delta, Finish, Reasoning, Text, ToolArgs, ToolStart
from .common import JsonObject, Template, new_id, slot, sse
from .responses import ResponsesRequest
from .responses_items import (
    call_item,
    item_id,
    message_item,
    reasoning_item,
    response_object,
    status_of,
    usage_object,
)
from .stream import StreamTranslator


class ResponsesStream(StreamTranslator):
    """Feed it the engine's chat stream; it writes the Responses event stream.

    Make it when the request goes to the engine: ``clock()`` (wall-clock
    seconds) is read then for ``created_at``, and again at the end.
    """

    def __init__(
        self,
        request: ResponsesRequest,
        *,
        response_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._request = request
        self._id = response_id or new_id("resp_")
        self._clock = clock
        self._created = int(clock())
        self._seq = 0
        self._output: list[JsonObject] = []  # every item, as it stands now
        self._texts: dict[int, list[str]] = {}  # output_index -> text or arguments so far
        self._open: list[int] = []  # output indexes of items not yet done
        self._message: int | None = None  # the open message item
        self._reasoning: int | None = None  # the open reasoning item
        self._calls: dict[int, int] = {}  # tool call index -> output_index
        self._made = {"message": 0, "reasoning": 0}  # items of each kind so far, for ids
        self._templates: dict[tuple[str, int], Template] = {}  # delta events, by kind and item
        self._pieces: dict[tuple[str, int, bool], tuple[str, ...]] = {}  # their fixed text
        # (reasoning, output index, its quoted pieces, its texts) of the last _plains
        self._last: tuple[Any, ...] = (None, None)

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse(kind, data)

    def _delta_event(self, kind: str, index: int, text: str, content: bool = True) -> bytes:
        """A delta event, one per token: the bytes ``_event`` would give, from a template
        made once per item (a text delta also says ``content_index``; output text, logprobs)."""
        template = self._template(kind, index, content)
        seq = self._seq
        self._seq += 1
        return f"event: {kind}\ndata: {template.fill(seq=seq, delta=text)}\n\n".encode()

    def _template(self, kind: str, index: int, content: bool = True) -> Template:
        template = self._templates.get((kind, index))
        if template is None:
            data: JsonObject = {"type": kind, "sequence_number": slot("seq")}
            data.update(item_id=self._output[index]["id"], output_index=index)
            if content:
                data["content_index"] = 0
            data["delta"] = slot("delta")
            if kind == "response.output_text.delta":
                data["logprobs"] = []
            template = self._templates[(kind, index)] = Template(data)
        return template

    def _plain(self, reasoning: bool, text: str, literal: bytes) -> bytes:
        """A text or reasoning delta in the open item of its kind: ``_prose``'s bytes, with
        the text as the engine's chunk held it."""
        index = self._reasoning if reasoning else self._message
        if index is None:
            return super()._plain(reasoning, text, literal)
        before, between, after = self._delta_pieces(reasoning, index, quoted=False)
        self._texts[index].append(text)
        seq = self._seq
        self._seq += 1
        return f"{before}{seq}{between}".encode() + literal + after.encode()

    def _plains(self, reasoning: bool, texts: list[str]) -> bytes:
        """Many deltas at once, numbered on: the same bytes as one ``_plain`` each."""
        index = self._reasoning if reasoning else self._message
        if index is None:
            return super()._plains(reasoning, texts)
        last = self._last
        if last[0] is not reasoning or last[1] != index:
            pieces = self._delta_pieces(reasoning, index, quoted=True)
            last = self._last = (reasoning, index, *pieces, self._texts[index])
        _, _, before, between, after, kept = last
        kept.extend(texts)
        seq = self._seq
        self._seq += len(texts)
        if len(texts) == 1:
            return f"{before}{seq}{between}{texts[0]}{after}".encode()
        numbered = zip(range(seq, self._seq), texts, strict=True)
        return "".join([f"{before}{n}{between}{t}{after}" for n, t in numbered]).encode()

    def _delta_pieces(self, reasoning: bool, index: int, *, quoted: bool) -> tuple[str, ...]:
        """The text of this item's delta event before its sequence number, between that
        and its text, and after its text (``quoted``: the text's quotes in the pieces)."""
        kind = "response.reasoning_text.delta" if reasoning else "response.output_text.delta"
        key = (kind, index, quoted)
        pieces = self._pieces.get(key)
        if pieces is None:
            template = self._template(kind, index)
            assert template.slots == ("seq", "delta")
            before, between, after = template.fixed(f"event: {kind}\ndata: ", "\n\n")
            if quoted:
                between, after = between + '"', '"' + after
            pieces = self._pieces[key] = (before, between, after)
        return pieces

    def _response(self, status: str, output: list[JsonObject], **extra: Any) -> JsonObject:
        req = self._request
        return response_object(
            req.model, req.echo, self._id, self._created, status, output, **extra
        )

    def _start(self) -> list[bytes]:
        response = self._response("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _prose(self, kind: str, text: str) -> list[bytes]:
        """A text or reasoning delta, in an open item of its kind (added if need be)."""
        out: list[bytes] = []
        message = kind == "message"
        index = self._message if message else self._reasoning
        if index is None:
            out += self._close_all()
            n = self._made[kind]
            self._made[kind] += 1
            make = message_item if message else reasoning_item
            index = self._add(
                out, make(item_id(self._id, "msg" if message else "rs", n), "", "in_progress")
            )
            if message:
                self._message = index
            else:
                self._reasoning = index
            out.append(self._part_event("response.content_part.added", index, ""))
        if text:
            self._texts[index].append(text)
            kind = "output_text" if message else "reasoning_text"
            out.append(self._delta_event(f"response.{kind}.delta", index, text))
        return out

    def _delta(self, delta: Delta) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(delta, Text):
            out += self._prose("message", delta.text)
        elif isinstance(delta, Reasoning):
            out += self._prose("reasoning", delta.text)
        elif isinstance(delta, ToolStart):
            out += self._close(self._message) + self._close(self._reasoning)
            item = item_id(self._id, "fc", delta.index)
            self._calls[delta.index] = self._add(
                out, call_item(item, delta.id, delta.name, "", "in_progress")
            )
        elif isinstance(delta, ToolArgs):
            index = self._calls[delta.index]
            self._texts[index].append(delta.fragment)
            kind = "response.function_call_arguments.delta"
            out.append(self._delta_event(kind, index, delta.fragment, content=False))
        elif isinstance(delta, Finish):
            if not self._output:  # an empty answer is still one message, as in a whole one
                out += self._prose("message", "")
            out += self._close_all(status_of(delta.reason)[0])
        return out

    def _add(self, out: list[bytes], item: JsonObject) -> int:
        index = len(self._output)
        self._output.append(item)
        self._texts[index] = []
        self._open.append(index)
        out.append(self._event("response.output_item.added", output_index=index, item=item))
        return index

    def _part(self, index: int, text: str) -> JsonObject:
        if self._output[index]["type"] == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _part_event(self, kind: str, index: int, text: str) -> bytes:
        item = self._output[index]["id"]
        part = self._part(index, text)
        return self._event(kind, item_id=item, output_index=index, content_index=0, part=part)

    def _text_event(self, kind: str, index: int, text: str) -> bytes:
        """``response.output_text.done`` or ``response.reasoning_text.done``: the whole text."""
        extra: JsonObject = {} if "reasoning" in kind else {"logprobs": []}
        return self._event(
            kind,
            item_id=self._output[index]["id"],
            output_index=index,
            content_index=0,
            text=text,
            **extra,
        )

    def _close(
        self, index: int | None, status: str = "completed", tell: bool = True
    ) -> list[bytes]:
        if index is None or index not in self._open:
            return []
        self._open.remove(index)
        if index == self._message:
            self._message = None
        if index == self._reasoning:
            self._reasoning = None
        item = self._output[index]
        text = "".join(self._texts[index])
        out: list[bytes] = []
        if item["type"] == "function_call":
            item = call_item(item["id"], item["call_id"], item["name"], text, status)
            if tell:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=text,
                    )
                )
        else:
            reasoning = item["type"] == "reasoning"
            make = reasoning_item if reasoning else message_item
            item = make(item["id"], text, status)
            if tell:
                kind = "reasoning_text" if reasoning else "output_text"
                out.append(self._text_event(f"response.{kind}.done", index, text))
                out.append(self._part_event("response.content_part.done", index, text))
        self._output[index] = item
        if tell:
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _close_all(self, status: str = "completed", tell: bool = True) -> list[bytes]:
        return [e for index in list(self._open) for e in self._close(index, status, tell)]

    def _complete(self, finish: Finish) -> list[bytes]:
        out = self._close_all()
        status, incomplete = status_of(finish.reason)
        response = self._response(
            status,
            self._output,
            usage=usage_object(self.usage),
            incomplete=incomplete,
            completed_at=int(self._clock()) if status == "completed" else None,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=response))
        return out

    def _failed(self, message: str, code: str) -> list[bytes]:
        self._close_all("incomplete", tell=False)
        error = {"code": "server_error", "message": message}
        return [
            self._event("error", code=code, message=message, param=None),
            self._event(
                "response.failed", response=self._response("failed", self._output, error=error)
            ),
        ]
