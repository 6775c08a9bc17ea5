"""Holders, snapshots and requests for the routing tests, and a fake clock's simulator."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from quorum.config import EngineKind, ServiceType
from quorum.fleet import FleetSnapshot, Holder, Route
from quorum.routing import (
    ENDPOINTS,
    Health,
    HolderKey,
    RouteRequest,
    available,
    choose,
    finished,
    key_of,
    started,
)


def holder(
    model: str = "m",
    type_: ServiceType = ServiceType.LLM,
    *,
    node: str = "a",
    route: Route = Route.LOCAL,
    service: str = "svc",
    engine: EngineKind = EngineKind.OPENAI,
    loaded: bool | None = None,
    online: bool = True,
) -> Holder:
    return Holder(
        model=model,
        type=type_,
        node_id=f"id-{node}",
        node_name=node,
        route=route,
        service=service,
        engine=engine,
        url=f"http://{node}",
        upstream_model=model,
        loaded=loaded,
        online=online,
    )


def snap(*holders: Holder) -> FleetSnapshot:
    return FleetSnapshot("id-a", "a", holders)


def req(
    model: str = "m",
    path: str = "/v1/chat/completions",
    *,
    forwarded: bool = False,
    size_bytes: int = 0,
) -> RouteRequest:
    e = ENDPOINTS[path]
    return RouteRequest(model, e.types, e.label, forwarded, size_bytes)


def fail(health: Health, key: HolderKey, now: float, times: int = 1) -> Health:
    """``times`` requests started and failed on ``key`` at ``now``."""
    for _ in range(times):
        health = finished(started(health, key, now), key, now, False)
    return health


def succeed(health: Health, key: HolderKey, now: float, latency_s: float = 0.1) -> Health:
    return finished(started(health, key, now), key, now, True, latency_s, latency_s / 2)


@dataclass
class Simulation:
    """Requests arriving on a fake clock, each sent where ``choose`` says, ending later."""

    snapshot: FleetSnapshot
    health: Health = field(default_factory=Health)
    now: float = 0.0
    served: Counter[HolderKey] = field(default_factory=Counter)
    waited: int = 0
    _running: list[tuple[float, int, HolderKey, float]] = field(default_factory=list)

    def advance(self, to: float) -> None:
        """Finish, in time order, every request that ends by ``to``."""
        while self._running and self._running[0][0] <= to:
            end, _, key, latency = heapq.heappop(self._running)
            self.health = finished(self.health, key, end, True, latency, latency / 4)
        self.now = max(self.now, to)

    def send(self, request: RouteRequest, latency: Callable[[HolderKey], float]) -> HolderKey:
        candidates = choose(self.snapshot, request, self.health, self.now)
        pick = next((h for h in candidates if available(self.health, h, self.now)), None)
        if pick is None:  # all full: the proxy would queue; start it when the first ends
            self.waited += 1
            self.advance(self._running[0][0])
            return self.send(request, latency)
        key = key_of(pick)
        latency_s = latency(key)
        self.health = started(self.health, key, self.now)
        heapq.heappush(self._running, (self.now + latency_s, self.health.seq, key, latency_s))
        self.served[key] += 1
        return key

    def drain(self) -> None:
        self.advance(float("inf"))


def run_random(
    snapshot: FleetSnapshot,
    seed: int,
    *,
    requests: int = 200,
    mean_gap_s: float = 0.3,
    latency: tuple[float, float] = (0.5, 1.5),
    slower: Mapping[HolderKey, float] = MappingProxyType({}),
) -> Simulation:
    """``requests`` arrivals with exponential gaps, latencies uniform in ``latency``.

    A holder in ``slower`` takes that many times longer.
    """
    rng = random.Random(seed)
    sim = Simulation(snapshot)

    def latency_of(key: HolderKey) -> float:
        return rng.uniform(*latency) * slower.get(key, 1.0)

    for _ in range(requests):
        sim.advance(sim.now + rng.expovariate(1 / mean_gap_s))
        sim.send(req(), latency_of)
    sim.drain()
    return sim
