"""The relay's public /v1 and a node read a body with the same parser: an ambiguous body is the
same 400 from both, and a key limited to one model cannot reach another (issue 14, finding 2)."""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.app import Node
from tests.api.forms import CONTENT_TYPE, audio, form, reference_models, text
from tests.fakes import FakeVLLM, FakeWhisper, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster
from tests.relay.test_public_v1 import new_key
from tests.relay.test_relay_e2e import wait_until
from tests.test_api_edges import SMUGGLED, TWO_MODELS, openai_error, send

TRANSCRIBE = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"


class World:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg = bg
        data = tmp / "relay"
        data.mkdir()
        token = create_cluster(data, "home")
        self.relay = Relay(data).start()
        self.asr = FakeWhisper(models=["whisper-1"])
        self.secret = FakeWhisper(models=["whisper-secret"])
        self.vllm = FakeVLLM(models=["m"])
        self.fakes = (self.asr, self.secret, self.vllm)
        urls = [bg.run(f.start()) for f in self.fakes]
        config = node_config(
            tmp / "node",
            node={"name": "home-a"},
            cluster={"token": token},
            relay={"url": self.relay.url},
            services=[
                {"name": "asr", "url": urls[0], "type": "stt"},
                {"name": "secret", "url": urls[1], "type": "stt"},
                {"name": "vllm", "url": urls[2]},
            ],
        )
        self.node: Node = bg.run(start_node(config))
        self.key = new_key(data, "home", "--models", "whisper-1,m")

    def relay_post(
        self, path: str, body: bytes, content_type: str, **headers: str
    ) -> tuple[int, dict[str, object], dict[str, str]]:
        auth = {"Authorization": f"Bearer {self.key}"}
        return send(self.relay.http + path, body, content_type, **auth, **headers)

    def close(self) -> None:
        self.bg.run(self.node.stop())
        for fake in self.fakes:
            self.bg.run(fake.stop())
        self.relay.kill()


@pytest.fixture(scope="module")
def world(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(bg, tmp_path_factory.mktemp("public-bodies"))
    try:

        def ready() -> bool:
            request = urllib.request.Request(
                w.relay.http + "/v1/models", headers={"Authorization": f"Bearer {w.key}"}
            )
            with urllib.request.urlopen(request, timeout=timeout(10)) as resp:
                listed = {m["id"] for m in json.load(resp)["data"]}
            return listed == {"whisper-1", "m"}

        wait_until(ready, 15, "the node's models at the relay")
        yield w
    finally:
        w.close()


def test_a_smuggled_model_name_reaches_no_other_model(world: World) -> None:
    status, _, headers = world.relay_post(TRANSCRIBE, SMUGGLED, CONTENT_TYPE)
    assert status == 200
    assert headers["X-Quorum-Route"] == "relay"
    (sent,) = world.asr.requests_to(TRANSCRIBE)  # the key's model, at its holder
    assert reference_models(sent.body, sent.headers["Content-Type"]) == ["whisper-1"]
    assert not world.secret.requests_to(TRANSCRIBE)


@pytest.mark.parametrize(
    "body",
    [
        TWO_MODELS,
        form(text("model", "whisper-1", "Content-Transfer-Encoding: base64"), audio()),
        form(text("model", "whisper-1"), audio(data=b"x--qb-7f3a\r\n")),
    ],
    ids=["two model fields", "a transfer-encoded model", "the boundary inside a file"],
)
def test_an_ambiguous_body_is_the_same_400_from_relay_and_node(world: World, body: bytes) -> None:
    before = len(world.asr.requests_to(TRANSCRIBE))
    relay = world.relay_post(TRANSCRIBE, body, CONTENT_TYPE)
    node = send(world.node.url + TRANSCRIBE, body, CONTENT_TYPE)
    assert relay[0] == node[0] == 400
    assert relay[1] == node[1]
    openai_error(relay[1])
    assert len(world.asr.requests_to(TRANSCRIBE)) == before
    assert not world.secret.requests_to(TRANSCRIBE)


def test_deep_or_compressed_bodies_are_a_400_at_the_relay(world: World) -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, payload, _ = world.relay_post(CHAT, deep, "application/json")
    assert status == 400 and "nests deeper" in str(openai_error(payload)["message"])
    plain = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for coding, body in (("bogus", plain), ("gzip", gzip.compress(plain))):
        status, payload, _ = world.relay_post(
            CHAT, body, "application/json", Content_Encoding=coding
        )
        assert status == 400
        assert openai_error(payload)["code"] == "unsupported_content_encoding"
    assert not world.vllm.requests_to(CHAT)
    status, _, _ = world.relay_post(CHAT, plain, "application/json")
    assert status == 200


def test_errors_of_the_anthropic_paths_have_anthropics_shape(world: World) -> None:
    status, payload, _ = world.relay_post("/v1/messages/no-such-thing", b"{}", "application/json")
    assert status == 404
    assert payload["type"] == "error"
    error = payload["error"]
    assert isinstance(error, dict) and error["type"] == "not_found_error"
    assert "Unknown path" in error["message"]
