"""What one connection accepts from its peer, and the stream-open rate limiter."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.errors import LocalProtocolError

from .frames import MAX_FRAME_SIZE, MAX_PAYLOAD, MAX_WINDOW

STREAM_WINDOW_BASE = 256 * 1024
"""Credit every new stream starts with in each direction, before any WINDOW_UPDATE.

A protocol constant rather than a setting: the sender must know it without
asking. A receiver that wants a bigger start grants the difference at once.
"""
CONNECTION_WINDOW_BASE = 1024 * 1024
"""Connection-wide credit each side starts with; raised by a WINDOW_UPDATE after HELLO."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Receive-side limits of one connection; every field bounds what the *peer* may do.

    - ``max_streams``: concurrent streams the peer may have open towards us
      (announced in HELLO); one more is refused with RESET REFUSED.
    - ``max_header_block``: largest REQUEST/RESPONSE payload; bigger is reset TOO_LARGE.
    - ``max_opens_per_second``: token bucket (burst of the same size) on the
      peer's new streams; an open over the rate is refused with RESET REFUSED.
    - ``initial_window``: credit each stream starts with (>= 256 KiB, the base).
    - ``max_window``: a stream's window may grow up to this while its reader keeps up.
    - ``connection_window``: cap on bytes received and not yet consumed,
      summed over all streams (>= 1 MiB, the base).
    """

    max_streams: int = 128
    max_header_block: int = 32 * 1024
    max_opens_per_second: float = 100.0
    initial_window: int = STREAM_WINDOW_BASE
    max_window: int = 4 * 1024 * 1024
    connection_window: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise LocalProtocolError("max_streams must be at least 1")
        if not 1024 <= self.max_header_block <= MAX_PAYLOAD:
            raise LocalProtocolError(f"max_header_block must be within 1024..{MAX_PAYLOAD}")
        if not self.max_opens_per_second > 0:
            raise LocalProtocolError("max_opens_per_second must be positive")
        if not STREAM_WINDOW_BASE <= self.initial_window <= self.max_window <= MAX_WINDOW:
            raise LocalProtocolError(
                f"need {STREAM_WINDOW_BASE} <= initial_window <= max_window <= {MAX_WINDOW}"
            )
        if not CONNECTION_WINDOW_BASE <= self.connection_window <= MAX_WINDOW:
            raise LocalProtocolError(
                f"connection_window must be within {CONNECTION_WINDOW_BASE}..{MAX_WINDOW}"
            )

    @property
    def max_frame_size(self) -> int:
        """Largest WebSocket message accepted: 64 KiB payload plus the 7-byte header.

        Fixed, not a setting, because the peer cannot know a smaller one and
        legally sends full 64 KiB DATA frames. Adapters pass it as ``max_size``.
        """
        return MAX_FRAME_SIZE


class OpenRate:
    """Token bucket: ``rate`` stream opens per second, bursting up to ``max(rate, 1)``.

    Time is passed in (any monotonic clock in seconds); a clock that goes
    backwards counts as no time passing.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._tokens = self._burst
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Take one token if there is one; ``False`` means the open is over the rate."""
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
