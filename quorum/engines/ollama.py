"""Ollama: models from ``/api/tags``, loaded ones from ``/api/ps``, inference on ``/v1``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorum.config.models import ServiceType
from quorum.engines.base import HttpGet, ModelEntry
from quorum.errors import EngineError

# Model families Ollama reports for embedding-only models (they cannot chat).
EMBEDDING_FAMILIES = frozenset({"bert", "nomic-bert", "xlm-roberta", "jina-bert-v2"})


def _names(listing: Any) -> list[Mapping[str, Any]]:
    if not isinstance(listing, Mapping) or not isinstance(listing.get("models"), list):
        raise EngineError("Ollama's model list has no 'models' array")
    return [m for m in listing["models"] if isinstance(m, Mapping) and m.get("name")]


def model_type(entry: Mapping[str, Any], default: ServiceType) -> ServiceType:
    details = entry.get("details")
    if isinstance(details, Mapping):
        families = {str(details.get("family", ""))} | {
            str(f) for f in details.get("families") or () if f
        }
        if families & EMBEDDING_FAMILIES:
            return ServiceType.EMBEDDING
    return default


def parse_models(tags: Any, ps: Any, default: ServiceType) -> tuple[ModelEntry, ...]:
    """``/api/tags`` (+ ``/api/ps`` when it answered) -> entries, names as Ollama gives them."""
    loaded: set[str] | None = None
    if ps is not None:
        loaded = {str(m["name"]) for m in _names(ps)}
    return tuple(
        ModelEntry(
            name=str(m["name"]),
            upstream=str(m["name"]),
            type=model_type(m, default),
            loaded=None if loaded is None else str(m["name"]) in loaded,
        )
        for m in _names(tags)
    )


async def list_models(
    get: HttpGet, root: str, headers: Mapping[str, str], default: ServiceType
) -> tuple[ModelEntry, ...]:
    tags = await get(f"{root}/api/tags", headers)
    if not tags.ok:
        raise EngineError(f"Ollama answered {tags.status} to /api/tags")
    ps = await get(f"{root}/api/ps", headers)
    return parse_models(tags.json, ps.json if ps.ok else None, default)
