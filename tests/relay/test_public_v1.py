"""The relay's public /v1 with the openai SDK from outside any node, against real nodes
with fake engines, in two clusters on one relay process."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from quorum.app import Node
from tests.fakes import (
    FakeTTS,
    FakeVLLM,
    FakeWhisper,
    LoopThread,
    make_wav,
    speech_bytes,
)
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

MODEL = "Qwen/Qwen3-0.6B"


def cli(data: Path, *args: str) -> Any:
    return json.loads(relay_cli(data, *args, "--json"))


def new_key(data: Path, cluster: str, *extra: str) -> str:
    return str(cli(data, "key", "create", "--cluster", cluster, *extra)["key"])


def api(relay: Relay, admin: str, path: str) -> Any:
    request = urllib.request.Request(
        relay.http + path, headers={"Authorization": f"Bearer {admin}"}
    )
    with urllib.request.urlopen(request, timeout=timeout(10)) as resp:
        return json.load(resp)


class World:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg, self.tmp = bg, tmp
        self.data = tmp / "relay"
        self.data.mkdir()
        self.home_token = create_cluster(self.data, "home")
        self.away_token = create_cluster(self.data, "away")
        self.admin = relay_cli(self.data, "admin-token").strip()
        self.relay = Relay(self.data).start()
        self.vllm = FakeVLLM(models=[MODEL], chunks=6, chunk_delay=0.02)
        self.asr, self.tts = FakeWhisper(), FakeTTS()
        self.away_vllm = FakeVLLM(models=[MODEL, "away-only"])
        self.fakes = [self.vllm, self.asr, self.tts, self.away_vllm]
        urls = [bg.run(f.start()) for f in self.fakes]
        self.nodes: list[Node] = []
        self.node(
            "home-a",
            self.home_token,
            [
                {"name": "vllm", "url": urls[0]},
                {"name": "asr", "url": urls[1], "type": "stt"},
                {"name": "tts", "url": urls[2], "type": "tts"},
            ],
        )
        self.node("away-a", self.away_token, [{"name": "vllm", "url": urls[3]}])
        self.key = new_key(self.data, "home", "--name", "sdk")
        self.away_key = new_key(self.data, "away")

    def node(self, name: str, token: str, services: list[dict[str, Any]]) -> Node:
        config = node_config(
            self.tmp / name,
            node={"name": name},
            cluster={"token": token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=services,
        )
        made = self.bg.run(start_node(config))
        self.nodes.append(made)
        return made

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.relay.http + "/v1",
            api_key=key or self.key,
            max_retries=0,
            timeout=timeout(30),
        )

    def models(self, key: str | None = None) -> list[str]:
        with self.client(key) as c:
            return sorted(m.id for m in c.models.list())

    def close(self) -> None:
        for node in self.nodes:
            self.bg.run(node.stop())
        for fake in self.fakes:
            self.bg.run(fake.stop())
        self.relay.kill()


@pytest.fixture(scope="module")
def world(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(bg, tmp_path_factory.mktemp("public-v1"))
    try:
        wait_until(lambda: "tts-1" in w.models(), 15, "home's models at the relay")
        wait_until(lambda: "away-only" in w.models(w.away_key), 15, "away's models")
        yield w
    finally:
        w.close()


def test_chat_and_streaming_with_usage(world: World) -> None:
    with world.client() as c:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "from a phone"}]
        )
        done = raw.parse()
        assert done.choices[0].message.content == "You said: from a phone"
        assert raw.headers["x-quorum-route"] == "relay"
        assert raw.headers["x-quorum-node"] == "home-a"
        assert done.usage is not None
        started = time.monotonic()
        arrivals: list[float] = []
        pieces: list[str] = []
        stream = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a b c d e f"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic() - started)
                    pieces.append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    usage = chunk.usage
    assert "".join(pieces) == "You said: a b c d e f"
    assert len(pieces) > 1 and arrivals[0] < arrivals[-1]  # passed through, not buffered
    assert usage is not None
    expected = (
        done.usage.prompt_tokens + usage.prompt_tokens,
        done.usage.completion_tokens + usage.completion_tokens,
    )

    def recorded() -> bool:
        report = api(world.relay, world.admin, "/api/v1/usage?cluster=home&by=node")
        rows = {r["node"]: r for r in report["data"]}
        row = rows.get("home-a")
        return row is not None and (row["prompt_tokens"], row["completion_tokens"]) == expected

    wait_until(recorded, 10, "the usage of both requests in the store")


def test_multipart_upload_and_binary_answer(world: World) -> None:
    wav = make_wav("over the public relay", seconds=800.0)
    assert len(wav) > 25_000_000
    with world.client() as c:
        text = c.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", io.BytesIO(wav), "audio/wav")
        )
        assert text.text == "over the public relay"
        with c.audio.speech.with_streaming_response.create(
            model="tts-1", voice="echo", input="bytes back", response_format="wav"
        ) as resp:
            assert resp.headers["x-quorum-route"] == "relay"
            audio = resp.read()
    assert audio == speech_bytes("bytes back", "echo", "wav")
    (sent,) = world.asr.requests_to("/v1/audio/transcriptions")
    assert wav in sent.body


def test_models_are_those_of_the_keys_cluster_and_allowance(world: World) -> None:
    assert world.models() == sorted([MODEL, "tts-1", "whisper-1"])
    assert world.models(world.away_key) == sorted([MODEL, "away-only"])
    limited = new_key(world.data, "home", "--models", MODEL)
    assert world.models(limited) == [MODEL]
    with world.client(limited) as c:
        assert c.models.retrieve(MODEL).id == MODEL
        with pytest.raises(openai.PermissionDeniedError) as refused:
            c.audio.speech.create(model="tts-1", voice="echo", input="x")
        assert refused.value.status_code == 403
        assert refused.value.body["code"] == "model_not_allowed"  # type: ignore[index]


def test_openai_shaped_errors(world: World) -> None:
    with world.client() as c:
        with pytest.raises(openai.NotFoundError) as missing:
            c.chat.completions.create(
                model="away-only", messages=[{"role": "user", "content": "x"}]
            )
        assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="", messages=[])
    with world.client("qk_00000000_" + "z" * 43) as c, pytest.raises(openai.AuthenticationError):
        c.models.list()


def test_a_revoked_key_is_refused_at_once_and_an_expired_one_too(world: World) -> None:
    made = cli(world.data, "key", "create", "--cluster", "home", "--name", "short")
    with world.client(made["key"]) as c:
        assert MODEL in [m.id for m in c.models.list()]
        relay_cli(world.data, "key", "revoke", made["prefix"])
        with pytest.raises(openai.AuthenticationError) as refused:
            c.models.list()
    assert "revoked" in str(refused.value)
    expiring = cli(world.data, "key", "create", "--cluster", "home", "--expires", "1s")

    def expired() -> bool:
        keys = cli(world.data, "key", "list", "--all", "--cluster", "home")
        return any(k["id"] == expiring["id"] and k["state"] == "expired" for k in keys)

    wait_until(expired, 10, "the key's expiry")
    with world.client(expiring["key"]) as c, pytest.raises(openai.AuthenticationError) as late:
        c.models.list()
    assert "expired" in str(late.value)


def test_a_key_never_reaches_another_clusters_node(world: World) -> None:
    before = len(world.away_vllm.requests_to("/v1/chat/completions"))
    with world.client() as c:
        for _ in range(5):
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert len(world.away_vllm.requests_to("/v1/chat/completions")) == before
    with world.client(world.away_key) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "away"}]
        )
        assert raw.headers["x-quorum-node"] == "away-a"


def test_no_online_holder_is_503(world: World) -> None:
    solo = FakeVLLM(models=["solo-model"])
    url = world.bg.run(solo.start())
    try:
        node = world.node("home-solo", world.home_token, [{"name": "vllm", "url": url}])
        wait_until(lambda: "solo-model" in world.models(), 15, "the solo node's model")
        world.bg.run(node.stop())
        world.nodes.remove(node)
        wait_until(lambda: "solo-model" not in world.models(), 15, "the solo node gone")
        with world.client() as c, pytest.raises(openai.InternalServerError) as down:
            c.chat.completions.create(
                model="solo-model", messages=[{"role": "user", "content": "x"}]
            )
        assert down.value.status_code == 503
    finally:
        world.bg.run(solo.stop())


def test_no_key_or_token_in_the_relay_log(world: World) -> None:
    text = world.relay.log.read_text()
    for secret in (world.key, world.away_key, world.home_token, world.away_token, world.admin):
        assert secret not in text
        assert secret[-16:] not in text  # nor any long run of its random tail
