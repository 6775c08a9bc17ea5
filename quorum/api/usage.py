"""Token counts found in an engine's answer. Pure, stdlib only (the relay uses it too).

Where engines put them:

- OpenAI, vLLM, LM Studio, mlx_lm, Ollama's ``/v1``: ``usage.prompt_tokens`` and
  ``usage.completion_tokens`` in a JSON answer; when streaming, in the last
  chunk (``choices: []``) if the client asked with
  ``stream_options.include_usage``. vLLM's ``continuous_usage_stats`` repeats a
  running ``usage`` in every chunk: the last one is the total, so the last
  usage seen wins. ``"usage": null`` chunks are skipped.
- Embeddings: ``usage.prompt_tokens`` only (completion stays None).
- Responses API and token-billed transcription: ``input_tokens``/``output_tokens``
  (also nested as ``response.usage`` in a ``response.completed`` event).
- llama.cpp: ``timings.prompt_n``/``timings.predicted_n`` on the final chunk,
  used when no ``usage`` came (``prompt_n`` counts only the prompt tokens it
  had to evaluate, not those reused from its cache).
- Ollama's native API: ``prompt_eval_count``/``eval_count`` (NDJSON lines).

Audio billed by duration (``usage.type == "duration"``) has no token counts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_MAX_COUNT = 2**53
_DONE_LINE = re.compile(rb"data:[ \t]*\[DONE\][ \t]*\r?$", re.MULTILINE)  # at a line's start
_HINTS = (b'"usage"', b'"timings"', b'"eval_count"', b'"prompt_eval_count"')
# What a batch is scanned for, a pass each: one finds both of Ollama's counts (a line found
# is checked against every hint above before it is decoded).
_SCAN = (b'"usage"', b'"timings"', b"eval_count")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def done_line(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Where a ``data: [DONE]`` line starts in ``data[start:end]`` (``start`` begins a line),
    or -1. Only lines holding ``[DONE]`` are matched: a multi-line expression would try
    every one of a batch's thousand ``data:`` lines."""
    stop = len(data) if end is None else end
    at = data.find(b"[DONE]", start, stop)
    while at >= 0:
        begin = data.rfind(b"\n", start, at) + 1 or start
        if _DONE_LINE.match(data, begin, stop):
            return begin
        at = data.find(b"[DONE]", at + 6, stop)
    return -1


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _pair(prompt: object, completion: object) -> Usage | None:
    p, c = _count(prompt), _count(completion)
    return None if p is None and c is None else Usage(p, c)


