"""Which engine answers at a root URL.

``/v1/models`` is asked first (nearly every engine has it, and a refused
connection there means nothing is listening). Its ``owned_by`` names vLLM and
llama.cpp; Ollama and LM Studio are told apart by their own REST APIs; a
llama.cpp build without ``owned_by`` still has ``/props``. What is left is
mlx_lm.server on mlx's usual port, or a generic OpenAI-compatible server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorum.config.models import EngineKind
from quorum.engines.base import HttpGet

# llama-cpp-python's server says "me" (llama_cpp/server/app.py, ``get_models``).
_OWNED_BY = {
    "vllm": EngineKind.VLLM,
    "llamacpp": EngineKind.LLAMACPP,
    "me": EngineKind.LLAMACPP_PYTHON,
}


def owned_by(listing: Any) -> set[str]:
    if not isinstance(listing, Mapping) or not isinstance(listing.get("data"), list):
        return set()
    return {str(m.get("owned_by")) for m in listing["data"] if isinstance(m, Mapping)}


async def identify(
    get: HttpGet, root: str, headers: Mapping[str, str], hint: EngineKind | None = None
) -> EngineKind:
    """The engine at ``root``; raises ``EngineError`` when nothing answers there."""
    models = await get(f"{root}/v1/models", headers)  # raises when refused
    for owner in owned_by(models.json if models.ok else None):
        if owner in _OWNED_BY:
            return _OWNED_BY[owner]
    tags = await get(f"{root}/api/tags", headers)
    if tags.ok and isinstance(tags.json, Mapping) and isinstance(tags.json.get("models"), list):
        return EngineKind.OLLAMA
    rest = await get(f"{root}/api/v0/models", headers)
    if rest.ok and isinstance(rest.json, Mapping) and isinstance(rest.json.get("data"), list):
        return EngineKind.LMSTUDIO
    props = await get(f"{root}/props", headers)
    if props.ok and isinstance(props.json, Mapping) and "default_generation_settings" in props.json:
        return EngineKind.LLAMACPP
    if hint in (EngineKind.LLAMACPP, EngineKind.MLX):
        return EngineKind.MLX
    return hint if hint is not None else EngineKind.OPENAI
