"""One presence format for LAN and relay peers: engine kind, loaded state and limit kept;
nodes of older and newer releases read each other's model lists."""

from __future__ import annotations

import json

import pytest

from quorum.config.models import EngineKind
from quorum.discovery.peers import parse_listing
from quorum.errors import RemoteProtocolError
from quorum.fleet import Load, Route
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


# A relay presence as a node of the release before the health snapshot sent it (engine,
# loaded state and limit, no load), and as the first relay release sent it (no engine).
BEFORE_LOAD = (
    b'{"node_id":"old","models":[{"id":"qwen","type":"llm","service":"vllm","features":[],'
    b'"engine":"vllm","loaded":true,"limit":4},{"id":"whisper","type":"stt","service":"asr",'
    b'"features":["timestamps"]}],"online":true,"age_ms":0,"name":"old-node"}'
)
# A newer node's listing: fields this release does not know, beside the ones it does.
FUTURE_MODEL: dict[str, object] = {
    "id": "qwen",
    "type": "llm",
    "service": "vllm",
    "features": [],
    "engine": "vllm",
    "loaded": True,
    "limit": 8,
    "in_flight": 3,
    "queued": 1,
    "service_ms": 420,
    "wait_ms": 0,
    "tokens_per_s": 41.5,
    "kv_cache": {"used": 0.4},
    "load_ms": 9000,
}
FUTURE = {"node": {"id": "new", "name": "new-node"}, "models": [FUTURE_MODEL]}


def test_a_presence_from_before_the_load_fields_decodes_with_them_unset() -> None:
    presence = Presence.decode(BEFORE_LOAD)
    qwen, whisper = presence.models
    assert (qwen.engine, qwen.loaded, qwen.limit, qwen.in_flight) == ("vllm", True, 4, None)
    assert (whisper.engine, whisper.features, whisper.service_ms) == ("", ("timestamps",), None)
    holders = peer_holders("old", "old-node", Route.RELAY, "relay://old", presence.models)
    assert [h.load for h in holders] == [None, None]  # no snapshot: this node's own count rules
    assert holders[0].limit == 4 and holders[1].engine is EngineKind.OPENAI


def test_unknown_model_fields_of_a_newer_node_are_dropped() -> None:
    listing = parse_listing(FUTURE)
    (qwen,) = listing.models
    assert qwen == ModelInfo(
        "qwen",
        "llm",
        "vllm",
        engine="vllm",
        loaded=True,
        limit=8,
        in_flight=3,
        queued=1,
        service_ms=420,
        wait_ms=0,
    )
    # Through a relay too: the presence frame itself stays strict, its models do not.
    frame = json.dumps({"node_id": "new", "models": [FUTURE_MODEL], "name": "new-node"})
    assert Presence.decode(frame.encode()).models == (qwen,)
    (holder,) = peer_holders("new", "new-node", Route.LAN, "https://10.0.0.3:32768", (qwen,))
    assert holder.load == Load(3, 1, 0.42)
    with pytest.raises(RemoteProtocolError, match="unknown keys"):
        Presence.decode(json.dumps({"node_id": "new", "models": [], "extra": 1}).encode())


def test_a_known_field_with_a_bad_value_is_still_refused() -> None:
    bad = dict(FUTURE_MODEL, in_flight=-1)
    with pytest.raises(RemoteProtocolError, match="in_flight"):
        ModelInfo.from_json(bad)
