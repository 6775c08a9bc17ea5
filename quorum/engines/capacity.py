"""What an engine publishes about its capacity, read when its models are listed.

- llama.cpp's ``/props`` has ``total_slots`` (``--parallel``): the requests it
  runs at once; more are deferred inside it. That number becomes the
  service's slots (``ServiceState.slots``), so routing neither queues work
  inside the engine nor leaves a slot idle.
- Other engines publish no slot count as JSON (vLLM's ``max_num_seqs`` and
  running/waiting gauges are in Prometheus text; Ollama's ``/api/ps`` says
  which models are loaded, which the adapter already reads): their slots are
  learned from traffic (:mod:`quorum.routing.capacity`).
A configured ``max_concurrency`` still wins over what is read here.
"""

from __future__ import annotations

from collections.abc import Mapping

from quorum.config.models import EngineKind
from quorum.engines.base import HttpGet
from quorum.errors import EngineError

MAX_SLOTS = 4096


def slots_of_props(props: object) -> int | None:
    """``/props``'s ``total_slots``, if it is a sane positive integer."""
    if not isinstance(props, Mapping):
        return None
    total = props.get("total_slots")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 < total <= MAX_SLOTS:
        return None
    return total


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
