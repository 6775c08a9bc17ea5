"""What one routing decision costs: ``run() -> dict``, or ``python3 -m bench.routing``.

The fleet: 100 nodes (this one, 59 LAN peers, 40 behind the relay, a tenth of
those also on the LAN), each with two services, 1000 models. Two shapes:

- ``spread``: each model on 5 nodes (5,000 holders): ``choose`` sees 5 holders.
- ``dense``: every node holds every model (104,000 holders; the ten relay
  peers also on the LAN count twice): ``choose`` sees 104 holders of the
  model, the worst case the issue's numbers allow.

Health is filled for every holder: requests in flight, latencies, a few
failures, some holders cooling. Each timing is the median, over rounds, of a
round's mean cost per call, in microseconds; calls cycle through the models
and move ``now`` on. Numbers are reported, never asserted.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from quorum.config.models import EngineKind, ServiceType
from quorum.fleet import FleetSnapshot, Holder, Route
from quorum.routing import (
    ENDPOINTS,
    Health,
    HolderHealth,
    HolderKey,
    RouteRequest,
    choose,
    finished,
    key_of,
    started,
)

NODES = 100
MODELS = 1000
TARGET_US = 50.0
_ENGINES = (EngineKind.OLLAMA, EngineKind.VLLM, EngineKind.LLAMACPP, EngineKind.LMSTUDIO)


def _routes(node: int) -> tuple[Route, ...]:
    if node == 0:
        return (Route.LOCAL,)
    if node < 60:
        return (Route.LAN,)
    return (Route.RELAY, Route.LAN) if node % 10 == 0 else (Route.RELAY,)


def fleet(per_model: int, seed: int = 1) -> FleetSnapshot:
    """``MODELS`` models on ``NODES`` nodes, each model on ``per_model`` of them."""
    rng = random.Random(seed)
    holders: list[Holder] = []
    for m in range(MODELS):
        nodes = range(NODES) if per_model >= NODES else rng.sample(range(NODES), per_model)
        for n in nodes:
            for route in _routes(n):
                service = f"svc{(n + m) % 2}"
                holders.append(
                    Holder(
                        model=f"model-{m:04d}",
                        type=ServiceType.LLM,
                        node_id=f"node-{n:03d}",
                        node_name=f"n{n:03d}",
                        route=route,
                        service=service,
                        engine=_ENGINES[n % len(_ENGINES)],
                        url=f"http://10.0.{n // 256}.{n % 256}:32768",
                        upstream_model=f"model-{m:04d}",
                        loaded=rng.choice((True, False, None)),
                    )
                )
    return FleetSnapshot("node-000", "n000", tuple(holders))


def health_for(snapshot: FleetSnapshot, seed: int = 2) -> Health:
    """Every holder busy to some degree; one in twenty with failures, one in fifty cooling."""
    rng = random.Random(seed)
    entries: dict[HolderKey, HolderHealth] = {}
    for key in sorted({key_of(h) for h in snapshot.holders}):
        roll = rng.random()
        entries[key] = HolderHealth(
            in_flight=rng.randint(0, 6),
            consecutive_failures=rng.randint(1, 2) if roll < 0.05 else 0,
            cooldown_until=1e9 if roll < 0.02 else None,
            cooldown_s=5.0 if roll < 0.02 else 0.0,
            ttfb_ewma_s=rng.uniform(0.05, 2.0),
            latency_ewma_s=rng.uniform(0.5, 20.0),
            last_ok=rng.uniform(0.0, 10.0),
            last_seq=rng.randint(0, 10_000),
        )
    return Health(MappingProxyType(entries), seq=10_000)


def _per_call_us(fn: Callable[[int], object], calls: int, rounds: int) -> dict[str, float]:
    means = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for i in range(calls):
            fn(i)
        means.append((time.perf_counter_ns() - start) / calls / 1000)
    return {"median_us": round(statistics.median(means), 2), "best_us": round(min(means), 2)}


def _requests() -> list[RouteRequest]:
    chat = ENDPOINTS["/v1/chat/completions"]
    return [RouteRequest(f"model-{m:04d}", chat.types, chat.label) for m in range(MODELS)]


def _scenario(snapshot: FleetSnapshot, calls: int, rounds: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = snapshot.by_model  # built once per fleet change, not per request
    index_ms = (time.perf_counter() - t0) * 1000
    health = health_for(snapshot)
    requests = _requests()
    n = len(requests)

    def with_health(i: int) -> object:
        return choose(snapshot, requests[i % n], health, 10.0 + i * 1e-3)

    def without_health(i: int) -> object:
        return choose(snapshot, requests[i % n])

    key = key_of(index[requests[0].model][0])

    def transitions(i: int) -> object:
        now = 10.0 + i * 1e-3
        return finished(started(health, key, now), key, now, True, 1.0, 0.2)

    return {
        "holders": len(snapshot.holders),
        "holders_per_model": round(len(snapshot.holders) / len(index), 1),
        "health_keys": len(health.holders),
        "index_build_ms": round(index_ms, 2),
        "choose": _per_call_us(with_health, calls, rounds),
        "choose_without_health": _per_call_us(without_health, calls, rounds),
        "started_plus_finished": _per_call_us(transitions, calls, rounds),
    }


def run(*, calls: int = 20_000, rounds: int = 5) -> dict[str, Any]:
    """The report: per-call costs for the spread and dense fleets, and the target."""
    spread = _scenario(fleet(per_model=5), calls, rounds)
    dense = _scenario(fleet(per_model=NODES), max(1, calls // 20), rounds)
    value = spread["choose"]["median_us"]
    return {
        "bench": "routing",
        "nodes": NODES,
        "models": MODELS,
        "spread": spread,
        "dense": dense,
        "targets": [
            {
                "name": "choose_us",
                "goal": f"choose() with health < {TARGET_US:g} us (100 nodes, 1000 models)",
                "value": value,
                "unit": "us",
                "pass": value < TARGET_US,
                "missed_by": None if value < TARGET_US else f"{value - TARGET_US:.1f} us over",
            }
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
