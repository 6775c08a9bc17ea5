"""The engine's ``text/event-stream`` bytes, cut anywhere, to event payloads. Pure.

Only ``data:`` lines matter (``event:``, ``id:``, ``retry:`` and comments carry
nothing a chat stream needs); an event's data lines are joined, and
``data: [DONE]`` ends the stream: nothing after it counts. :meth:`payloads`
gives each event's data as the engine wrote it (:meth:`cut` then
:meth:`events`: the translator looks at the whole events in between, as it
may read chunks it knows the shape of without decoding them, :mod:`.shape`);
:meth:`feed` decodes them as JSON and keeps the objects. An event that is not
JSON, or one still unended past 16 MiB, is the engine's fault
(:class:`~quorum.errors.UpstreamFailed`).

Lines end in ``\\n`` or ``\\r\\n``. A read is split into events at blank lines
at once (one ``split`` per read, not a step per line); the usual event, one
``data: `` line, is taken as it is, any other is read line by line.
"""

from __future__ import annotations

import json
from typing import Any

from quorum.errors import UpstreamFailed

MAX_EVENT = 16 << 20
_LAST_DONE = b"\n\ndata: [DONE]"
_DECODER = json.JSONDecoder()


def decode(payload: bytes) -> Any:
    """One event's JSON (:class:`UpstreamFailed` when it is not JSON)."""
    try:
        return _DECODER.decode(payload.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise UpstreamFailed("The engine sent a stream event that is not JSON.") from None


class ChatSseDecoder:
    """The engine's SSE bytes, split anywhere, to event payloads or chunk objects. Sans-I/O."""

    def __init__(self) -> None:
        self._buf = b""  # the event not ended yet
        self.done = False  # the engine said data: [DONE]

    def cut(self, data: bytes) -> bytes:
        """The events this read ends, whole, each with its blank line (empty when it ends
        none); the rest is kept for the next read. Lines end in ``\\n``."""
        buf = self._buf
        if not buf and data.endswith(b"\n\n") and b"\r" not in data:
            return data  # the usual read: whole events, and nothing kept
        if buf:
            if b"\n" not in data:  # no line ends here, so no event does
                self._buf = buf = buf + data
                if len(buf) > MAX_EVENT:
                    raise UpstreamFailed("The engine sent a stream event over 16 MiB.")
                return b""
            data = buf + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n") + 2
        self._buf = rest = data[end:] if end > 1 else data
        if len(rest) > MAX_EVENT:
            raise UpstreamFailed("The engine sent a stream event over 16 MiB.")
        return data[:end] if end > 2 else b""

    def events(self, whole: bytes) -> list[bytes]:
        """The data of every event in ``whole`` (from :meth:`cut`), in order, none after
        ``[DONE]``."""
        if not whole or self.done:
            return []
        whole = whole[:-2]  # (the last event's blank line)
        # The usual read: every event one "data: {" line (each line break is in a
        # separator before one), so the payloads are what lies between the separators;
        # the last read of a stream usually ends with [DONE].
        done = whole.endswith(_LAST_DONE)
        if done:
            whole = whole[: -len(_LAST_DONE)]
        if whole.startswith(b"data: {") and whole.count(b"\n") == 2 * whole.count(b"\n\ndata: {"):
            self.done = done
            return whole[6:].split(b"\n\ndata: ")
        if done:
            whole += _LAST_DONE
        out: list[bytes] = []
        for event in whole.split(b"\n\n"):
            if event[:6] == b"data: " and b"\n" not in event:
                payload: bytes | None = event[6:]  # one data line
            else:
                payload = _data_of(event)
            if payload is not None and self._take(payload, out):
                break
        return out

    def payloads(self, data: bytes) -> list[bytes]:
        """The data of every event this read ends, in order (none after ``[DONE]``)."""
        return self.events(self.cut(data))

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The chunk objects of every event this read ends."""
        return _objects(self.payloads(data))

    def end_payloads(self) -> list[bytes]:
        """The stream closed: what its last, unterminated event held."""
        rest, self._buf = self._buf, b""
        out: list[bytes] = []
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        payload = _data_of(rest) if rest else None
        if payload is not None:
            self._take(payload, out)
        return out

    def end(self) -> list[dict[str, Any]]:
        return _objects(self.end_payloads())

    def _take(self, payload: bytes, out: list[bytes]) -> bool:
        """Keep an event's data; True once the stream is done (nothing after counts)."""
        if self.done:
            return True
        if payload[:1] != b"{" and payload.strip() == b"[DONE]":
            self.done = True
            return True
        out.append(payload)
        return False


def _data_of(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one event (None when it has none)."""
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # event:, id:, retry: and comments carry nothing a chat stream needs
    return b"\n".join(data) if data else None


def _objects(payloads: list[bytes]) -> list[dict[str, Any]]:
    objects = (decode(p) for p in payloads)
    return [obj for obj in objects if isinstance(obj, dict)]
