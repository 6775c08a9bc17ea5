"""How long a request would take on a holder: wait + run + route + load (pure).

Rules (everything that estimates a completion time lives here):
- Slots (``slots_of``): the holder's limit (:func:`.health.limit_of`): the
  configured ``max_concurrency``, else what a local engine publishes
  (llama.cpp's total slots), else what traffic taught (:mod:`.capacity`),
  never above what the peer announced or the engine's default
  (``DEFAULT_LIMITS``; a peer's: ``REMOTE_LIMIT``).
- Busy: the requests this node runs there, plus the others' requests the
  engine or the peer last reported running and queued (``Load``: its count
  less this node's own requests there when the report came), weighted by the
  report's freshness: a report loses weight linearly and counts for nothing
  after ``REPORT_TTL_S``. So this node's own finished requests never linger
  as load in an old report.
- Run: the latency learned at the level the request would start at (a level
  not seen yet: the highest seen below it, as if the holder ran only that many
  at once, :func:`.capacity.at_level`; a full holder's: at its slots); else
  the learned base run time; else the latency EWMA of answers that did not
  say their level (while fresh: ``HealthPolicy.stale_s``); else the run time
  the peer reported plus the route;
  else ``unknown_run_s`` (the caller passes the best known among the
  candidates, so a new holder is tried rather than starved). While a
  request runs on such an unmeasured holder it counts one slot (unless
  configured or published): the requests running there queue the next one,
  so a burst at start is spread over the holders instead of piling onto one
  that may turn out slow.
- Wait: none while a slot is free; else the queue ahead drains through the
  slots at the base run time: ``(busy - slots + 1) * run / slots``.
- Route: ``ROUTE_S`` (local nothing, LAN a few ms, relay tens of ms) when the
  run time was not learned from this node's own traffic (which includes it).
- Load: ``LOAD_S`` when the holder says it must load the model first.
- Failures: the total is multiplied by ``1 + consecutive failures`` while
  the circuit is closed; a half-open holder is not, so its one probe goes
  where the holder would be had it not failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from quorum.fleet import Holder, Load, Route
from quorum.routing import capacity
from quorum.routing.health import Health, HolderHealth, Report, key_of, limit_of

ROUTE_S = {Route.LOCAL: 0.0, Route.LAN: 0.003, Route.RELAY: 0.03}
LOAD_S = 10.0
REPORT_TTL_S = 60.0
DEFAULT_RUN_S = 1.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """One holder's expected completion time for the next request, in parts."""

    wait_s: float
    run_s: float
    route_s: float
    load_s: float
    penalty: float  # 1 + consecutive failures
    busy: float
    slots: int
    learned: bool  # the run time was learned from this node's traffic

    @property
    def total_s(self) -> float:
        return (self.wait_s + self.run_s + self.route_s + self.load_s) * self.penalty


def slots_of(health: Health, holder: Holder, now: float) -> int:
    """Requests this node lets run on ``holder`` at once (rules above)."""
    return limit_of(health, holder, now)


def report_weight(report: Report | None, now: float) -> float:
    if report is None:
        return 0.0
    age = max(0.0, now - report.at)
    return max(0.0, 1.0 - age / REPORT_TTL_S)


def busy_of(entry: HolderHealth, report: Report | None, now: float) -> float:
    """Requests running or queued on the holder: this node's, and others' as last reported."""
    weight = report_weight(report, now)
    if report is None or weight == 0.0:
        return float(entry.in_flight)
    load: Load = report.load
    others = max(0, load.in_flight + load.queued - report.own)
    return entry.in_flight + weight * others


def _learned_s(health: Health, entry: HolderHealth, now: float) -> float | None:
    learned = capacity.base_s(entry.speed, now)
    if learned is not None:
        return learned
    last_ok = entry.last_ok
    if last_ok is not None and now - last_ok <= health.policy.stale_s:
        return entry.latency_ewma_s
    return None


def known_run_s(health: Health, holder: Holder, now: float) -> float | None:
    """The holder's base run time, learned here or reported by its peer (with the route)."""
    key = key_of(holder)
    learned = _learned_s(health, health.get(key), now)
    if learned is not None:
        return learned
    report = health.reports.get(key)
    if report is not None and report.load.service_s and report_weight(report, now) > 0:
        return report.load.service_s + ROUTE_S[holder.route]
    return None


def estimate(
    health: Health, holder: Holder, now: float, unknown_run_s: float = DEFAULT_RUN_S
) -> Estimate:
    """The expected completion of one more request on ``holder`` (rules above)."""
    key = key_of(holder)
    entry = health.get(key)
    slots = slots_of(health, holder, now)
    report = health.reports.get(key)
    busy = busy_of(entry, report, now)
    speed = entry.speed
    base = _learned_s(health, entry, now)
    learned = base is not None
    if base is None:
        reported = None
        if report is not None and report.load.service_s and report_weight(report, now) > 0:
            reported = report.load.service_s
        base = reported if reported is not None else unknown_run_s
        told = holder.limit or health.limits.get(key)  # published or configured
        if entry.in_flight and reported is None and not told:
            slots = 1  # unmeasured: one at a time, until an answer shows its speed
    if busy < slots:
        wait = 0.0
        run = capacity.at_level(speed, int(busy) + 1, now) if learned else None
        run = base if run is None else run
    else:
        wait = (busy - slots + 1) * base / slots
        run = capacity.at_level(speed, slots, now) if learned else None
        run = base if run is None else run
    return Estimate(
        wait_s=wait,
        run_s=run,
        route_s=0.0 if learned else ROUTE_S[holder.route],
        load_s=LOAD_S if holder.loaded is False else 0.0,
        penalty=1.0 + entry.consecutive_failures if entry.cooldown_until is None else 1.0,
        busy=busy,
        slots=slots,
        learned=learned,
    )
