"""The node's running side of routing: health over time, and the per-model wait queues.

The decisions are pure functions in :mod:`quorum.routing`; this object only
keeps their state between requests, reads the clock, and parks requests that
must wait until a slot frees or their deadline passes.

- A request starts at once when its model's queue is empty and the first
  candidate has a free slot; otherwise it joins the queue.
- The queue is pumped (``_pump``) whenever a slot may have freed (an answer
  ended, a probe released its slot, the fleet changed), when the first
  candidate of a waiter is expected to free up, and at a waiter's deadline.
  The pump walks the waiters in arrival order, each ranked with the number
  still waiting before it (``ahead``); a waiter whose first candidate is free
  starts there. So the first waiter may wait for a fast holder while one
  behind it starts on a slower holder that is free, because for it that is
  quicker.
- Admission starts the request on the holder (``started``) before the waiter
  runs again, so no other waiter can take the same slot meanwhile; the
  caller uses the returned :class:`Ticket`'s sequence number for its first
  attempt, and must ``abandon`` it if it never makes that attempt.
- Each start records its level (the requests running there, itself
  included) so the answer's latency teaches the holder's speed per level.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from quorum.config.models import RoutingSection
from quorum.errors import ApiError, Overloaded
from quorum.fleet import FleetSnapshot, Holder, Load
from quorum.routing import (
    Cooling,
    FailoverPolicy,
    Health,
    HealthPolicy,
    HolderKey,
    QueuePolicy,
    RouteRequest,
    abandoned,
    available,
    choose,
    cooling,
    estimate,
    estimated_wait_s,
    finished,
    key_of,
    known_run_s,
    released,
    reported,
    reserved,
    resolve_alias,
    retain,
    retry_after,
    set_limits,
    started,
)

MIN_RECHECK_S = 0.005  # a waiter is ranked again at least this long after the last time


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted request: its candidates, the first already started, and how long it waited."""

    candidates: tuple[Holder, ...]
    seq: int  # the sequence number of the start on ``candidates[0]``
    waited_s: float


@dataclass(eq=False)
class _Waiter:
    request: RouteRequest
    snapshot: Callable[[], FleetSnapshot]
    arrived: float
    deadline: float
    future: asyncio.Future[Ticket] = field(repr=False)


