"""One presence format for LAN and relay peers: engine kind, loaded state and limit kept."""

from __future__ import annotations

from quorum.config.models import EngineKind
from quorum.fleet import Route
from quorum.fleet.remote import peer_holders
from quorum.protocol import ModelInfo, Presence
from quorum.routing import Health, limit_of
from quorum.routing.health import REMOTE_LIMIT

MODELS = (
    ModelInfo("gemma", "llm", "embedded", engine="llama-cpp-python", loaded=True, limit=1),
    ModelInfo("qwen", "llm", "vllm", engine="vllm", loaded=None, limit=0),
    ModelInfo("new", "llm", "x", engine="an-engine-from-the-future"),
)


def test_lan_and_relay_peers_give_the_same_holders() -> None:
    lan = peer_holders("b", "node-b", Route.LAN, "http://10.0.0.2:32768", MODELS)
    relay = peer_holders("b", "node-b", Route.RELAY, "relay://b", MODELS)
    for a, r in zip(lan, relay, strict=True):
        assert (a.model, a.engine, a.loaded, a.limit) == (r.model, r.engine, r.loaded, r.limit)
    gemma, qwen, new = lan
    assert gemma.engine is EngineKind.LLAMACPP_PYTHON and gemma.loaded is True
    assert new.engine is EngineKind.OPENAI  # unknown kinds are generic
    health = Health()
    # Routing respects what the peer announced, not a generic engine's default (8).
    assert limit_of(health, gemma) == 1
    assert limit_of(health, qwen) == REMOTE_LIMIT


def test_presence_carries_the_fields_through_the_wire() -> None:
    presence = Presence("b", MODELS, name="node-b")
    assert Presence.decode(presence.encode()).models == MODELS
