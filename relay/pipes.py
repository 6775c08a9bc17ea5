"""A stream one node opened, joined to the stream the relay opened on the target node.

No task runs per pipe: each side's ``listener`` moves what can move the
moment the pump delivers something (data, end, credit, the response head,
a reset), with the streams' non-waiting methods.

Credit: a chunk read from one side is granted back to its sender only once
the other side's connection accepted all of it (``TunnelStream`` grants a
chunk back when the next one is read), so the relay holds at most one
window per stream direction, and a frozen reader stops its writer without
slowing any other stream. A reset on either side is passed to the other
with its code and message; the pipe is over once both streams are.
"""

from __future__ import annotations

from collections.abc import Callable

from quorum.errors import ApiError
from quorum.link import TunnelStream


class Pipe:
    """``opener``: the stream a node opened to the relay (we answer it);
    ``target``: the one the relay opened on the node it was addressed to."""

    __slots__ = ("_answered", "_done", "_on_done", "_rest_down", "_rest_up", "opener", "target")

    def __init__(
        self, opener: TunnelStream, target: TunnelStream, on_done: Callable[[Pipe], None]
    ) -> None:
        self.opener = opener
        self.target = target
        self._on_done = on_done
        self._answered = False
        self._rest_up = b""  # read from the opener, not yet accepted by the target
        self._rest_down = b""
        self._done = False
        opener.listener = target.listener = self._changed
        opener.on_close = target.on_close = self._closed
        self._changed(opener)  # the request may already be complete (or have a body)

    @property
    def buffered(self) -> int:
        """Bytes read from either side and not yet granted back (at most a window each)."""
        return self.opener.unconsumed + self.target.unconsumed

    def _changed(self, _: TunnelStream) -> None:
        opener, target = self.opener, self.target
        for src, dst in ((opener, target), (target, opener)):
            if src.reset_info is not None:
                info = src.reset_info
                dst.reset(info.code, info.message)
                return
        try:
            self._rest_up = _move(opener, target, self._rest_up)
            if not self._answered and (head := target.response_head) is not None:
                opener.send_response(head)
                self._answered = True
            if self._answered:
                self._rest_down = _move(target, opener, self._rest_down)
        except ApiError:
            pass  # a side is reset: its listener call passes the reset on

    def _closed(self, _: TunnelStream) -> None:
        if not self._done and self.opener.closed and self.target.closed:
            self._done = True
            self.opener.listener = self.target.listener = None
            self._on_done(self)


def _move(src: TunnelStream, dst: TunnelStream, rest: bytes) -> bytes:
    """Copy what ``dst``'s credit takes; return what it did not take yet."""
    while True:
        if rest:
            n = dst.send_nowait(rest)
            rest = rest[n:]
            if rest:
                return rest
        chunk = src.receive_nowait()
        if chunk is None:
            return b""
        if not chunk:
            dst.send_eof_nowait()
            return b""
        rest = chunk
