"""Two nodes that cannot see each other over mDNS, joined by a real relay process."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from quorum.app import Node
from tests.fakes import FakeTTS, FakeVLLM, FakeWhisper, LoopThread, make_wav, speech_bytes
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster

MODEL = "Qwen/Qwen3-0.6B"


def status(node: Node) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "/quorum/v1/status", timeout=timeout(5)) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout(seconds):.0f} s")


def holders(node: Node, model: str) -> list[dict[str, Any]]:
    for m in status(node)["models"]:
        if m["id"] == model:
            return list(m["quorum"]["holders"])
    return []


class Pair:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg = bg
        self.tmp = tmp
        (tmp / "relay").mkdir()
        self.token = create_cluster(tmp / "relay", "home")
        self.relay = Relay(tmp / "relay").start()
        self.vllm = FakeVLLM(chunks=6, chunk_delay=0.02)
        self.asr = FakeWhisper()
        self.tts = FakeTTS()
        urls = [bg.run(f.start()) for f in (self.vllm, self.asr, self.tts)]
        self.a = self.node(
            "node-a",
            [
                {"name": "vllm", "url": urls[0]},
                {"name": "asr", "url": urls[1], "type": "stt"},
                {"name": "tts", "url": urls[2], "type": "tts"},
            ],
        )
        self.b = self.node("node-b", [])

    def node(self, name: str, services: list[dict[str, Any]], token: str | None = None) -> Node:
        config = node_config(
            self.tmp / name,
            node={"name": name},
            cluster={"token": token or self.token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=services,
        )
        return self.bg.run(start_node(config))

    def close(self) -> None:
        for node in (self.a, self.b):
            self.bg.run(node.stop())
        for fake in (self.vllm, self.asr, self.tts):
            self.bg.run(fake.stop())
        self.relay.kill()


@pytest.fixture(scope="module")
def pair(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(bg, tmp_path_factory.mktemp("relay-pair"))
    try:
        wait_until(
            lambda: any(h["route"] == "relay" for h in holders(p.b, MODEL)), 10, "A's model at B"
        )
        yield p
    finally:
        p.close()


def client(node: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30))


def test_models_of_the_other_network_are_listed_via_relay(pair: Pair) -> None:
    (h,) = holders(pair.b, MODEL)
    assert (h["node"], h["route"]) == ("node-a", "relay")
    assert status(pair.b)["relay"]["connected"] is True


def test_chat_and_stream_through_the_relay(pair: Pair) -> None:
    with client(pair.b) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "over the relay"}]
        )
        assert raw.parse().choices[0].message.content == "You said: over the relay"
        assert raw.headers["x-quorum-route"] == "relay"
        assert raw.headers["x-quorum-node"] == "node-a"
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a b c d e f"}], stream=True
        )
        with stream:
            pieces = [ch.choices[0].delta.content or "" for ch in stream if ch.choices]
    assert "".join(pieces) == "You said: a b c d e f"
    assert len([p for p in pieces if p]) > 1


def test_large_upload_and_binary_download_cross_intact(pair: Pair) -> None:
    wav = make_wav("twenty five megabytes", seconds=800.0)
    assert len(wav) > 25_000_000
    with client(pair.b) as c:
        text = c.audio.transcriptions.create(
            model="whisper-1", file=("big.wav", io.BytesIO(wav), "audio/wav")
        )
        assert text.text == "twenty five megabytes"
        with c.audio.speech.with_streaming_response.create(
            model="tts-1", voice="echo", input="binary crosses", response_format="wav"
        ) as resp:
            audio = resp.read()
    assert audio == speech_bytes("binary crosses", "echo", "wav")
    (sent,) = [
        r for r in pair.asr.requests_to("/v1/audio/transcriptions") if len(r.body) > 25_000_000
    ]
    assert wav in sent.body


def test_200_concurrent_streams(pair: Pair, bg: LoopThread) -> None:
    async def many() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=pair.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(60)
        ) as c:

            async def one(i: int) -> str:
                stream = await c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"n{i}"}], stream=True
                )
                return "".join(
                    [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
                )

            return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(many())
    assert results == [f"You said: n{i}" for i in range(200)]


def test_wrong_token_is_refused_before_the_upgrade(pair: Pair) -> None:
    async def attempt(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(pair.relay.url, headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(attempt("qc_wrong-token-000000000000")) == 401
    assert asyncio.run(attempt(None)) == 401
    assert "qc_wrong" not in pair.relay.log.read_text()
