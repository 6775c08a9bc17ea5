"""The engine's ``text/event-stream`` bytes, cut anywhere, to chunk objects. Pure.

Only ``data:`` lines matter (``event:``, ``id:``, ``retry:`` and comments carry
nothing a chat stream needs); an event's data lines are joined, decoded as
JSON, and kept when they hold an object; ``data: [DONE]`` ends the stream and
nothing after it counts. An event that is not JSON, or a line over 16 MiB, is
the engine's fault (:class:`~quorum.errors.UpstreamFailed`).
"""

from __future__ import annotations

import json
from typing import Any

from quorum.errors import UpstreamFailed

MAX_EVENT = 16 << 20
_DECODER = json.JSONDecoder()


class ChatSseDecoder:
    """The engine's SSE bytes, split anywhere, to chunk objects. Sans-I/O."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        self.done = False  # the engine said data: [DONE]

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        chunks: list[dict[str, Any]] = []
        end = buf.rfind(b"\n")
        if end >= 0:
            # Every whole line at once: a read holds many events when the engine is fast.
            lines = bytes(buf[:end]).split(b"\n")
            del buf[: end + 1]
            for line in lines:
                self._line(line[:-1] if line.endswith(b"\r") else line, chunks)
        if len(buf) > MAX_EVENT:
            raise UpstreamFailed("The engine sent a stream line over 16 MiB.")
        return chunks

    def end(self) -> list[dict[str, Any]]:
        """The stream closed: what its last, unterminated event held."""
        chunks: list[dict[str, Any]] = []
        if self._buf:
            self._line(bytes(self._buf).rstrip(b"\r"), chunks)
            self._buf.clear()
        self._line(b"", chunks)
        return chunks

    def _line(self, line: bytes, chunks: list[dict[str, Any]]) -> None:
        if not line:
            if self._data:
                payload, self._data = b"\n".join(self._data), []
                self._event(payload, chunks)
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # event:, id:, retry: and comments carry nothing a chat stream needs

    def _event(self, payload: bytes, chunks: list[dict[str, Any]]) -> None:
        if self.done:
            return
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            obj = _DECODER.decode(payload.decode())
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise UpstreamFailed("The engine sent a stream event that is not JSON.") from None
        if isinstance(obj, dict):
            chunks.append(obj)
