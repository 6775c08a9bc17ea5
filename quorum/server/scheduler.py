"""The node's running side of routing: health over time, and the per-model wait queues.

The decisions are pure functions in :mod:`quorum.routing`; this object only
keeps their state between requests, reads the clock, and parks requests that
must wait until a slot frees or their deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable

from quorum.config.models import RoutingSection
from quorum.errors import Overloaded
from quorum.fleet import FleetSnapshot, Holder
from quorum.routing import (
    Cooling,
    FailoverPolicy,
    Health,
    HealthPolicy,
    HolderKey,
    QueuePolicy,
    RouteRequest,
    Verdict,
    abandoned,
    admission,
    available,
    choose,
    cooling,
    estimated_wait_s,
    finished,
    key_of,
    released,
    reserved,
    resolve_alias,
    retain,
    set_limits,
    started,
)


class Scheduler:
    def __init__(
        self,
        cfg: RoutingSection,
        aliases: dict[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aliases = aliases
        self.clock = clock
        self.health = Health(
            policy=HealthPolicy(
                failures=cfg.cooldown_failures,
                base_cooldown_s=cfg.cooldown_s,
                max_cooldown_s=cfg.max_cooldown_s,
            )
        )
        self.failover = FailoverPolicy(
            max_attempts=cfg.max_attempts, replay_limit_bytes=int(cfg.replay_limit_mb * 2**20)
        )
        self.queue = QueuePolicy(size=cfg.queue_size, timeout_s=cfg.queue_timeout_s)
        self._tickets = itertools.count()
        self._waiting: dict[str, deque[int]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    # -- choosing, and waiting when every holder is busy ------------------------

    def choose(self, snapshot: FleetSnapshot, request: RouteRequest) -> tuple[Holder, ...]:
        return choose(
            snapshot,
            request,
            self.health,
            self.clock(),
            aliases=self.aliases,
            replay_limit_bytes=self.failover.replay_limit_bytes,
        )

    async def admit(
        self, snapshot: Callable[[], FleetSnapshot], request: RouteRequest
    ) -> tuple[Holder, ...]:
        """The candidates once one has a free slot; ``Overloaded`` (503) if that takes too long."""
        model = resolve_alias(self.aliases, request.model)
        candidates = self.choose(snapshot(), request)
        queue = self._waiting.get(model)
        if not queue and available(self.health, candidates[0], self.clock()):
            return candidates
        ticket = next(self._tickets)
        queue = self._waiting.setdefault(model, deque())
        queue.append(ticket)
        deadline = self.clock() + self.queue.timeout_s
        try:
            while True:
                now = self.clock()
                candidates = self.choose(snapshot(), request)
                ahead = queue.index(ticket)
                verdict = admission(
                    free_slot=ahead == 0 and available(self.health, candidates[0], now),
                    ahead=ahead,
                    queue_size=self.queue.size,
                    deadline=deadline,
                    now=now,
                    wait_hint_s=estimated_wait_s(self.health, candidates, ahead, now),
                )
                if verdict.verdict is Verdict.ADMIT:
                    return candidates
                if verdict.verdict is Verdict.REJECT:
                    raise Overloaded(verdict.reason, retry_after_s=verdict.retry_after_s)
                wake = self._wake.setdefault(model, asyncio.Event())
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - now)):
                        await wake.wait()
        finally:
            queue.remove(ticket)
            if not queue:
                self._waiting.pop(model, None)
            self._notify(model)  # the next in line may go now

    def _notify(self, model: str) -> None:
        wake = self._wake.get(model)
        if wake is not None:
            wake.set()

    # -- one attempt on one holder ------------------------------------------

    def available(self, holder: Holder) -> bool:
        return available(self.health, holder, self.clock())

    def start(self, holder: Holder) -> int:
        """Count the attempt in; returns its sequence number (for ``abandon``)."""
        self.health = started(self.health, key_of(holder), self.clock())
        return self.health.seq

    def finish(
        self, holder: Holder, ok: bool, latency_s: float | None, ttfb_s: float | None
    ) -> None:
        self.health = finished(self.health, key_of(holder), self.clock(), ok, latency_s, ttfb_s)
        self._notify(holder.model)

    def abandon(self, holder: Holder, seq: int) -> None:
        self.health = abandoned(self.health, key_of(holder), self.clock(), seq)
        self._notify(holder.model)

    # -- health probes of local engines --------------------------------------

    def reserve_probe(self, key: HolderKey) -> bool:
        """Take a slot of an idle service for a health probe; False if anything runs there.

        A busy service is alive by its traffic and must not be disturbed: some engines
        end a running answer when another request arrives (llama-cpp-python), others
        queue the probe behind long answers until it times out.
        """
        if self.health.get(key).in_flight > 0:
            return False
        self.health = reserved(self.health, key)
        return True

    def release_probe(self, key: HolderKey) -> None:
        self.health = released(self.health, key)
        for model in list(self._waiting):
            self._notify(model)

    # -- upkeep --------------------------------------------------------------

    def fleet_changed(self, snapshot: FleetSnapshot, limits: dict[HolderKey, int]) -> None:
        """Forget holders that left; apply configured limits; wake waiters (a holder may
        have come)."""
        self.health = retain(set_limits(self.health, limits), map(key_of, snapshot.holders))
        for model in list(self._waiting):
            self._notify(model)

    def cooling(self) -> tuple[Cooling, ...]:
        return cooling(self.health, self.clock())

    def in_flight(self, keys: Iterable[HolderKey]) -> dict[HolderKey, int]:
        return {k: self.health.get(k).in_flight for k in keys}
