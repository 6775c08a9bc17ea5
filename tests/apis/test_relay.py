"""Every foreign API through the relay: node B, which holds nothing, reaches node A's engines
through a real relay process (route ``relay``), and apps reach them from outside through the
relay's public ``/v1`` with an API key. A key limited to one model is refused another model
in every API, at the relay and at a node that checks keys.

Node A fronts a chat-only fake vLLM (translated there), a fake vLLM that serves Responses
and Messages natively, and a fake Ollama: what B passes on is the client's request, and
what A's engines receive proves where it was translated.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from quorum.app import Node
from tests.apis.helpers import LOOKUP, Wire, anthropic_client, ollama_client, openai_client
from tests.fakes import FakeOllama, FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

CHAT_ONLY = "Qwen/Qwen3-0.6B"
NATIVE = "native-model"
OLLAMA = "llama3.2:1b"
RESPONSES_TOOL: Any = {"type": "function", "name": "lookup", "parameters": LOOKUP}
MESSAGES_TOOL: Any = {"name": "lookup", "input_schema": LOOKUP}


def relayed(node: Node, token: str, model: str) -> bool:
    """Whether ``node`` lists ``model`` with a holder reached through the relay."""
    request = urllib.request.Request(
        node.url + "/quorum/v1/status", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout(5)) as resp:
        models = json.load(resp)["models"]
    found = [m["quorum"]["holders"] for m in models if m["id"] == model]
    return any(h["route"] == "relay" for h in (found[0] if found else ()))


def new_key(data: Path, *extra: str) -> str:
    made = json.loads(relay_cli(data, "key", "create", "--cluster", "home", *extra, "--json"))
    return str(made["key"])


class World:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg, self.tmp = bg, tmp
        self.data = tmp / "relay"
        self.data.mkdir()
        self.token = create_cluster(self.data, "home")
        self.relay = Relay(self.data).start()
        self.chat_only = FakeVLLM(models=[CHAT_ONLY], chunks=4)
        self.native = FakeVLLM(models=[NATIVE], native_apis=("responses", "messages"))
        self.ollama = FakeOllama(models=[OLLAMA])
        self.fakes = [self.chat_only, self.native, self.ollama]
        urls = [bg.run(f.start()) for f in self.fakes]
        self.nodes: list[Node] = []
        self.a = self.node(
            "node-a",
            [
                {"name": "chat-only", "url": urls[0]},
                {"name": "native", "url": urls[1], "features": ["responses", "messages"]},
                {"name": "ollama", "url": urls[2], "engine": "ollama"},
            ],
        )
        self.b = self.node("node-b", [])
        self.key = new_key(self.data, "--name", "apps")
        self.limited = new_key(self.data, "--name", "one-model", "--models", CHAT_ONLY)
        self.keyed = self.node("node-keyed", [], node={"loopback_trusted": False})

    def node(self, name: str, services: list[dict[str, Any]], **over: Any) -> Node:
        config = node_config(
            self.tmp / name,
            node={"name": name, **over.pop("node", {})},
            cluster={"token": self.token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=services,
            **over,
        )
        made = self.bg.run(start_node(config))
        self.nodes.append(made)
        return made

    def close(self) -> None:
        for node in self.nodes:
            self.bg.run(node.stop())
        for fake in self.fakes:
            self.bg.run(fake.stop())
        self.relay.kill()


@pytest.fixture(scope="module")
def world(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(bg, tmp_path_factory.mktemp("apis-relay"))
    try:
        for node in (w.b, w.keyed):
            for model in (CHAT_ONLY, NATIVE, OLLAMA):
                wait_until(
                    lambda n=node, m=model: relayed(n, w.token, m), 15, f"{model} at {node.url}"
                )
        yield w
    finally:
        w.close()


def test_responses_through_a_peer_translated_and_native(world: World, wire: Wire) -> None:
    client = openai_client(world.b.url + "/v1", wire)
    raw = client.responses.with_raw_response.create(model=CHAT_ONLY, input="over the relay")
    assert raw.parse().output_text == "You said: over the relay"
    assert (raw.headers["x-quorum-route"], raw.headers["x-quorum-node"]) == ("relay", "node-a")
    assert raw.headers["x-quorum-translated"].startswith("responses")

    with client.responses.stream(model=CHAT_ONLY, input="a b", tools=[RESPONSES_TOOL]) as s:
        done = s.get_final_response()
    (call,) = [item for item in done.output if item.type == "function_call"]
    history: Any = [
        {"role": "user", "content": "a b"},
        {"type": "function_call", "call_id": call.call_id, "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call.call_id, "output": "found"},
    ]
    with client.responses.stream(model=CHAT_ONLY, input=history, tools=[RESPONSES_TOOL]) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "The tool said: found" and len(deltas) > 1

    native = client.responses.with_raw_response.create(model=NATIVE, input="as is")
    assert native.parse().output_text == "You said: as is"
    assert "x-quorum-translated" not in native.headers
    assert world.native.requests_to("/v1/responses")[-1].body == wire.to("/v1/responses")[-1].body


def test_messages_through_a_peer_translated_and_native(world: World, wire: Wire) -> None:
    client = anthropic_client(world.b.url, wire)
    for model in (CHAT_ONLY, NATIVE):
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.headers["x-quorum-route"] == "relay"
        assert raw.parse().content[0].text == "You said: hello"  # type: ignore[union-attr]
        with client.messages.stream(
            model=model,
            max_tokens=32,
            messages=[{"role": "user", "content": "weather"}],
            tools=[MESSAGES_TOOL],
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"
        assert final.content[0].input == {"query": "weather"}  # type: ignore[union-attr]
    got = world.native.requests_to("/v1/messages")
    assert [g.body for g in got[-2:]] == [s.body for s in wire.to("/v1/messages")[-2:]]
    assert not any("x-api-key" in g.headers for g in got)


def test_ollama_api_through_a_peer(world: World, wire: Wire) -> None:
    client = ollama_client(world.b.url, wire)
    assert {m.model for m in client.list().models} >= {CHAT_ONLY, NATIVE, OLLAMA}
    assert client.show(OLLAMA).details is not None
    for model in (CHAT_ONLY, OLLAMA):
        hi: Any = [{"role": "user", "content": "hi there"}]
        parts = list(client.chat(model=model, messages=hi, stream=True))
        assert "".join(p.message.content or "" for p in parts) == "You said: hi there"
        assert parts[-1].done and parts[-1].eval_count
        whole = client.chat(model=model, messages=hi, stream=False)
        assert whole.message.content == "You said: hi there"
        assert client.generate(model=model, prompt="go", stream=False).response == "You said: go"
    assert len(client.embed(model=OLLAMA, input=["x", "y"]).embeddings) == 2
    native = [r for r in world.ollama.requests if r.method == "POST"]
    assert [r.path for r in native[-4:]] == [
        "/api/chat",
        "/api/chat",
        "/api/generate",
        "/api/embed",
    ]
    sent = [s for s in wire.sent if s.path.startswith("/api/") and s.method == "POST"]
    assert [r.body for r in native[-4:]] == [s.body for s in sent[-4:]]


def test_public_relay_responses_and_messages_with_a_key(world: World, wire: Wire) -> None:
    client = openai_client(world.relay.http + "/v1", wire, api_key=world.key)
    raw = client.responses.with_raw_response.create(model=CHAT_ONLY, input="from afar")
    assert raw.parse().output_text == "You said: from afar"
    assert (raw.headers["x-quorum-route"], raw.headers["x-quorum-node"]) == ("relay", "node-a")
    with client.responses.stream(model=NATIVE, input="one two three") as stream:
        assert stream.get_final_response().output_text == "You said: one two three"

    claude = anthropic_client(world.relay.http, wire, key=world.key, bearer=True)
    message = claude.messages.create(
        model=CHAT_ONLY, max_tokens=16, messages=[{"role": "user", "content": "far"}]
    )
    assert message.content[0].text == "You said: far"  # type: ignore[union-attr]
    with claude.messages.stream(
        model=NATIVE, max_tokens=16, messages=[{"role": "user", "content": "far away"}]
    ) as stream:
        assert "".join(stream.text_stream) == "You said: far away"

    with pytest.raises(openai.AuthenticationError):
        openai_client(world.relay.http + "/v1", wire, api_key="wrong").responses.create(
            model=CHAT_ONLY, input="x"
        )
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic_client(world.relay.http, wire, key="wrong", bearer=True).messages.create(
            model=CHAT_ONLY, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_a_limited_key_is_refused_other_models_in_every_api(world: World, wire: Wire) -> None:
    ask: Any = [{"role": "user", "content": "x"}]
    for base in (world.relay.http, world.keyed.url):
        client = openai_client(base + "/v1", wire, api_key=world.limited)
        assert client.responses.create(model=CHAT_ONLY, input="ok").output_text == "You said: ok"
        with pytest.raises(openai.PermissionDeniedError) as chat:
            client.chat.completions.create(model=NATIVE, messages=ask)
        with pytest.raises(openai.PermissionDeniedError) as responses:
            client.responses.create(model=NATIVE, input="x")
        assert chat.value.code == responses.value.code == "model_not_allowed"
        claude = anthropic_client(base, wire, key=world.limited, bearer=True)
        with pytest.raises(anthropic.PermissionDeniedError) as messages:
            claude.messages.create(model=OLLAMA, max_tokens=8, messages=ask)
        assert messages.value.body["error"]["type"] == "permission_error"  # type: ignore[index]

    local = ollama_client(
        world.keyed.url, wire, headers={"Authorization": f"Bearer {world.limited}"}
    )
    assert [m.model for m in local.list().models] == [CHAT_ONLY]
    assert local.chat(model=CHAT_ONLY, messages=ask, stream=False).message.content == "You said: x"
    for call in (
        lambda: local.chat(model=OLLAMA, messages=ask, stream=False),
        lambda: local.generate(model=NATIVE, prompt="x", stream=False),
        lambda: local.embed(model=OLLAMA, input="x"),
    ):
        with pytest.raises(ollama.ResponseError) as refused:
            call()
        assert refused.value.status_code == 403
    with pytest.raises(ollama.ResponseError) as hidden:
        local.show(OLLAMA)
    assert hidden.value.status_code == 404


def test_x_api_key_is_a_key_too(world: World, wire: Wire) -> None:
    """Claude Code and Anthropic's SDKs before 2.x send the key as ``x-api-key``: the relay
    and a node that checks keys take it as they take a Bearer key, limits included."""
    for base in (world.relay.http, world.keyed.url):
        claude = anthropic_client(base, wire, key=world.key)
        message = claude.messages.create(
            model=CHAT_ONLY, max_tokens=16, messages=[{"role": "user", "content": "keyed"}]
        )
        assert message.content[0].text == "You said: keyed"  # type: ignore[union-attr]
        assert wire.sent[-1].headers["x-api-key"] == world.key
        assert "authorization" not in wire.sent[-1].headers
        limited = anthropic_client(base, wire, key=world.limited)
        with pytest.raises(anthropic.PermissionDeniedError):
            limited.messages.create(
                model=NATIVE, max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )


def test_count_tokens_through_a_peer_and_the_public_relay(world: World, wire: Wire) -> None:
    """Node B and the relay's public /v1 pass the count on to node A, whose engines count:
    the chat-only vLLM with its /tokenize, the native one itself, Ollama in one token."""
    ask: Any = [{"role": "user", "content": "count these four"}]
    for base, key in ((world.b.url, "unused"), (world.relay.http, world.key)):
        claude = anthropic_client(base, wire, key=key, bearer=True)
        for model in (CHAT_ONLY, NATIVE, OLLAMA):
            raw = claude.messages.with_raw_response.count_tokens(model=model, messages=ask)
            assert raw.parse().input_tokens == 3
            assert (raw.headers["x-quorum-route"], raw.headers["x-quorum-node"]) == (
                "relay",
                "node-a",
            )
    assert len(world.chat_only.requests_to("/tokenize")) == 2
    assert len(world.native.requests_to("/v1/messages/count_tokens")) == 2
    one_token = [r.json() for r in world.ollama.requests_to("/v1/chat/completions")]
    assert [b["max_tokens"] for b in one_token[-2:]] == [1, 1]

    for base in (world.relay.http, world.keyed.url):
        limited = anthropic_client(base, wire, key=world.limited, bearer=True)
        assert limited.messages.count_tokens(model=CHAT_ONLY, messages=ask).input_tokens == 3
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            limited.messages.count_tokens(model=NATIVE, messages=ask)
        assert refused.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
