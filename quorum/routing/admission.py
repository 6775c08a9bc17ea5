"""The per-model wait queue's decision: start now, wait, or refuse with ``Retry-After``.

Rules (everything that decides whether a request waits lives here):
- A request starts at once when the first candidate ``choose`` returned has a
  free slot (``health.available``) and no request of the same model waits
  ahead of it: waiting requests are served first come, first served.
- Otherwise it waits in the model's queue, at most ``QueuePolicy.size``
  requests deep, until a slot frees or its deadline (arrival plus
  ``QueuePolicy.timeout_s``) passes. A waiter asks again each time it wakes,
  with ``ahead`` its place in the queue.
- A full queue or a passed deadline is a 503 with ``Retry-After``: a request
  never waits past its deadline and the queue never grows past its size.
  A free slot wins over a passed deadline (the request waits no longer).
- ``Retry-After`` is whole seconds, at least 1: the time the queue ahead needs
  through the holders' slots at their expected run times (``estimated_wait_s``),
  or, when every holder is cooling, until the first cooldown ends.
- The node's scheduler ranks each waiter with the number waiting before it
  (``choose(..., ahead=)``): the first candidate may be a full holder that
  will be free sooner than any other finishes (:mod:`quorum.server.scheduler`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from quorum.fleet import Holder
from quorum.routing.estimate import estimate
from quorum.routing.health import Circuit, Health, circuit, key_of

DEFAULT_SERVICE_TIME_S = 1.0


class Verdict(enum.StrEnum):
    ADMIT = "admit"
    WAIT = "wait"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    size: int = 256  # waiting requests per model
    timeout_s: float = 30.0  # longest wait in the queue

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must not be negative")
        if self.timeout_s < 0:
            raise ValueError("timeout_s must not be negative")


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    retry_after_s: int = 0  # set when rejected
    reason: str = ""


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    if not math.isfinite(seconds):
        return 1
    return max(1, math.ceil(seconds))


def admission(
    *,
    free_slot: bool,
    ahead: int,
    queue_size: int,
    deadline: float,
    now: float,
    wait_hint_s: float = DEFAULT_SERVICE_TIME_S,
) -> Admission:
    """Start, wait or reject a request of a model whose queue has ``ahead`` requests before it.

    ``free_slot``: the first candidate is available now. ``wait_hint_s``:
    the caller's estimate of the wait (``estimated_wait_s``), for ``Retry-After``.
    """
    if free_slot and ahead == 0:
        return Admission(Verdict.ADMIT)
    if now >= deadline:
        return Admission(
            Verdict.REJECT, retry_after(wait_hint_s), "waited until its deadline for a free slot"
        )
    if ahead >= queue_size:
        return Admission(
            Verdict.REJECT,
            retry_after(wait_hint_s),
            f"{ahead} requests already wait for this model (the queue holds {queue_size})",
        )
    return Admission(Verdict.WAIT)


def estimated_wait_s(health: Health, holders: Sequence[Holder], ahead: int, now: float) -> float:
    """Roughly how long ``ahead`` queued requests plus this one take on ``holders``.

    The queue drains through every holder's slots at its expected run time
    (:func:`quorum.routing.estimate.estimate`; ``DEFAULT_SERVICE_TIME_S`` where
    unknown), after the requests already running or queued there. When every
    holder is cooling, the time until the first cooldown ends.
    """
    rate = 0.0
    backlog = float(ahead + 1)
    reopen: list[float] = []
    for holder in holders:
        entry = health.get(key_of(holder))
        state = circuit(entry, now)
        if state is Circuit.OPEN and entry.cooldown_until is not None:
            reopen.append(entry.cooldown_until - now)
            continue
        if state is Circuit.PROBING:
            continue
        e = estimate(health, holder, now, DEFAULT_SERVICE_TIME_S)
        run = max(e.run_s + e.route_s + e.load_s, 0.001)
        rate += e.slots / run
        backlog += max(0.0, e.busy - e.slots)
    if rate == 0.0:
        return min(reopen, default=DEFAULT_SERVICE_TIME_S)
    return backlog / rate
