"""A chunk the engine keeps sending alike, read without decoding it. Pure.

Engines write every token's chunk the same way: the same id, model and
creation time around one piece of text that changes. Once a chunk has been
decoded and found *plain* (:func:`plain_delta`: it gives the parser one
:class:`~.chat.Text` or :class:`~.chat.Reasoning` and changes nothing else),
:func:`learn` finds where its text sits in the engine's bytes: a ``head``
before it and a ``tail`` after it. A later chunk made of the same head, one
JSON string and the same tail is the same object with another text, so
:meth:`Shape.read` gives that text without decoding the rest.

Why that is exact: JSON's grammar reads the head the same way each time, so
the string after it is read as one value in the same place, and the tail
after it the same way; :func:`learn` proves the place by decoding the head
and tail around a probe text, and :meth:`Shape.read` accepts only a middle
that is exactly one valid JSON string (the stdlib's own scanner says so).
Anything else (an empty text, a chunk of another shape, bytes that are not
UTF-8) is left to the full decoder, which decides as it always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]  # (C; not in the stubs)
from typing import Any

from quorum.errors import UpstreamFailed

from .common import counts_from, dumps, finish_reason
from .sse import decode

_PROBE = "\u2603 probe"
_QUOTE = ord('"')
_LONG = 4096  # characters of events past which splitting at a mark is quicker
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")  # control characters but the line break


class Shape:
    """A plain chunk's bytes around its text: ``reasoning`` says which kind of text."""

    __slots__ = ("_events", "_run", "head", "reasoning", "tail")

    def __init__(self, reasoning: bool, head: bytes, tail: bytes) -> None:
        self.reasoning, self.head, self.tail = reasoning, head, tail
        around = head + tail
        # Runs of chunks are read at once only when nothing around the text is escaped
        # or a control character (a line break would make the joins ambiguous).
        clean = b"\\" not in around and b"\n" not in around and _CONTROL.search(around) is None
        opened, closed = head + b'"', b'"' + tail
        # Chunks joined by a line break (read_many): before the first text, between two,
        # after the last; SSE events (read_events): the same, and where the texts are.
        run = (opened, (closed + b"\n" + opened).decode(), closed)
        between = (closed + b"\n\ndata: " + opened).decode()
        # Splitting at a short start of it is much quicker than at all of it (and the
        # parts are checked whole, see read_events): one that is there only once.
        mark = next(between[:n] for n in (24, 48, len(between)) if between.count(between[:n]) == 1)
        ended = closed + b"\n\n"  # the last event, with its blank line
        events = (b"data: " + opened, ended, between, len(opened) + 6, -len(ended), mark)
        self._run = run if clean else None
        self._events = events if clean else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Shape):
            return NotImplemented
        return (self.reasoning, self.head, self.tail) == (other.reasoning, other.head, other.tail)

    def __hash__(self) -> int:
        return hash((self.reasoning, self.head, self.tail))

    def __repr__(self) -> str:
        return f"Shape(reasoning={self.reasoning}, head={self.head!r}, tail={self.tail!r})"

    def read(self, payload: bytes) -> tuple[str, bytes] | None:
        """The text of a chunk of this shape, and that text as :func:`~.common.dumps`
        writes it (UTF-8); None when the payload is not one, or its text is empty."""
        head, tail = self.head, self.tail
        end = len(payload) - len(tail)
        if (
            end - len(head) < 3  # "" (empty) at the least
            or not payload.startswith(head)
            or not payload.endswith(tail)
            or payload[len(head)] != _QUOTE
        ):
            return None
        literal = payload[len(head) : end]
        try:
            raw = literal.decode()
            text, stop = scanstring(raw, 1)
        except ValueError:  # not UTF-8, or not one valid string
            return None
        if stop != len(raw):
            return None
        if "\\" in raw:  # escapes the engine chose: written again as dumps writes them
            literal = dumps(text).encode()
        # Without escapes the engine's literal is dumps' own: it escapes only quotes,
        # backslashes and control characters, none of which a valid unescaped string holds.
        return text, literal

    def read_events(self, whole: bytes) -> list[str] | None:
        """The texts of SSE events (``data: `` lines, each followed by a blank line) that
        are all chunks of this shape, each text written without escapes;
        else None. As :meth:`read_many` does, on the stream's own bytes: they must be the
        head, texts with what lies between two texts (a quote, the tail, a blank line,
        ``data: ``, the head, a quote) between them, and the tail; which is found by
        splitting at the start of that and checking that joining the parts with all of
        it gives the bytes back."""
        events = self._events
        if events is None:
            return None
        head, tail, between, start, stop, mark = events
        if not whole.startswith(head) or not whole.endswith(tail):
            return None
        try:
            text = whole[start:stop].decode()
        except UnicodeDecodeError:
            return None
        if len(text) < _LONG:  # (what _clean does, here: this runs once a read)
            parts = text.split(between)
            every = "".join(parts)
            if "" in parts or not every.isprintable() or '"' in every or "\\" in every:
                return None
            return parts
        parts = text.split(mark)
        if len(parts) > 1:  # each part after the first begins with the rest of `between`
            rest = len(between) - len(mark)
            parts[1:] = [part[rest:] for part in parts[1:]]
            if between.join(parts) != text:  # so it is the texts, and only them, between
                return None
        return _clean(parts)

    def read_many(self, payloads: list[bytes]) -> list[str] | None:
        """The texts of chunks that are all of this shape, each written in its chunk
        without escapes (so ``dumps`` writes it as itself in quotes); else None.

        Done on the chunks joined by line breaks: split at the bytes between two texts
        (a quote, the tail, the join, the head, a quote), there must be one part per
        chunk, none empty, and none with a quote, a backslash or a control character.
        The shape has no line break around the text and the texts have none, so every
        line break is a join, and every join one of those splits: each chunk is the
        head, one valid string with nothing to unescape, and the tail."""
        if self._run is None:
            return None
        head, between, tail = self._run
        joined = b"\n".join(payloads)
        if not joined.startswith(head) or not joined.endswith(tail):
            return None
        try:
            texts = joined[len(head) : len(joined) - len(tail)].decode().split(between)
        except UnicodeDecodeError:
            return None
        return _clean(texts) if len(texts) == len(payloads) else None


