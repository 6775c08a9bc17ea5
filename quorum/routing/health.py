"""Per-holder health as one frozen value, and the pure transitions that update it.

Rules (everything that changes a holder's health lives here):
- A holder is keyed by ``(node_id, service, route)`` (``key_of``): one service
  of a peer reached over the LAN and through the relay is two holders, because
  each path fails on its own.
- ``Health`` is never mutated: ``started``, ``finished``, ``abandoned``,
  ``set_limits`` and ``retain`` return a new value. Time comes in as ``now``
  (seconds on one monotonic clock); nothing here reads a clock.
- In flight: ``started`` adds one; ``finished`` and ``abandoned`` take one
  away, never below zero. A health probe of an idle engine holds a slot the
  same way (``reserved``, ``released``) and changes nothing else.
- Concurrency limit (``limit_of``): what ``set_limits`` set for the key (from
  config), else what a local engine publishes (``Holder.limit``), else, given
  ``now``, the slots its traffic showed (:mod:`.capacity`), never above what
  the peer announced (``Holder.limit``: its presence comes every 30 s, its
  answers show sooner that it runs fewer) or the engine's default
  (``DEFAULT_LIMITS``; a peer's holder: ``REMOTE_LIMIT``). A holder at its
  limit takes no request until one ends: the request waits at this node.
- Speed: each success also feeds the holder's ``Speed`` with its latency,
  time to first byte and tokens at the concurrency it started at
  (``level``), by :mod:`.capacity`'s rules.
- Reports: ``reported`` keeps the last load a peer or an engine reported for
  a holder, with when it was received and how many of this node's own
  requests ran there then (the report counts them as well);
  :mod:`.estimate` weighs the others' load by age.
- Latency: EWMAs (``policy.ewma_alpha``) of the time to first byte and of the
  whole answer, fed by successful answers only. An EWMA that no success
  refreshed for ``policy.stale_s`` is stale: routing treats it as unknown and
  the next sample starts it afresh, so a holder that once looked slow is
  measured again instead of being starved for good.
- Circuit, per holder (``circuit``)::

      closed --policy.failures consecutive failures--> open (cooling until T)
      open --now >= T--> half-open --the next request started--> probing
      probing --success--> closed (cooldown reset)
      probing --failure--> open for twice the last cooldown (<= policy.max_cooldown_s)
      probing --probe abandoned--> half-open (another request may probe)
      half-open --failure of a request started before--> open, doubled as above

  Open and probing holders are "cooling": routing skips them, so exactly one
  request probes a holder whose cooldown ran out. Any success closes the
  circuit (the holder just served an answer); a failure that finishes while
  the circuit is already open only counts.
- Rotation: each ``started`` takes the next sequence number (``Health.seq``);
  among otherwise equal holders routing prefers the one that started least
  recently, so equal holders take turns.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from quorum.config.models import EngineKind
from quorum.fleet import Holder, Load, Route
from quorum.routing import capacity
from quorum.routing.capacity import NO_SPEED, Speed

_V = TypeVar("_V")
HolderKey = tuple[str, str, Route]
"""``(node_id, service, route)``: one holder's identity for health and load."""