@dataclass(frozen=True, slots=True)
class QueueView:
    """One model's queue, for status and ``/metrics``."""

    model: str
    depth: int
    estimated_wait_s: float


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
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._levels: dict[int, int] = {}  # sequence number -> level it started at
        self._loads: dict[HolderKey, Load] = {}  # the last load seen in each peer's presence

    # -- choosing, and waiting when waiting is quicker ---------------------------

    def choose(
        self, snapshot: FleetSnapshot, request: RouteRequest, ahead: int = 0
    ) -> tuple[Holder, ...]:
        return choose(
            snapshot,
            request,
            self.health,
            self.clock(),
            aliases=self.aliases,
            replay_limit_bytes=self.failover.replay_limit_bytes,
            ahead=ahead,
        )

    async def admit(self, snapshot: Callable[[], FleetSnapshot], request: RouteRequest) -> Ticket:
        """The candidates, the first started, once it is the quickest to finish and has a
        free slot; ``Overloaded`` (503) when the queue is full or that takes too long."""
        model = resolve_alias(self.aliases, request.model)
        candidates = self.choose(snapshot(), request)
        now = self.clock()
        queue = self._waiting.get(model)
        if not queue and available(self.health, candidates[0], now):
            return Ticket(candidates, self.start(candidates[0]), 0.0)
        ahead = len(queue) if queue else 0
        if ahead >= self.queue.size:
            wait = estimated_wait_s(self.health, candidates, ahead, now)
            raise Overloaded(
                f"{ahead} requests already wait for this model (the queue holds "
                f"{self.queue.size}); try again in about {retry_after(wait)} s.",
                retry_after_s=retry_after(wait),
            )
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(request, snapshot, now, now + self.queue.timeout_s, future)
        self._waiting.setdefault(model, deque()).append(waiter)
        self._pump(model)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                ticket = future.result()  # admitted, then cancelled before it could run
                self.abandon(ticket.candidates[0], ticket.seq)
            raise
        finally:
            self._leave(model, waiter)

    def _leave(self, model: str, waiter: _Waiter) -> None:
        queue = self._waiting.get(model)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            removed = False  # the pump took it out already
        else:
            removed = True
        if not queue:
            del self._waiting[model]
            timer = self._timers.pop(model, None)
            if timer is not None:
                timer.cancel()
        elif removed:
            self._pump(model)  # one fewer ahead of the others

    def _pump(self, model: str) -> None:
        """Start every waiter of ``model`` that may start now; reject those past their
        deadline; set a timer for the next time a waiter should be ranked again."""
        queue = self._waiting.get(model)
        if not queue:
            return
        now = self.clock()
        recheck = float("inf")
        ahead = 0
        blocked = False  # no holder had a free slot: the later waiters need not be ranked
        for waiter in list(queue):
            if waiter.future.done():
                continue
            if blocked:
                if now >= waiter.deadline:
                    self._reject_late(waiter, ahead, now)
                    queue.remove(waiter)
                else:
                    recheck = min(recheck, waiter.deadline)
                    ahead += 1
                continue
            try:
                candidates = self.choose(waiter.snapshot(), waiter.request, ahead)
            except ApiError as err:
                waiter.future.set_exception(err)
                queue.remove(waiter)
                continue
            first = candidates[0]
            if available(self.health, first, now):
                seq = self.start(first)
                waiter.future.set_result(Ticket(candidates, seq, now - waiter.arrived))
                queue.remove(waiter)
                continue
            if now >= waiter.deadline:
                self._reject_late(waiter, ahead, now, candidates)
                queue.remove(waiter)
                continue
            soon = estimate(self.health, first, now).wait_s
            recheck = min(recheck, waiter.deadline, now + max(MIN_RECHECK_S, soon))
            blocked = not any(available(self.health, h, now) for h in candidates)
            ahead += 1
        if not queue:
            return
        self._set_timer(model, recheck, now)

    def _reject_late(
        self,
        waiter: _Waiter,
        ahead: int,
        now: float,
        candidates: tuple[Holder, ...] | None = None,
    ) -> None:
        holders = candidates or waiter.snapshot().by_model.get(
            resolve_alias(self.aliases, waiter.request.model), ()
        )
        wait = estimated_wait_s(self.health, holders, ahead, now)
        waiter.future.set_exception(
            Overloaded(
                f"waited {now - waiter.arrived:.0f} s for a free slot (the longest wait is "
                f"{self.queue.timeout_s:g} s); try again in about {retry_after(wait)} s.",
                retry_after_s=retry_after(wait),
            )
        )

    def _set_timer(self, model: str, at: float, now: float) -> None:
        timer = self._timers.pop(model, None)
        if timer is not None:
            timer.cancel()
        if at == float("inf"):
            return
        loop = asyncio.get_running_loop()
        self._timers[model] = loop.call_later(max(0.0, at - now), self._pump, model)

    def _pump_all(self) -> None:
        for model in list(self._waiting):
            self._pump(model)

    def queues(self) -> tuple[QueueView, ...]:
        """Each model's waiting requests and the estimated wait of the last of them."""
        now = self.clock()
        out = []
        for model, queue in sorted(self._waiting.items()):
            depth = len(queue)
            holders: tuple[Holder, ...] = ()
            if queue:
                holders = queue[0].snapshot().by_model.get(model, ())
            wait = estimated_wait_s(self.health, holders, max(0, depth - 1), now)
            out.append(QueueView(model, depth, wait if depth else 0.0))
        return tuple(out)

    def queued(self, model: str) -> int:
        return len(self._waiting.get(model, ()))

    def load_of(self, holder: Holder) -> Load:
        """A local holder's load, for presence and the answers this node serves for peers."""
        now = self.clock()
        run = known_run_s(self.health, holder, now)
        return Load(
            self.health.get(key_of(holder)).in_flight,
            self.queued(resolve_alias(self.aliases, holder.model)),
            run or 0.0,
        )

    def wait_of(self, holders: tuple[Holder, ...], model: str) -> float:
        """How long one more request of ``model`` would wait here now (0: it would start)."""
        now = self.clock()
        depth = self.queued(model)
        if not depth and any(available(self.health, h, now) for h in holders):
            return 0.0
        return estimated_wait_s(self.health, holders, depth, now)

    # -- one attempt on one holder ------------------------------------------

    def available(self, holder: Holder) -> bool:
        return available(self.health, holder, self.clock())

    def start(self, holder: Holder) -> int:
        """Count the attempt in; returns its sequence number (for ``finish``/``abandon``)."""
        key = key_of(holder)
        level = self.health.get(key).in_flight + 1
        self.health = started(self.health, key, self.clock())
        seq = self.health.seq
        self._levels[seq] = level
        return seq

    def finish(
        self,
        holder: Holder,
        ok: bool,
        latency_s: float | None,
        ttfb_s: float | None,
        seq: int | None = None,
        tokens: int | None = None,
    ) -> None:
        level = self._levels.pop(seq, None) if seq is not None else None
        self.health = finished(
            self.health,
            key_of(holder),
            self.clock(),
            ok,
            latency_s,
            ttfb_s,
            level=level,
            tokens=tokens,
        )
        self._pump(resolve_alias(self.aliases, holder.model))

    def abandon(self, holder: Holder, seq: int) -> None:
        self._levels.pop(seq, None)
        self.health = abandoned(self.health, key_of(holder), self.clock(), seq)
        self._pump(resolve_alias(self.aliases, holder.model))

    def report(self, holder: Holder, load: Load, seq: int | None = None) -> None:
        """A peer's answer said how loaded its service was when request ``seq`` started
        there (so this node's own requests then, ``seq``'s level, are inside the count)."""
        own = self._levels.get(seq) if seq is not None else None
        self.health = reported(self.health, key_of(holder), load, self.clock(), own)

    def engine_reported(self, key: HolderKey, load: Load) -> None:
        """A local engine published its load (its ``/metrics``), others' requests included."""
        self.health = reported(self.health, key, load, self.clock())
        self._pump_all()

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
        self._pump_all()

    # -- upkeep --------------------------------------------------------------

    def fleet_changed(self, snapshot: FleetSnapshot, limits: dict[HolderKey, int]) -> None:
        """Forget holders that left; apply configured limits; take in the load peers
        reported in their presence; wake waiters (a holder may have come)."""
        health = retain(set_limits(self.health, limits), map(key_of, snapshot.holders))
        now = self.clock()
        for h in snapshot.holders:
            if h.load is None:
                continue
            key = key_of(h)
            if self._loads.get(key) != h.load:
                self._loads[key] = h.load
                health = reported(health, key, h.load, now)
        self.health = health
        with contextlib.suppress(RuntimeError):  # no running loop: nobody waits
            self._pump_all()

    def cooling(self) -> tuple[Cooling, ...]:
        return cooling(self.health, self.clock())

    def in_flight(self, keys: Iterable[HolderKey]) -> dict[HolderKey, int]:
        return {k: self.health.get(k).in_flight for k in keys}
