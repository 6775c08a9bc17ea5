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
_DONE_LINE = re.compile(rb"(?m)^data:[ \t]*\[DONE\][ \t]*\r?$")
_HINTS = (b'"usage"', b'"timings"', b'"eval_count"', b'"prompt_eval_count"')


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


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
        if not self._buf and chunk.endswith(b"\n") and not any(h in chunk for h in _HINTS):
            # Whole lines, none of them with counts (most of a stream): nothing to decode.
            if b"[DONE]" in chunk and _DONE_LINE.search(chunk):
                self.done = True
            return
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if self._buf:
                self._buf += chunk[start:end]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = chunk[start:end]
            if self._skipping:
                self._skipping = False
            else:
                self._line(line)
            start = end + 1
        if start < len(chunk) and not self._skipping:
            self._buf += chunk[start:]
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