DEFAULT_LIMITS: Mapping[EngineKind, int] = MappingProxyType(
    {
        # Ollama's OLLAMA_NUM_PARALLEL defaults to 4 (1 on small memory); its own queue is next.
        EngineKind.OLLAMA: 4,
        # LM Studio and mlx_lm.server answer one request at a time.
        EngineKind.LMSTUDIO: 1,
        EngineKind.MLX: 1,
        # llama-server's default slot count is 4 (``--parallel``).
        EngineKind.LLAMACPP: 4,
        # vLLM batches continuously, up to max_num_seqs (256 by default).
        EngineKind.VLLM: 256,
        EngineKind.OPENAI: 8,
        # llama-cpp-python's server runs one completion at a time, and (unless started
        # with --interrupt_requests False) ends a running stream when another request
        # arrives: never more than one at once. The embedded engine is that server.
        EngineKind.LLAMACPP_PYTHON: 1,
        EngineKind.EMBEDDED: 1,
    }
)


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"  # cooling: skipped until the cooldown ends
    HALF_OPEN = "half_open"  # cooldown over: the next request probes it
    PROBING = "probing"  # one probe runs: skipped until it ends


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How failures cool a holder and how latency is smoothed."""

    failures: int = 3
    base_cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    ewma_alpha: float = 0.3
    stale_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("failures must be at least 1")
        if not 0 < self.base_cooldown_s <= self.max_cooldown_s:
            raise ValueError("need 0 < base_cooldown_s <= max_cooldown_s")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("ewma_alpha must be in (0, 1]")
        if self.stale_s <= 0:
            raise ValueError("stale_s must be positive")


@dataclass(frozen=True, slots=True)
class HolderHealth:
    """What this node has seen of one holder. The defaults are a holder never used."""

    in_flight: int = 0
    consecutive_failures: int = 0
    cooldown_until: float | None = None  # None: circuit closed
    cooldown_s: float = 0.0  # length of the current (or last) cooldown, doubled on reopen
    probing: bool = False
    probe_seq: int | None = None  # the sequence number of the running probe
    ttfb_ewma_s: float | None = None
    latency_ewma_s: float | None = None
    last_ok: float | None = None  # when the last success finished
    last_seq: int = -1  # sequence number of the last start; -1: never started
    requests: int = 0  # started, in total
    failed: int = 0  # finished with a failure, in total
    speed: Speed = NO_SPEED  # learned from its answers (:mod:`.capacity`)


@dataclass(frozen=True, slots=True)
class Report:
    """The load last reported for a holder, when (this node's clock) it arrived, and how
    many of this node's own requests ran there then (the report counts them too)."""

    load: Load
    at: float
    own: int = 0


NEVER_USED = HolderHealth()
_NO_ENTRIES: Mapping[HolderKey, HolderHealth] = MappingProxyType({})
_NO_LIMITS: Mapping[HolderKey, int] = MappingProxyType({})
_NO_REPORTS: Mapping[HolderKey, Report] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Health:
    """Every holder's health, the configured limits and the rotation counter."""

    holders: Mapping[HolderKey, HolderHealth] = field(default_factory=lambda: _NO_ENTRIES)
    limits: Mapping[HolderKey, int] = field(default_factory=lambda: _NO_LIMITS)
    seq: int = 0
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    reports: Mapping[HolderKey, Report] = field(default_factory=lambda: _NO_REPORTS)

    def get(self, key: HolderKey) -> HolderHealth:
        return self.holders.get(key, NEVER_USED)


def key_of(holder: Holder) -> HolderKey:
    return (holder.node_id, holder.service, holder.route)


def circuit(entry: HolderHealth, now: float) -> Circuit:
    if entry.cooldown_until is None:
        return Circuit.CLOSED
    if entry.probing:
        return Circuit.PROBING
    if now < entry.cooldown_until:
        return Circuit.OPEN
    return Circuit.HALF_OPEN


REMOTE_LIMIT = 256
"""A peer's holder as seen from here: the peer queues and limits its own engines,
so this node only bounds how many requests it sends there at once."""


def limit_of(health: Health, holder: Holder, now: float | None = None) -> int:
    """The holder's concurrency limit (the rules above); the learned one only given ``now``."""
    key = key_of(holder)
    configured = health.limits.get(key)
    if configured:
        return configured
    local = holder.route is Route.LOCAL
    if holder.limit and (local or now is None):
        return holder.limit  # what a local engine publishes is what it runs at once
    default = holder.limit or (DEFAULT_LIMITS[holder.engine] if local else REMOTE_LIMIT)
    if now is None:
        return default
    learned = capacity.learned_slots(health.get(key).speed, now)
    return min(learned, default) if learned else default


def available(health: Health, holder: Holder, now: float) -> bool:
    """Whether a request may start on ``holder`` now: not cooling and below its limit.

    Check it before each attempt (a failover candidate may have filled up or
    started its probe since ``choose`` ordered the list).
    """
    entry = health.get(key_of(holder))
    if circuit(entry, now) in (Circuit.OPEN, Circuit.PROBING):
        return False
    return entry.in_flight < limit_of(health, holder, now)


def _copy(entries: Mapping[HolderKey, _V]) -> dict[HolderKey, _V]:
    # A dict's (or its proxy's) own copy is ten times faster than dict(mapping).
    if isinstance(entries, dict | MappingProxyType):
        return entries.copy()
    return dict(entries)


def _put(health: Health, key: HolderKey, entry: HolderHealth, seq: int | None = None) -> Health:
    holders = _copy(health.holders)
    holders[key] = entry
    return Health(
        MappingProxyType(holders),
        health.limits,
        health.seq if seq is None else seq,
        health.policy,
        health.reports,
    )


def started(health: Health, key: HolderKey, now: float) -> Health:
    """A request started on ``key``; on a half-open holder it becomes the one probe.

    The request's sequence number is the returned ``Health.seq``; keep it for
    ``abandoned``.
    """
    entry = health.get(key)
    seq = health.seq + 1
    probe = circuit(entry, now) is Circuit.HALF_OPEN
    return _put(
        health,
        key,
        replace(
            entry,
            in_flight=entry.in_flight + 1,
            last_seq=seq,
            requests=entry.requests + 1,
            probing=entry.probing or probe,
            probe_seq=seq if probe else entry.probe_seq,
        ),
        seq,
    )


def _ewma(old: float | None, sample: float | None, alpha: float, fresh: bool) -> float | None:
    if sample is None:
        return old
    if old is None or not fresh:
        return sample
    return alpha * sample + (1 - alpha) * old


def finished(
    health: Health,
    key: HolderKey,
    now: float,
    ok: bool,
    latency_s: float | None = None,
    ttfb_s: float | None = None,
    *,
    level: int | None = None,
    tokens: int | None = None,
) -> Health:
    """A request on ``key`` ended: ``ok`` when the holder answered usably.

    ``ok`` is what ``failover.is_failure`` says of the outcome: a 4xx other
    than 429 is the request's fault, not the holder's, and counts as ok.
    ``latency_s`` and ``ttfb_s`` feed the EWMAs (only when ``ok``); with no
    ``ttfb_s`` the whole latency stands for it. With ``level`` (the requests
    running there when it started, itself included) the latency also feeds
    the holder's ``Speed``; ``tokens`` (completion tokens) its tokens/s.
    """
    entry = health.get(key)
    policy = health.policy
    in_flight = max(0, entry.in_flight - 1)
    if ok:
        fresh = entry.last_ok is not None and now - entry.last_ok <= policy.stale_s
        ttfb = ttfb_s if ttfb_s is not None else latency_s
        updated = replace(
            entry,
            in_flight=in_flight,
            consecutive_failures=0,
            cooldown_until=None,
            cooldown_s=0.0,
            probing=False,
            probe_seq=None,
            ttfb_ewma_s=_ewma(entry.ttfb_ewma_s, ttfb, policy.ewma_alpha, fresh),
            latency_ewma_s=_ewma(entry.latency_ewma_s, latency_s, policy.ewma_alpha, fresh),
            last_ok=now,
            speed=entry.speed
            if level is None or latency_s is None
            else capacity.learn(
                entry.speed, level, latency_s, now, policy.ewma_alpha, tokens, ttfb_s
            ),
        )
        return _put(health, key, updated)
    failures = entry.consecutive_failures + 1
    state = circuit(entry, now)
    cooldown_until, cooldown_s = entry.cooldown_until, entry.cooldown_s
    if state in (Circuit.PROBING, Circuit.HALF_OPEN):
        cooldown_s = min(max(2 * entry.cooldown_s, policy.base_cooldown_s), policy.max_cooldown_s)
        cooldown_until = now + cooldown_s
    elif state is Circuit.CLOSED and failures >= policy.failures:
        cooldown_s = policy.base_cooldown_s
        cooldown_until = now + cooldown_s
    reopened = cooldown_until != entry.cooldown_until
    updated = replace(
        entry,
        in_flight=in_flight,
        consecutive_failures=failures,
        cooldown_until=cooldown_until,
        cooldown_s=cooldown_s,
        probing=entry.probing and not reopened,
        probe_seq=None if reopened else entry.probe_seq,
        failed=entry.failed + 1,
    )
    return _put(health, key, updated)


def abandoned(health: Health, key: HolderKey, now: float, seq: int) -> Health:
    """Request ``seq`` on ``key`` ended without a verdict on the holder (the client left).

    It frees its slot; if it was the probe, the holder is half-open again.
    """
    entry = health.get(key)
    was_probe = entry.probing and entry.probe_seq == seq
    return _put(
        health,
        key,
        replace(
            entry,
            in_flight=max(0, entry.in_flight - 1),
            probing=entry.probing and not was_probe,
            probe_seq=None if was_probe else entry.probe_seq,
        ),
    )


def reserved(health: Health, key: HolderKey) -> Health:
    """A health probe took a slot of ``key``: it counts in flight like a request, so no
    request runs beside it on an engine that takes one at a time, but it is no request:
    no turn, no sequence number, no verdict on the holder."""
    entry = health.get(key)
    return _put(health, key, replace(entry, in_flight=entry.in_flight + 1))


def released(health: Health, key: HolderKey) -> Health:
    """The probe that ``reserved`` a slot of ``key`` ended."""
    entry = health.get(key)
    return _put(health, key, replace(entry, in_flight=max(0, entry.in_flight - 1)))


def set_limits(health: Health, limits: Mapping[HolderKey, int]) -> Health:
    """The same health with these concurrency limits (replacing all set before)."""
    if any(n < 1 for n in limits.values()):
        raise ValueError("a concurrency limit must be at least 1")
    return Health(
        health.holders, MappingProxyType(dict(limits)), health.seq, health.policy, health.reports
    )


def reported(
    health: Health, key: HolderKey, load: Load, at: float, own: int | None = None
) -> Health:
    """The same health with ``load`` as the holder's last report, received at ``at``, and
    ``own``: this node's requests there when the report was made (they are inside its
    count; default: those running now)."""
    reports = _copy(health.reports)
    reports[key] = Report(load, at, health.get(key).in_flight if own is None else own)
    return Health(
        health.holders, health.limits, health.seq, health.policy, MappingProxyType(reports)
    )


def retain(health: Health, keys: Iterable[HolderKey]) -> Health:
    """Forget holders not in ``keys`` (gone from the fleet), unless requests still run there."""
    keep = set(keys)
    holders = {k: e for k, e in health.holders.items() if k in keep or e.in_flight > 0}
    reports = {k: r for k, r in health.reports.items() if k in keep}
    if len(holders) == len(health.holders) and len(reports) == len(health.reports):
        return health
    return Health(
        MappingProxyType(holders),
        health.limits,
        health.seq,
        health.policy,
        MappingProxyType(reports),
    )
