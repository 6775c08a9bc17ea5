"""Frames waiting for the socket, in the order they must leave."""

from __future__ import annotations

from collections import deque
from collections.abc import KeysView

from .frames import Frame, FrameType, encode_frame, encode_window_update


class Outbox:
    """Control frames (FIFO) first, then DATA frames round-robin across streams.

    Control frames are small and unblock the peer (credit, resets, heads), so
    they never wait behind bulk data; round-robin keeps one large body from
    delaying the first bytes of every other stream. Each DATA entry remembers
    its flow-controlled size so a reset can hand the credit back.
    """

    __slots__ = ("_control", "_data")

    def __init__(self) -> None:
        self._control: list[bytes] = []
        self._data: dict[int, deque[tuple[bytes, int]]] = {}

    def control(self, frame: Frame) -> None:
        self._control.append(encode_frame(frame))

    def control_first(self, frames: list[bytes]) -> None:
        self._control[:0] = frames

    def window_update(self, stream_id: int, increment: int) -> None:
        payload = encode_window_update(increment)
        self.control(Frame(FrameType.WINDOW_UPDATE, stream_id, payload))

    def data(self, stream_id: int, frame: bytes, size: int) -> None:
        self._data.setdefault(stream_id, deque()).append((frame, size))

    def drop(self, stream_id: int) -> int:
        """Discard a stream's queued DATA; return its flow-controlled bytes."""
        return sum(size for _, size in self._data.pop(stream_id, ()))

    def data_streams(self) -> KeysView[int]:
        """Streams with DATA (or a bare END) still queued."""
        return self._data.keys()

    def drain(self) -> list[bytes]:
        out, self._control = self._control, []
        while self._data:
            for sid in list(self._data):
                queue = self._data[sid]
                out.append(queue.popleft()[0])
                if not queue:
                    del self._data[sid]
        return out

    def clear_data(self) -> None:
        self._data.clear()

    def clear(self) -> None:
        self._control.clear()
        self._data.clear()
