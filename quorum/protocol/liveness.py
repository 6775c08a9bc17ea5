"""When to ping, and when to call a silent peer dead: arithmetic over a clock the caller reads."""

from __future__ import annotations


class Liveness:
    """Ping schedule and death verdict for one tunnel connection.

    The adapter calls ``on_frame_received(now)`` for every frame it receives
    (any frame proves the peer alive, not only PONG) and ``on_ping_sent(now)``
    when it sends a PING. It sleeps until the earlier of ``next_ping_due`` and
    ``dead_at``; once ``is_dead`` it closes the socket and fails every stream.
    Defaults follow DESIGN.md: a ping every ~10 s, dead after ~25 s of silence,
    i.e. after two missed pings with room for jitter.

    ``ValueError`` for arguments that make no sense (a programming error,
    never caused by the peer).
    """

    __slots__ = ("_last_heard", "_last_ping", "dead_after", "interval", "jitter")

    def __init__(
        self, now: float, *, interval: float = 10.0, dead_after: float = 25.0, jitter: float = 0.2
    ) -> None:
        if not 0 < interval < dead_after:
            raise ValueError("need 0 < interval < dead_after")
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction of the interval, within [0, 1)")
        self.interval = interval
        self.dead_after = dead_after
        self.jitter = jitter
        self._last_heard = now
        self._last_ping = now

    def on_frame_received(self, now: float) -> None:
        self._last_heard = max(self._last_heard, now)

    def on_ping_sent(self, now: float) -> None:
        self._last_ping = now

    def next_ping_due(self, now: float, jitter: float) -> float:
        """Absolute time the next PING is due (never before ``now``).

        ``jitter`` in [-1, 1] is drawn by the caller, once per ping (e.g.
        ``rng.uniform(-1, 1)``); it spreads the interval by ``±self.jitter`` so
        a relay's many nodes do not ping in lockstep.
        """
        if not -1 <= jitter <= 1:
            raise ValueError("jitter must be within [-1, 1]")
        return max(now, self._last_ping + self.interval * (1 + self.jitter * jitter))

    def dead_at(self) -> float:
        """Absolute time at which the peer counts as dead unless a frame arrives first."""
        return self._last_heard + self.dead_after

    def is_dead(self, now: float) -> bool:
        return now >= self.dead_at()
