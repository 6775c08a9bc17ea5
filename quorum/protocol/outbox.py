"""Frames waiting for the socket, in the order they must leave."""

from __future__ import annotations

from collections import deque
from collections.abc import KeysView

from .frames import MAX_DATA, Flag, Frame, FrameType, encode_frame, encode_window_update


class _Data:
    """One DATA frame to be: its payload in pieces, their size, its flags."""

    __slots__ = ("flags", "parts", "size", "stream_id")

    def __init__(self, stream_id: int, parts: list[bytes], size: int, flags: Flag) -> None:
        self.stream_id = stream_id
        self.parts = parts
        self.size = size
        self.flags = flags

    def encode(self) -> bytes:
        payload = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        return encode_frame(Frame(FrameType.DATA, self.stream_id, payload, self.flags))


class Outbox:
    """Control frames (FIFO) first, then DATA frames round-robin across streams.

    Control frames are small and unblock the peer (credit, resets, heads), so
    they never wait behind bulk data; round-robin keeps one large body from
    delaying the first bytes of every other stream. Each DATA entry remembers
    its flow-controlled size so a reset can hand the credit back.

    DATA of one stream queued back to back, before the socket took the first,
    leaves as one frame (up to ``MAX_DATA``): a stream of small pieces costs
    the peer and the relay one frame per write the socket could take, not one
    per piece. DATA frames are encoded when they leave.
    """

    __slots__ = ("_control", "_data")

    def __init__(self) -> None:
        self._control: list[bytes] = []
        self._data: dict[int, deque[_Data]] = {}

    def control(self, frame: Frame) -> None:
        self._control.append(encode_frame(frame))

    def control_first(self, frames: list[bytes]) -> None:
        self._control[:0] = frames

    def window_update(self, stream_id: int, increment: int) -> None:
        payload = encode_window_update(increment)
        self.control(Frame(FrameType.WINDOW_UPDATE, stream_id, payload))

    def data(self, stream_id: int, payload: bytes, flags: Flag = Flag.NONE) -> None:
        queue = self._data.setdefault(stream_id, deque())
        if queue and flags is not Flag.END_STREAM:
            last = queue[-1]
            if last.flags is Flag.NONE and last.size + len(payload) <= MAX_DATA:
                last.parts.append(payload)
                last.size += len(payload)
                last.flags = flags
                return
        queue.append(_Data(stream_id, [payload], len(payload), flags))

    def drop(self, stream_id: int) -> int:
        """Discard a stream's queued DATA; return its flow-controlled bytes."""
        return sum(entry.size for entry in self._data.pop(stream_id, ()))

    @property
    def control_queued(self) -> bool:
        """Whether control frames wait to be drained."""
        return bool(self._control)

    def data_streams(self) -> KeysView[int]:
        """Streams with DATA (or a bare END) still queued."""
        return self._data.keys()

    def drain(self) -> list[bytes]:
        out, self._control = self._control, []
        while self._data:
            for sid in list(self._data):
                queue = self._data[sid]
                out.append(queue.popleft().encode())
                if not queue:
                    del self._data[sid]
        return out

    def clear_data(self) -> None:
        self._data.clear()

    def clear(self) -> None:
        self._control.clear()
        self._data.clear()
