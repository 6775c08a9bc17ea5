"""Where a connection's byte stream is: in a request head, in a body, or between requests.

The pure part of the connection guard (``quorum.netguard``): bytes in, no I/O, no clock.
``HeadTracker.feed`` says when a head starts (its deadline starts then); ``phase`` says
what the bytes so far are:

- ``HEAD``: a head started and has not ended (``\r\n\r\n``) yet; one longer than
  ``HEAD_LIMIT`` is left to aiohttp, which refuses it.
- ``BODY``: a body with a ``Content-Length`` is arriving.
- ``IDLE``: between requests.
- ``UNTRACKED``: a chunked body, a head that could not be read, or, after a head that
  asks to switch protocols (``Upgrade:``), bytes that cannot start a request line (the
  new protocol's, e.g. WebSocket frames): nothing more is tracked.
"""

from __future__ import annotations

import enum

HEAD_LIMIT = 64 * 1024


class Phase(enum.IntEnum):
    IDLE = 0  # between requests (or no byte of the next head yet)
    HEAD = 1  # a head started and is not complete
    BODY = 2  # a Content-Length body is arriving
    UNTRACKED = 3  # chunked, or a head we could not read: aiohttp decides alone


class HeadTracker:
    """Where a connection's byte stream is: in a head, in a body, or between requests."""

    __slots__ = ("_body_left", "_tail", "_upgrade", "head_bytes", "phase")

    def __init__(self) -> None:
        self.phase = Phase.IDLE
        self._tail = b""  # the last bytes of the head so far (to find its end across reads)
        self._body_left = 0
        self._upgrade = False  # the last head asked to switch protocols (a WebSocket)
        self.head_bytes = bytearray()

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; True when a head started in it (the head deadline starts)."""
        started = False
        view = memoryview(data)
        while view:
            if self.phase is Phase.UNTRACKED:
                return started
            if self.phase is Phase.BODY:
                take = min(self._body_left, len(view))
                self._body_left -= take
                view = view[take:]
                if self._body_left == 0:
                    self.phase = Phase.IDLE
                continue
            if self.phase is Phase.IDLE:
                if self._upgrade and not _starts_a_request(view[0]):
                    # The server switched protocols: what follows is WebSocket frames (their
                    # first byte is a flag and an opcode), never a head. Left to the protocol
                    # (the tunnel has its own liveness).
                    self.phase = Phase.UNTRACKED
                    return started
                self.phase, started = Phase.HEAD, True
                self._upgrade = False
                self.head_bytes.clear()
            chunk = bytes(view)
            end = (self._tail + chunk).find(b"\r\n\r\n")
            if end < 0:
                self.head_bytes += chunk
                self._tail = (self._tail + chunk)[-3:]
                if len(self.head_bytes) > HEAD_LIMIT:
                    self.phase = Phase.UNTRACKED  # aiohttp refuses it with its own 431/400
                return started
            used = end + 4 - len(self._tail)
            self.head_bytes += chunk[:used]
            self._tail = b""
            view = view[used:]
            self._head_done()
        return started

    def _head_done(self) -> None:
        length = None
        for line in bytes(self.head_bytes).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"upgrade":
                self._upgrade = True
            if name == b"transfer-encoding":
                self.phase = Phase.UNTRACKED
                return
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    self.phase = Phase.UNTRACKED
                    return
                length = int(value)
        self.head_bytes.clear()
        if length:
            self.phase, self._body_left = Phase.BODY, length
        else:
            self.phase = Phase.IDLE


def _starts_a_request(byte: int) -> bool:
    """A request line starts with its method, a token of letters (``GET``, ``POST``)."""
    return 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A
