"""OpenAI-compatible servers: LM Studio, llama.cpp server, vLLM, mlx_lm.server, others.

All of them list models at ``/v1/models``; each has a quirk:
- llama.cpp names the model by its file path unless started with ``--alias``;
  clients get the file's stem (``/m/gemma-3-270m.gguf`` -> ``gemma-3-270m``),
  and the engine, which serves one model, ignores the name anyway.
- LM Studio lists every downloaded model at ``/v1/models``; its REST API
  ``/api/v0/models`` also says which are loaded and which are embedding models.
- vLLM and mlx_lm.server list ids as served (a Hugging Face repo name, or the
  ``--served-model-name``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from quorum.config.models import EngineKind, ServiceType
from quorum.engines.base import HttpGet, ModelEntry
from quorum.errors import EngineError

_LMSTUDIO_TYPES = {"embeddings": ServiceType.EMBEDDING}


def _data(listing: Any) -> list[Mapping[str, Any]]:
    if not isinstance(listing, Mapping) or not isinstance(listing.get("data"), list):
        raise EngineError("the model list has no 'data' array")
    return [m for m in listing["data"] if isinstance(m, Mapping) and m.get("id")]


def llamacpp_name(model_id: str) -> str:
    """The client-facing name of a llama.cpp model id (a path unless aliased)."""
    if (
        model_id.startswith(("/", "~", "."))
        or "\\" in model_id
        or model_id.lower().endswith(".gguf")
    ):
        base = posixpath.basename(model_id.replace("\\", "/"))
        stem = base[: -len(".gguf")] if base.lower().endswith(".gguf") else base
        return stem or model_id
    return model_id


def parse_models(listing: Any, engine: EngineKind, default: ServiceType) -> tuple[ModelEntry, ...]:
    entries = []
    for m in _data(listing):
        upstream = str(m["id"])
        name = llamacpp_name(upstream) if engine is EngineKind.LLAMACPP else upstream
        entries.append(ModelEntry(name=name, upstream=upstream, type=default))
    return tuple(entries)


def parse_lmstudio(listing: Any, default: ServiceType) -> tuple[ModelEntry, ...]:
    """LM Studio's ``/api/v0/models``: adds type and loaded state."""
    return tuple(
        ModelEntry(
            name=str(m["id"]),
            upstream=str(m["id"]),
            type=_LMSTUDIO_TYPES.get(str(m.get("type")), default),
            loaded=(m["state"] == "loaded") if isinstance(m.get("state"), str) else None,
        )
        for m in _data(listing)
    )


async def list_models(
    get: HttpGet,
    root: str,
    headers: Mapping[str, str],
    engine: EngineKind,
    default: ServiceType,
) -> tuple[ModelEntry, ...]:
    if engine is EngineKind.LMSTUDIO:
        rest = await get(f"{root}/api/v0/models", headers)
        if rest.ok:
            return parse_lmstudio(rest.json, default)
    resp = await get(f"{root}/v1/models", headers)
    if not resp.ok:
        raise EngineError(f"{engine.value} answered {resp.status} to /v1/models")
    return parse_models(resp.json, engine, default)
