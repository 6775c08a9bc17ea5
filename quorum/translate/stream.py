"""The frame of every translated stream: the engine's chat stream in, a foreign API's out.

Fed the engine's bytes (``feed_sse``) or chunks (``feed``), a
:class:`StreamTranslator` writes the foreign API's events; ``end()`` writes
that API's normal end only if a choice finished, its error event otherwise;
``fail(message)`` writes the error event for a stream that broke. Whatever
happens, exactly one of the two ends is written, and nothing after it.

The engine's chunks are read through :mod:`.sse` (split once per read) and
:class:`~.chat.ChatStreamParser`; a run of plain chunks of one learned shape
(:mod:`.shape`: one token of text each) skips both, and a subclass may write
their events from pieces made once (``_plain``, ``_plains``). Either way the
bytes out are the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from quorum.errors import UpstreamFailed

from .chat import CUT, ChatStreamParser, Delta, Finish, Reasoning, Text
from .common import Counts
from .shape import Shape, learn
from .sse import ChatSseDecoder, decode

_MAX_MISSES = 8  # learning stops after this many shapes in a row with no chunk of theirs


class StreamTranslator(ABC):
    """The frame of a translated stream; subclasses say how each delta is written."""

    media_type: ClassVar[str] = "text/event-stream"

    def __init__(self) -> None:
        self._decoder = ChatSseDecoder()
        self._parser = ChatStreamParser()
        self._started = False
        self.closed = False
        self.error: str | None = None  # why the stream ended with an error event
        self._shape: Shape | None = None  # of the engine's plain chunks (:mod:`.shape`)
        self._misses = 0  # shapes learned in a row that no chunk matched

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
        decoder = self._decoder
        try:
            whole = decoder.cut(data)
        except UpstreamFailed as exc:
            return self.fail(exc.message)
        shape = self._shape
        if shape is not None and whole and not decoder.done:
            texts = shape.read_events(whole)  # the usual read: tokens, all of one shape
            if texts is not None:
                self._misses = 0
                return self._plains(shape.reasoning, texts)
        return self._read(decoder.events(whole))

    def _read(self, payloads: list[bytes]) -> bytes:
        """Events' data: plain chunks of the learned shape are read without decoding them
        (a run of them at once), any other is decoded and parsed (and its shape learned
        when it is plain)."""
        out: list[bytes] = []
        shape = self._shape
        at, runs = 0, 2  # where the next payload is; runs tried at most in this read
        while at < len(payloads):
            if shape is not None:
                if runs and len(payloads) - at > 1:
                    runs -= 1
                    taken = self._run(shape, payloads, at, out)
                    if taken:
                        at += taken
                        continue
                read = shape.read(payloads[at])
                if read is not None:
                    self._misses = 0
                    out.append(self._plain(shape.reasoning, *read))
                    at += 1
                    continue
            payload = payloads[at]
            at += 1
            try:
                chunk = decode(payload)
            except UpstreamFailed as exc:
                out.append(self.fail(exc.message))
                break
            if not isinstance(chunk, dict):
                continue
            out.append(self.feed(chunk))
            if self.closed:
                break
            shape = self._learn(payload, chunk)
        return b"".join(out)

    def _run(self, shape: Shape, payloads: list[bytes], at: int, out: list[bytes]) -> int:
        """Plain chunks from ``at`` on, read at once: how many (0: none were). The run
        ends before the last chunks that do not begin as the shape does (a finish, the
        usage), as a read that holds the end of the answer has them."""
        end = len(payloads)
        while end - at > 1 and not payloads[end - 1].startswith(shape.head):
            end -= 1
        texts = shape.read_many(payloads[at:end]) if end - at > 1 else None
        if texts is None:
            return 0
        self._misses = 0
        out.append(self._plains(shape.reasoning, texts))
        return end - at

    def _learn(self, payload: bytes, chunk: Mapping[str, Any]) -> Shape | None:
        if self._parser.finish is not None or self._misses >= _MAX_MISSES:
            self._shape = None  # nothing counts after the finish; or chunks never repeat
        else:
            self._misses += 1
            self._shape = learn(payload, chunk)
        return self._shape

    def _plain(self, reasoning: bool, text: str, literal: bytes) -> bytes:
        """The events of a plain chunk's text (``literal``: the text as ``dumps`` writes
        it); subclasses may write them from it faster, the same bytes."""
        return b"".join(self._delta(Reasoning(text) if reasoning else Text(text)))

    def _plains(self, reasoning: bool, texts: list[str]) -> bytes:
        """The events of plain chunks' texts, each of which ``dumps`` writes as itself in
        quotes (no character in it needs escaping)."""
        return b"".join(self._plain(reasoning, t, f'"{t}"'.encode()) for t in texts)

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
        rest = self._read(self._decoder.end_payloads())
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
