"""A holder's speed and slots, learned from its own traffic (pure; time comes in as ``now``).

Rules (everything this node learns of a holder's capacity lives here):
- Each successful answer is one sample: how long it took (``latency_s``) and
  the holder's concurrency when it started (``level``: the requests this node
  had running there, this one included). Samples feed an EWMA per level
  (levels above ``MAX_LEVEL`` count as ``MAX_LEVEL``).
- A level not fed for ``LEVEL_TTL_S`` is forgotten (the engine may have
  changed: another model, other clients). The saturated level that caps the
  slots (below) is kept for ``BASE_TTL_S`` while the holder is used, since
  the cap keeps requests from ever reaching it; then it is tried again
  instead of capping the holder for good.
- The base run time (``Speed.base_s``) is one request's time when it does
  not wait: level 1's EWMA while known, else the fastest level known. It is
  kept for ``BASE_TTL_S`` after the last sample, longer than the levels, so a
  slow holder left idle is not tried afresh every half minute.
- Learned slots (``Speed.slots``): the first level whose EWMA is over
  ``SATURATED`` times the base means the engine queued the request behind
  others, so it runs one fewer at once. None while no level is saturated
  (the configured, published or default limit applies).
- Tokens per second of streams (``Speed.tokens_per_s``): an EWMA over the
  answers that reported their completion tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_LEVEL = 64
LEVEL_TTL_S = 30.0
BASE_TTL_S = 120.0
SATURATED = 1.3

_NO_LEVELS: Mapping[int, tuple[float, float]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Speed:
    """What this node learned of one holder's speed; derived values are kept ready."""

    levels: Mapping[int, tuple[float, float]] = field(default_factory=lambda: _NO_LEVELS)
    """level -> (latency EWMA in seconds, when it was last fed)."""
    base_s: float | None = None
    base_at: float = 0.0  # when the base was last fed
    slots: int | None = None
    tokens_per_s: float | None = None


NO_SPEED = Speed()


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else alpha * sample + (1 - alpha) * old


def learn(
    speed: Speed,
    level: int,
    latency_s: float,
    now: float,
    alpha: float,
    tokens: int | None = None,
) -> Speed:
    """``speed`` after one successful answer that started at ``level`` and took ``latency_s``."""
    level = min(max(level, 1), MAX_LEVEL)
    cutoff, cap_cutoff = now - LEVEL_TTL_S, now - BASE_TTL_S
    cap = None if speed.slots is None else speed.slots + 1
    levels = {
        n: v for n, v in speed.levels.items() if v[1] >= cutoff or (n == cap and v[1] >= cap_cutoff)
    }
    old = levels.get(level)
    levels[level] = (_ewma(None if old is None else old[0], latency_s, alpha), now)
    base = levels[1][0] if 1 in levels else min(v[0] for v in levels.values())
    slots = None
    for n in sorted(levels):
        if n > 1 and levels[n][0] > SATURATED * base:
            slots = n - 1
            break
    rate = speed.tokens_per_s
    if tokens and latency_s > 0:
        rate = _ewma(rate, tokens / latency_s, alpha)
    return Speed(MappingProxyType(levels), base, now, slots, rate)


def base_s(speed: Speed, now: float) -> float | None:
    """One request's run time, if learned recently enough."""
    if speed.base_s is None or now - speed.base_at > BASE_TTL_S:
        return None
    return speed.base_s


def at_level(speed: Speed, level: int, now: float) -> float | None:
    """The latency learned at ``level`` if fresh, else None."""
    entry = speed.levels.get(min(level, MAX_LEVEL))
    if entry is None or now - entry[1] > LEVEL_TTL_S:
        return None
    return entry[0]


def learned_slots(speed: Speed, now: float) -> int | None:
    """Requests the holder runs at once, as its traffic shows; None: not seen saturated."""
    if speed.slots is None or now - speed.base_at > BASE_TTL_S:
        return None
    return speed.slots
