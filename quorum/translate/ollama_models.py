"""The cluster's models as Ollama lists them: ``/api/tags``, ``/api/ps``,
``/api/show`` and ``/api/version``, built from plain values.

A model is a ``(name, type)`` pair, the type being the service type that holds
it (``llm``, ``embedding``, ...). Only ``llm`` and ``embedding`` models are
Ollama models; the others (speech, images) are left out of the lists. What
Ollama would read from a GGUF file (family, parameter size, quantization) is
guessed from the name where it says so (``Qwen/Qwen3-30B-A3B-Q4_K_M``) and
left empty otherwise; sizes are 0, since the bytes live on other machines,
and digests are a hash of the name, stable across calls and nodes.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence

from .common import JsonObject
from .ollama import rfc3339

OLLAMA_VERSION = "0.12.0"  # recent enough for every client that checks
MODEL_TYPES = ("llm", "embedding")
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)[bB](?![A-Za-z])")
_QUANT = re.compile(
    r"(?i)(?<![A-Za-z0-9])(i?q\d(?:_[a-z0-9]+)*|bf16|fp16|f16|f32|fp8)(?![A-Za-z0-9])"
)
_FAMILY = re.compile(r"[A-Za-z]+\d*(?:\.\d+)?")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def details(name: str) -> JsonObject:
    """What Ollama calls a model's details, as far as its name tells."""
    last = name.rsplit("/", 1)[-1]
    family = _FAMILY.match(last.split(":", 1)[0])
    size = _SIZE.search(last)
    quant = _QUANT.search(name)
    return {
        "parent_model": "",
        "format": "gguf" if "gguf" in name.lower() or quant else "",
        "family": family.group(0).lower() if family else "",
        "families": [family.group(0).lower()] if family else None,
        "parameter_size": f"{size.group(1)}B" if size else "",
        "quantization_level": quant.group(1).upper() if quant else "",
    }


def _entries(models: Iterable[tuple[str, str]]) -> list[str]:
    seen: dict[str, None] = {}
    for name, kind in models:
        if kind in MODEL_TYPES:
            seen.setdefault(name)
    return sorted(seen)


def tags(models: Iterable[tuple[str, str]], *, modified_ns: int | None = None) -> JsonObject:
    """``GET /api/tags``: every model, once, by name."""
    modified = rfc3339(time.time_ns() if modified_ns is None else modified_ns)
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": modified,
                "size": 0,
                "digest": _digest(name),
                "details": details(name),
            }
            for name in _entries(models)
        ]
    }


def ps(
    models: Iterable[tuple[str, str]],
    *,
    expires_ns: int | None = None,
    context_length: int | None = None,
) -> JsonObject:
    """``GET /api/ps``: the models loaded now (the caller passes those)."""
    expires = rfc3339(time.time_ns() + 300 * 10**9 if expires_ns is None else expires_ns)
    running = []
    for name in _entries(models):
        entry: JsonObject = {
            "name": name,
            "model": name,
            "size": 0,
            "digest": _digest(name),
            "details": details(name),
            "expires_at": expires,
            "size_vram": 0,
        }
        if context_length is not None:
            entry["context_length"] = context_length
        running.append(entry)
    return {"models": running}


def default_capabilities(kind: str) -> list[str]:
    return ["embedding"] if kind == "embedding" else ["completion", "tools"]


def show(
    name: str,
    kind: str,
    *,
    capabilities: Sequence[str] | None = None,
    modified_ns: int | None = None,
) -> JsonObject:
    """``POST /api/show`` for one model (the caller has checked that it exists)."""
    info = details(name)
    return {
        "license": "",
        "modelfile": f"# Served by Quorum\nFROM {name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": info,
        "model_info": {"general.architecture": info["family"], "general.basename": name},
        "capabilities": list(
            capabilities if capabilities is not None else default_capabilities(kind)
        ),
        "modified_at": rfc3339(time.time_ns() if modified_ns is None else modified_ns),
    }


def version(value: str = OLLAMA_VERSION) -> JsonObject:
    """``GET /api/version``."""
    return {"version": value}
