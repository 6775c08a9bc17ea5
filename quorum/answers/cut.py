"""Cut answers: a chat or completion that ends without a ``finish_reason`` is incomplete.

Every OpenAI-compatible engine ends each choice of a finished answer with a
``finish_reason`` (``stop``, ``length``, ``tool_calls``, ...). An answer
without one was cut: llama-cpp-python, for one, ends a running stream with
``data: [DONE]`` and nothing else when another request arrives. Passing that
``[DONE]`` on would tell the client its answer is complete.

``StreamCheck`` sits on an SSE stream: it passes whole events through, byte
for byte, and withholds a ``[DONE]`` that no finished choice came before. At
the end of the stream, ``cut`` says whether the answer was complete; the
proxy then ends a cut stream as it ends any broken one (an error event, no
``[DONE]``, no clean end). ``finished(obj)`` is the same check for a whole
(non-streamed) answer.

Only events that mention ``finish_reason`` are decoded, so the cost per
chunk is a few ``bytes.find`` calls.
"""

from __future__ import annotations

import re
from typing import Any

from quorum.api.usage import done_line

_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_EVENT_END = (b"\n\n", b"\r\n\r\n")


def finished(answer: Any) -> bool:
    """Whether a whole chat or completion answer ended every choice with a finish_reason."""
    if not isinstance(answer, dict):
        return False
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") for c in choices)


def _any_finished(events: bytes) -> bool:
    """Whether any choice in ``events`` ended with a finish_reason (a string, not null).

    C-speed substring counts first: a batch of a thousand ``"finish_reason":null``
    events would cost the regular expression a failed attempt each. The expression
    runs only when some key is spelled with other spacing."""
    keys = events.count(b'"finish_reason"')
    if not keys:
        return False
    nulls = events.count(b'"finish_reason":null')
    if keys == nulls:
        return False  # the usual chunk: every choice still running
    if b'"finish_reason":"' in events or b'"finish_reason": "' in events:
        return True
    nulls += events.count(b'"finish_reason": null')
    return keys != nulls and _FINISHED.search(events) is not None


def _event_boundary(buf: bytes | bytearray) -> int:
    """The end of the last whole event in ``buf`` (0 when there is none yet)."""
    best = 0
    for sep in _EVENT_END:
        at = buf.rfind(sep)
        if at >= 0:
            best = max(best, at + len(sep))
    return best


class StreamCheck:
    """Watches a chat or completion SSE stream for the end of its answer.

    ``feed(chunk)`` returns the bytes that may go to the client now: whole
    events, in order, unchanged; a partial event waits for its end, and a
    ``[DONE]`` before any finished choice is held back for good. ``end()``
    returns what is left once the engine closed the stream.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.finished = False  # a choice ended with a finish_reason
        self.done = False  # the engine said [DONE]
        self.withheld = False  # that [DONE] was held back: the answer was cut
        self.events = 0  # data events passed, [DONE] included (about one a token)

    @property
    def cut(self) -> bool:
        """True once the stream is over without a finished choice."""
        return not self.finished

    def feed(self, chunk: bytes) -> bytes:
        if self.withheld:
            return b""  # nothing after a withheld [DONE] goes out
        if not self._buf and chunk.endswith(b"\n\n"):
            return self._whole(chunk)  # the usual case: chunks are whole events
        self._buf += chunk
        end = _event_boundary(self._buf)
        if end == 0:
            return b""
        whole = bytes(self._buf[:end])
        del self._buf[:end]
        return self._whole(whole)

    def end(self) -> bytes:
        """The engine closed the stream: the last, unterminated event (if any)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return self._whole(rest) if rest else b""

    def _whole(self, events: bytes) -> bytes:
        # Plain substring tests first: most chunks hold neither (a few C-speed scans).
        self.events += events.count(b"data:")
        done = done_line(events)
        before = events if done < 0 else events[:done]
        if not self.finished and _any_finished(before):
            self.finished = True
        if done < 0:
            return events
        self.done = True
        if self.finished:
            return events
        self.withheld = True
        return before