def usage_from_object(obj: object) -> Usage | None:
    """The token counts in one decoded answer or stream event, in any dialect above."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        found = _pair(
            usage.get("prompt_tokens", usage.get("input_tokens")),
            usage.get("completion_tokens", usage.get("output_tokens")),
        )
        if found is not None:
            return found
    # Responses API events nest it in "response"; Anthropic's message_start in "message".
    for nested in ("response", "message"):
        inner = obj.get(nested)
        if isinstance(inner, dict) and (found := usage_from_object(inner)) is not None:
            return found
    if "prompt_eval_count" in obj or "eval_count" in obj:
        found = _pair(obj.get("prompt_eval_count"), obj.get("eval_count"))
        if found is not None:
            return found
    timings = obj.get("timings")
    if isinstance(timings, dict):
        return _pair(timings.get("prompt_n"), timings.get("predicted_n"))
    return None


def usage_from_json(body: bytes) -> Usage | None:
    """The token counts in a whole JSON answer, or None (not JSON, or none reported)."""
    try:
        return usage_from_object(json.loads(body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class SseUsageScanner:
    """Finds token counts in a streamed answer, fed in chunks of any size.

    Reads ``data:`` lines (server-sent events) and bare JSON lines (NDJSON);
    keeps the last counts seen, since the final chunk(s) carry the totals.
    Only lines that mention a usage field are decoded, and a line longer than
    ``max_line`` is skipped, so memory stays bounded whatever the stream.
    """

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._skipping = False
        self._max_line = max_line
        self.usage: Usage | None = None
        self.done = False
        """The stream said ``data: [DONE]``: the client has the whole answer."""

    def feed(self, chunk: bytes) -> None:
        start = 0
        if self._buf or self._skipping:  # a line began in an earlier chunk
            end = chunk.find(b"\n")
            if end < 0:
                self._keep(chunk)
                return
            if self._skipping:
                self._skipping = False
            else:
                self._buf += chunk[:end]
                line = bytes(self._buf)
                self._buf.clear()
                self._line(line)
            start = end + 1
        last = chunk.rfind(b"\n", start) + 1  # chunk[start:last] is whole lines
        if last:
            self._whole_lines(chunk, start, last)
        else:
            last = start
        if last < len(chunk):
            self._keep(chunk[last:])

    def _whole_lines(self, chunk: bytes, start: int, last: int) -> None:
        """Decode only the lines that mention a count (C-speed scans find them): a stream's
        batch of a thousand events is not walked line by line in Python."""
        if done_line(chunk, start, last) >= 0:
            self.done = True
        found: set[tuple[int, int]] = set()
        for hint in _SCAN:
            at = chunk.find(hint, start, last)
            while at >= 0:
                begin = chunk.rfind(b"\n", start, at) + 1 or start
                end = chunk.find(b"\n", at, last)
                found.add((begin, end))
                at = chunk.find(hint, end, last)
        for begin, end in sorted(found):  # in order: the last counts seen win
            self._line(chunk[begin:end])

    def _keep(self, part: bytes) -> None:
        """The start of a line whose end is still to come (a line over ``max_line`` is skipped)."""
        if self._skipping:
            return
        self._buf += part
        if len(self._buf) > self._max_line:
            self._buf.clear()
            self._skipping = True

    def close(self) -> Usage | None:
        """End of the stream: read a last unterminated line; the counts found."""
        if self._buf and not self._skipping:
            self._line(bytes(self._buf))
        self._buf.clear()
        return self.usage

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
            if line == b"[DONE]":
                self.done = True
                return
        elif not line.startswith(b"{"):
            return
        if not line.startswith(b"{") or not any(hint in line for hint in _HINTS):
            return
        found = usage_from_json(line)
        if found is not None:
            # A later event may carry only part (Anthropic's message_delta: output only):
            # what an earlier one said of the rest still holds.
            last = self.usage
            if last is not None:
                found = Usage(
                    found.prompt_tokens if found.prompt_tokens is not None else last.prompt_tokens,
                    found.completion_tokens
                    if found.completion_tokens is not None
                    else last.completion_tokens,
                )
            self.usage = found


class ResponseUsageScanner:
    """Token counts of any answer passed through chunk by chunk.

    Streams (``text/event-stream``, NDJSON) go through ``SseUsageScanner``; a
    JSON answer is kept up to ``max_json`` bytes and decoded at the end (an
    answer over that is counted from the last ``"usage"`` object in its
    tail); anything else (audio, images) has no counts.
    """

    def __init__(self, content_type: str, max_json: int = 16 << 20) -> None:
        mime = content_type.split(";", 1)[0].strip().lower()
        self._stream = (
            SseUsageScanner() if mime in ("text/event-stream", "application/x-ndjson") else None
        )
        self._json = mime == "application/json" or mime.endswith("+json")
        self._body = bytearray()
        self._max_json = max_json
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if self._stream is not None:
            self._stream.feed(chunk)
        elif self._json:
            self._body += chunk
            if len(self._body) > self._max_json:
                del self._body[: len(self._body) - _TAIL]
                self._overflow = True

    @property
    def done(self) -> bool:
        """A stream that ended with ``data: [DONE]`` (see ``SseUsageScanner.done``)."""
        return self._stream is not None and self._stream.done

    def result(self) -> Usage | None:
        if self._stream is not None:
            return self._stream.close()
        if not self._json:
            return None
        if not self._overflow:
            return usage_from_json(bytes(self._body))
        return usage_from_tail(bytes(self._body))


_TAIL = 64 * 1024


def usage_from_tail(tail: bytes) -> Usage | None:
    """Counts from the last ``"usage": {...}`` object in the end of a too-large JSON answer."""
    pos = len(tail)
    decoder = json.JSONDecoder()
    while (pos := tail.rfind(b'"usage"', 0, pos)) >= 0:
        rest = tail[pos + 7 :].lstrip()
        if rest.startswith(b":"):
            try:
                obj, _ = decoder.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
            except ValueError:
                continue
            found = usage_from_object({"usage": obj})
            if found is not None:
                return found
    return None
