"""Reconnect delays (DESIGN.md "Reconnect"): pure functions of the attempt number and an rng.

The first try after a loss waits a random 0-1 s (so a relay restart is not
met by every node at once), later ones use full-jitter exponential backoff
capped at 30 s, and the attempt counter resets only after a connection stayed
up for a minute, so a connection that flaps right after the handshake keeps
backing off. Stopping on 401/403 is the adapter's decision, not a delay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

FIRST_DELAY = 1.0
BASE_DELAY = 1.0
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0


class Rng(Protocol):
    """What we need of ``random.Random``: a uniform float in [0, 1)."""

    def random(self) -> float: ...


def backoff(
    attempt: int,
    rng: Rng,
    *,
    first: float = FIRST_DELAY,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first try after a loss).

    Attempt 0 waits uniformly in [0, ``first``); attempt n >= 1 uniformly in
    [0, min(``cap``, ``base`` * 2**n)). ``ValueError`` for a negative attempt.
    """
    if attempt < 0:
        raise ValueError("attempt must not be negative")
    # Clamp the exponent: past the cap it no longer matters, and 2.0**1100 overflows.
    ceiling = first if attempt == 0 else min(cap, base * 2.0 ** min(attempt, 64))
    return rng.random() * ceiling


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Reconnect bookkeeping as an immutable value; each method returns the next one.

    ::

        state = Reconnect()
        delay, state = state.next_delay(rng)   # sleep(delay), then try
        state = state.connected(now)           # handshake done
        state = state.disconnected(now)        # lost: resets if it lasted a minute
    """

    attempt: int = 0
    connected_at: float | None = None

    def next_delay(self, rng: Rng) -> tuple[float, Reconnect]:
        return backoff(self.attempt, rng), replace(self, attempt=self.attempt + 1)

    def connected(self, now: float) -> Reconnect:
        return replace(self, connected_at=now)

    def disconnected(self, now: float, *, healthy_after: float = HEALTHY_AFTER) -> Reconnect:
        healthy = self.connected_at is not None and now - self.connected_at >= healthy_after
        return Reconnect(attempt=0 if healthy else self.attempt, connected_at=None)
