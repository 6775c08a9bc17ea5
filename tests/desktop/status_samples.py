"""Status JSON documents as ``/quorum/v1/status`` answers them, for the tray's pure tests."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "node": {
        "id": "a" * 32,
        "name": "studio",
        "version": "0.1.0",
        "url": "http://127.0.0.1:32768/v1",
        "bind": "0.0.0.0",
        "started_at": 1700000000.0,
        "uptime_s": 12.5,
        "ready": True,
    },
    "cluster": {"joined": True, "fingerprint": "f" * 16},
    "relay": {"url": None, "connected": False},
    "services": [
        {
            "name": "ollama",
            "type": "llm",
            "engine": "ollama",
            "url": "http://127.0.0.1:11434",
            "up": True,
            "detected": True,
            "error": None,
            "features": [],
            "models": [
                {"id": "qwen3:0.6b", "type": "llm", "loaded": True},
                {"id": "llama3.2:1b", "type": "llm", "loaded": False},
            ],
        },
        {
            "name": "vllm",
            "type": "llm",
            "engine": "vllm",
            "url": "http://127.0.0.1:8000",
            "up": False,
            "detected": False,
            "error": "connection refused",
            "features": [],
            "models": [{"id": "Qwen/Qwen3-30B-A3B", "type": "llm", "loaded": None}],
        },
    ],
    "models": [],
    "peers": [],
    "recent": [],
}

PEER_B = {
    "node_id": "b" * 32,
    "name": "laptop",
    "addresses": ["192.168.1.20"],
    "port": 32768,
    "online": True,
    "last_answer_age_s": 3.0,
    "models": ["gemma-3-270m"],
}
PEER_C = {**PEER_B, "node_id": "c" * 32, "name": "gpu-box", "addresses": ["192.168.1.30"]}


def status(**over: Any) -> dict[str, Any]:
    """A deep copy of :data:`BASE` with top-level keys replaced."""
    doc = copy.deepcopy(BASE)
    doc.update(copy.deepcopy(over))
    return doc


def two_peers() -> dict[str, Any]:
    return status(peers=[PEER_B, PEER_C])