def _clean(texts: list[str]) -> list[str] | None:
    """The texts, when none is empty or holds a quote, a backslash or a control character
    (nor a few rare others: those chunks are left to the decoder)."""
    every = "".join(texts)  # (one text: that text, not a copy)
    if "" in texts or not every.isprintable() or '"' in every or "\\" in every:
        return None
    return texts


def reasoning_of(delta: Mapping[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def plain_delta(chunk: Mapping[str, Any]) -> tuple[bool, str] | None:
    """``(reasoning, text)`` when the parser would read only that one text from the chunk
    (first choice, no finish, no tool call, no usage or timings, no error); else None."""
    if chunk.get("error") or counts_from(chunk) is not None or "timings" in chunk:
        return None
    choices = chunk.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return None
    choice = choices[0]
    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
        return None
    if finish_reason(choice.get("finish_reason")) is not None:
        return None
    delta = choice.get("delta")
    if isinstance(delta, dict):
        if delta.get("tool_calls"):
            return None
        reasoning, content = reasoning_of(delta), delta.get("content")
    else:
        reasoning, content = "", choice.get("text")  # a text completion's chunk
    content = content if isinstance(content, str) else ""
    if bool(reasoning) == bool(content):
        return None  # neither, or both (two deltas)
    return (True, reasoning) if reasoning else (False, content)


def learn(payload: bytes, chunk: Mapping[str, Any]) -> Shape | None:
    """The shape of a plain chunk (``chunk`` is ``payload`` decoded), or None."""
    plain = plain_delta(chunk)
    if plain is None:
        return None
    reasoning, text = plain
    for literal in dict.fromkeys((dumps(text).encode(), json.dumps(text).encode())):
        at = payload.find(literal)
        if at < 0 or payload.find(literal, at + 1) >= 0:
            continue  # not there as written here, or there more than once
        head, tail = payload[:at], payload[at + len(literal) :]
        try:
            probe = decode(head + dumps(_PROBE).encode() + tail)
        except UpstreamFailed:
            return None
        if not isinstance(probe, dict) or plain_delta(probe) != (reasoning, _PROBE):
            return None
        return Shape(reasoning, head, tail)
    return None
