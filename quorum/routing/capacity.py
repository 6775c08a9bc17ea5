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
  instead of capping the holder for good, one request more at a time (below).
- The base run time (``Speed.base_s``) is one request's time when it does
  not wait: level 1's EWMA while known, else the fastest level known. It is
  kept for ``BASE_TTL_S`` after the last sample, longer than the levels, so a
  slow holder left idle is not tried afresh every half minute.
- Streams (an answer whose first byte came before ``STREAMED`` of its time)
  also feed an EWMA of their time to the first byte per level
  (``Speed.firsts``, same forgetting). A request that waited inside the
  engine for a slot shows it there first: its whole time grows by the wait,
  a share of the run that shrinks as slots grow (a fifth request on four
  slots waits about a fifth of a run), while its first byte comes later by
  all of it.
- Learned slots (``Speed.slots``): the first level where the engine queued
  the request behind others, so it runs one fewer at once: its whole-time
  EWMA is over ``SATURATED`` times the base, or its first-byte EWMA is later
  than the level below's by over ``QUEUED`` of the base run time (the level
  below, not the first: a node short of CPU answers later the more it runs,
  a little at each level, while a wait for a slot comes at once). Only a
  level fed ``MIN_SAMPLES`` times counts, so one answer slowed by something
  else never caps a holder. None while no level was ever saturated (the
  configured, published or default limit applies). Once capped, while no
  level is saturated (the capping one expired, or runs as fast as the rest
  now), the cap rises by one each time the level at the cap was seen
  ``MIN_SAMPLES`` times, never straight back to the default (a jump from
  four to eight at once queues four requests inside the engine).
- Tokens per second (``Speed.tokens_per_s``): an EWMA over the answers that
  came with a count of their tokens, over the time after their first byte
  for a stream (its generation), else over the whole time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_LEVEL = 64
LEVEL_TTL_S = 30.0
BASE_TTL_S = 120.0
SATURATED = 1.3
QUEUED = 0.15
MIN_SAMPLES = 2
STREAMED = 0.5

Levels = Mapping[int, tuple[float, float, int]]
"""level -> (EWMA in seconds, when it was last fed, samples fed)."""
_NO_LEVELS: Levels = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Speed:
    """What this node learned of one holder's speed; derived values are kept ready."""

    levels: Levels = field(default_factory=lambda: _NO_LEVELS)
    """level -> (latency EWMA in seconds, when it was last fed, samples)."""
    base_s: float | None = None
    base_at: float = 0.0  # when the base was last fed
    slots: int | None = None
    tokens_per_s: float | None = None
    firsts: Levels = field(default_factory=lambda: _NO_LEVELS)
    """level -> (a stream's time to first byte, EWMA in seconds; when; samples)."""


NO_SPEED = Speed()


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else alpha * sample + (1 - alpha) * old


def _fed(
    entries: Levels,
    level: int,
    sample: float | None,
    now: float,
    alpha: float,
    cap: int | None,
) -> dict[int, tuple[float, float, int]]:
    """``entries`` without the forgotten levels, and with ``sample`` fed at ``level``."""
    cutoff, cap_cutoff = now - LEVEL_TTL_S, now - BASE_TTL_S
    kept = {n: v for n, v in entries.items() if v[1] >= cutoff or (n == cap and v[1] >= cap_cutoff)}
    if sample is not None:
        old = kept.get(level)
        if old is None:
            kept[level] = (sample, now, 1)
        else:
            kept[level] = (_ewma(old[0], sample, alpha), now, old[2] + 1)
    return kept


def learn(
    speed: Speed,
    level: int,
    latency_s: float,
    now: float,
    alpha: float,
    tokens: int | None = None,
    ttfb_s: float | None = None,
) -> Speed:
    """``speed`` after one successful answer that started at ``level`` and took ``latency_s``
    (its first byte after ``ttfb_s``; ``tokens`` generated)."""
    level = min(max(level, 1), MAX_LEVEL)
    cap = None if speed.slots is None else speed.slots + 1
    streamed = ttfb_s is not None and 0 <= ttfb_s < STREAMED * latency_s
    levels = _fed(speed.levels, level, latency_s, now, alpha, cap)
    firsts = _fed(speed.firsts, level, ttfb_s if streamed else None, now, alpha, cap)
    base = levels[1][0] if 1 in levels else min(v[0] for v in levels.values())
    slots = None
    below = None  # the first byte's EWMA at the level below
    for n in sorted(levels.keys() | firsts.keys()):
        whole, head = levels.get(n), firsts.get(n)
        if n > 1:
            slow = whole is not None and whole[2] >= MIN_SAMPLES and whole[0] > SATURATED * base
            late = (
                head is not None
                and below is not None
                and head[2] >= MIN_SAMPLES
                and head[0] - below > QUEUED * base
            )
            if slow or late:
                slots = n - 1
                break
        if head is not None:
            below = head[0]
    if slots is None and speed.slots is not None:
        # No level saturated now (the capping one expired, or runs as fast as the rest):
        # one more at once, once the top level under the cap was seen enough.
        top = levels.get(speed.slots)
        enough = top is not None and top[2] >= MIN_SAMPLES
        slots = speed.slots + 1 if enough else speed.slots
    rate = speed.tokens_per_s
    took = latency_s - ttfb_s if streamed and ttfb_s is not None else latency_s
    if tokens and took > 0:
        rate = _ewma(rate, tokens / took, alpha)
    return Speed(
        MappingProxyType(levels), base, now, slots, rate, MappingProxyType(firsts) or _NO_LEVELS
    )


def base_s(speed: Speed, now: float) -> float | None:
    """One request's run time, if learned recently enough."""
    if speed.base_s is None or now - speed.base_at > BASE_TTL_S:
        return None
    return speed.base_s


def at_level(speed: Speed, level: int, now: float) -> float | None:
    """The latency learned at ``level``; for a level not seen yet, the highest fresh level
    seen below it (``seen``) as if the holder ran only that many at once: its latency
    times ``level / seen``. More at once never runs faster, and until a level was seen
    the holder may well queue it. None when no level up to ``level`` is fresh."""
    level = min(level, MAX_LEVEL)
    best, latency = 0, None
    for n, entry in speed.levels.items():
        if best < n <= level and now - entry[1] <= LEVEL_TTL_S:
            best, latency = n, entry[0]
    if latency is None or best == level:
        return latency
    return latency * level / best


def learned_slots(speed: Speed, now: float) -> int | None:
    """Requests the holder runs at once, as its traffic shows; None: not seen saturated."""
    if speed.slots is None or now - speed.base_at > BASE_TTL_S:
        return None
    return speed.slots
