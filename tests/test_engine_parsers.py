"""Pure parsers of each engine's model listing, on payloads shaped as the engines send them."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.config import EngineKind, ServiceType
from quorum.engines import ollama, openai_compat
from quorum.engines.base import ModelEntry, root_url
from quorum.errors import EngineError

OLLAMA_TAGS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        },
        {
            "name": "nomic-embed-text:latest",
            "model": "nomic-embed-text:latest",
            "size": 274302450,
            "digest": "0a109f422b47",
            "details": {"format": "gguf", "family": "nomic-bert", "families": ["nomic-bert"]},
        },
    ]
}
OLLAMA_PS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "size": 5137025024,
            "digest": "a80c4f17acd5",
            "details": {"family": "llama"},
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "size_vram": 5137025024,
        }
    ]
}


def test_ollama_tags_ps_and_embedding_family() -> None:
    got = ollama.parse_models(OLLAMA_TAGS, OLLAMA_PS, ServiceType.LLM)
    assert got == (
        ModelEntry("llama3.2:latest", "llama3.2:latest", ServiceType.LLM, True),
        ModelEntry(
            "nomic-embed-text:latest", "nomic-embed-text:latest", ServiceType.EMBEDDING, False
        ),
    )


def test_ollama_without_ps_leaves_loaded_unknown() -> None:
    got = ollama.parse_models(OLLAMA_TAGS, None, ServiceType.LLM)
    assert {m.loaded for m in got} == {None}


@pytest.mark.parametrize("bad", [None, [], {"models": "x"}, {"nope": []}])
def test_ollama_bad_listing(bad: Any) -> None:
    with pytest.raises(EngineError):
        ollama.parse_models(bad, None, ServiceType.LLM)


def test_llamacpp_path_ids_become_file_stems() -> None:
    listing = {
        "object": "list",
        "data": [
            {
                "id": "/models/gemma-3-270m-Q4_K_M.gguf",
                "object": "model",
                "created": 1735142223,
                "owned_by": "llamacpp",
                "meta": {"vocab_type": 2, "n_vocab": 262144},
            }
        ],
    }
    (entry,) = openai_compat.parse_models(listing, EngineKind.LLAMACPP, ServiceType.LLM)
    assert entry.name == "gemma-3-270m-Q4_K_M"
    assert entry.upstream == "/models/gemma-3-270m-Q4_K_M.gguf"


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("my-alias", "my-alias"),
        ("C:\\models\\qwen.gguf", "qwen"),
        ("plain.gguf", "plain"),
        ("org/repo", "org/repo"),
        ("/srv/models/model-q8", "model-q8"),
    ],
)
def test_llamacpp_names(model_id: str, name: str) -> None:
    assert openai_compat.llamacpp_name(model_id) == name


def test_vllm_ids_kept() -> None:
    listing = {
        "object": "list",
        "data": [
            {
                "id": "Qwen/Qwen3-30B-A3B",
                "object": "model",
                "created": 1,
                "owned_by": "vllm",
                "root": "Qwen/Qwen3-30B-A3B",
                "parent": None,
                "max_model_len": 32768,
            }
        ],
    }
    (entry,) = openai_compat.parse_models(listing, EngineKind.VLLM, ServiceType.STT)
    assert (entry.name, entry.type, entry.loaded) == ("Qwen/Qwen3-30B-A3B", ServiceType.STT, None)


def test_lmstudio_rest_types_and_state() -> None:
    listing = {
        "object": "list",
        "data": [
            {
                "id": "qwen2-vl-7b-instruct",
                "object": "model",
                "type": "vlm",
                "publisher": "mlx-community",
                "arch": "qwen2_vl",
                "compatibility_type": "mlx",
                "quantization": "4bit",
                "state": "not-loaded",
                "max_context_length": 32768,
            },
            {
                "id": "text-embedding-nomic-embed-text-v1.5",
                "object": "model",
                "type": "embeddings",
                "state": "loaded",
            },
        ],
    }
    vlm, emb = openai_compat.parse_lmstudio(listing, ServiceType.LLM)
    assert (vlm.type, vlm.loaded) == (ServiceType.LLM, False)
    assert (emb.type, emb.loaded) == (ServiceType.EMBEDDING, True)


def test_root_url() -> None:
    assert root_url("http://h:1/v1/") == "http://h:1"
    assert root_url("http://h:1") == "http://h:1"
    assert root_url("https://h/prefix/v1") == "https://h/prefix"
