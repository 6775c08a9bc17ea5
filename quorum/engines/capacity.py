"""What an engine publishes about its capacity and load, read when its models are listed.

- llama.cpp's ``/props`` has ``total_slots`` (``--parallel``): the requests it
  runs at once; more are deferred inside it. That number becomes the
  service's slots (``ServiceState.slots``), so routing neither queues work
  inside the engine nor leaves a slot idle.
- Load (``EngineLoad``), from Prometheus text at ``/metrics``: vLLM's
  ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (summed
  over its engines when data-parallel) and its KV-cache use
  (``vllm:kv_cache_usage_perc``, ``vllm:gpu_cache_usage_perc`` before v0.10);
  llama.cpp's ``llamacpp:requests_processing`` and ``llamacpp:requests_deferred``
  (only when started with ``--metrics``; otherwise 501 and nothing is known).
  It counts every client's requests, this node's too; routing takes this
  node's own off (:mod:`quorum.routing.estimate`). A KV cache over
  ``KV_FULL`` makes the next request wait for memory: it counts one more
  waiting when none is reported.
- Ollama says which models are loaded (``/api/ps``) and LM Studio which are
  (``/api/v0/models``' ``state``); the adapters read those as each model's
  ``loaded`` (a model to load first costs a load: :mod:`quorum.routing.estimate`).
  Neither publishes a slot count or a queue: slots are learned from traffic
  (:mod:`quorum.routing.capacity`).

Parsing is pure and never fails: a page without the numbers gives None.
Reading happens only when the engine manager probes, which it does only
while this node runs nothing there (a busy service is not asked). A
configured ``max_concurrency`` still wins over what is read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from quorum.config.models import EngineKind
from quorum.engines.base import HttpGet
from quorum.errors import EngineError

MAX_SLOTS = 4096
MAX_REQUESTS = 1_000_000
KV_FULL = 0.95


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Requests an engine reports running and waiting, and its KV-cache use (0..1)."""

    running: int
    waiting: int
    kv_cache: float | None = None

    @property
    def queued(self) -> int:
        """Waiting, plus one when a full KV cache makes the next request wait."""
        full = self.kv_cache is not None and self.kv_cache >= KV_FULL
        return self.waiting + (1 if full and not self.waiting else 0)


def slots_of_props(props: object) -> int | None:
    """``/props``'s ``total_slots``, if it is a sane positive integer."""
    if not isinstance(props, Mapping):
        return None
    total = props.get("total_slots")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 < total <= MAX_SLOTS:
        return None
    return total


def prometheus_samples(text: str, names: frozenset[str]) -> dict[str, list[float]]:
    """The values of each sample of ``names`` in Prometheus text (every label set;
    comments, other metrics, bad lines and non-finite values are passed over)."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if space < 0:
            continue
        if 0 <= brace < space:
            name, end = line[:brace], line.rfind("}")
            if end < brace:
                continue
            rest = line[end + 1 :]
        else:
            name, rest = line[:space], line[space:]
        if name not in names:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])  # a timestamp may follow
        except ValueError:
            continue
        if math.isfinite(value):
            found.setdefault(name, []).append(value)
    return found


def _count(values: list[float] | None) -> int | None:
    if not values:
        return None
    total = sum(values)
    return int(total) if 0 <= total <= MAX_REQUESTS else None


_VLLM = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
    }
)
_LLAMACPP = frozenset({"llamacpp:requests_processing", "llamacpp:requests_deferred"})


def vllm_load(text: str) -> EngineLoad | None:
    """vLLM's ``/metrics``: requests running and waiting over its engines, KV-cache use."""
    samples = prometheus_samples(text, _VLLM)
    running = _count(samples.get("vllm:num_requests_running"))
    waiting = _count(samples.get("vllm:num_requests_waiting"))
    if running is None or waiting is None:
        return None
    kv = samples.get("vllm:kv_cache_usage_perc") or samples.get("vllm:gpu_cache_usage_perc")
    use = max(kv) if kv else None
    return EngineLoad(running, waiting, use if use is not None and 0 <= use <= 1 else None)


def llamacpp_load(text: str) -> EngineLoad | None:
    """llama.cpp's ``/metrics`` (``--metrics``): requests processing and deferred."""
    samples = prometheus_samples(text, _LLAMACPP)
    running = _count(samples.get("llamacpp:requests_processing"))
    waiting = _count(samples.get("llamacpp:requests_deferred"))
    if running is None or waiting is None:
        return None
    return EngineLoad(running, waiting)


_LOAD_PARSERS = {EngineKind.VLLM: vllm_load, EngineKind.LLAMACPP: llamacpp_load}


async def read_slots(
    get: HttpGet, root: str, headers: Mapping[str, str], engine: EngineKind
) -> int | None:
    """The engine's published slot count, or None (not published, or not readable now)."""
    if engine is not EngineKind.LLAMACPP:
        return None
    try:
        props = await get(f"{root}/props", headers)
    except EngineError:
        return None
    return slots_of_props(props.json) if props.ok else None


async def read_load(
    get: HttpGet, root: str, headers: Mapping[str, str], engine: EngineKind
) -> EngineLoad | None:
    """The load the engine publishes now, or None (it publishes none, or not now)."""
    parse = _LOAD_PARSERS.get(engine)
    if parse is None:
        return None
    try:
        page = await get(f"{root}/metrics", headers)
    except EngineError:
        return None
    return parse(page.text) if page.ok else None
