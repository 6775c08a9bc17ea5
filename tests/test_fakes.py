"""Tests of the fake engines themselves (tests/fakes): shapes, streaming, failure modes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes import (
    BAD_JSON,
    FakeEngine,
    FakeImages,
    FakeLlamaCpp,
    FakeLlamaCppPython,
    FakeLMStudio,
    FakeMLX,
    FakeOllama,
    FakeTTS,
    FakeVLLM,
    FakeWhisper,
    LlamaCppPythonEngine,
    LoopThread,
    ModelSpec,
    OpenAICompatEngine,
    closed_port_url,
    fake_embedding,
    inspect_audio,
    make_wav,
    parse_multipart,
    png_text,
    speech_bytes,
    split_pieces,
    transcript_for,
)
from tests.harness import timeout

PROMPT = "tell me about the quorum of engines"
EXPECTED = f"You said: {PROMPT}"
CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}]}


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking the exact framing."""
    assert text.endswith("\n\n"), repr(text[-40:])
    events = text[:-2].split("\n\n")
    payloads = []
    for event in events:
        if event.startswith(":"):
            continue  # comment
        assert event.startswith("data: ") and "\n" not in event, repr(event)
        payloads.append(event.removeprefix("data: "))
    return payloads


def chunks_of(text: str) -> list[dict[str, Any]]:
    payloads = sse_data(text)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def joined_delta(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


async def post_json(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, str, str]:
    async with session.post(url, json=body) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


# -- helpers ------------------------------------------------------------------------------


def test_split_pieces_rejoins_and_counts() -> None:
    assert split_pieces(EXPECTED, 4) == (
        "You said: tell",
        " me about",
        " the quorum",
        " of engines",
    )
    for count in range(1, 30):
        pieces = split_pieces(EXPECTED, count)
        assert "".join(pieces) == EXPECTED
        assert all(pieces) and len(pieces) == min(count, len(EXPECTED))
    assert split_pieces("ab", 5) == ("a", "b")


def test_wav_embeds_text_and_is_a_real_wav() -> None:
    wav = make_wav("héllo wörld", seconds=0.5)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    info = inspect_audio(wav)
    assert info.is_wav and info.text == "héllo wörld" and info.duration == 0.5
    assert (
        transcript_for(b"ID3 not a wav")
        == f"audio {hashlib.sha256(b'ID3 not a wav').hexdigest()[:12]}"
    )


def test_multipart_parser_keeps_binary_bytes() -> None:
    payload = bytes(range(256)) + b"\r\n--not-the-boundary\r\n" + bytes(range(255, -1, -1))
    form = aiohttp.FormData()
    form.add_field("file", payload, filename="x.bin", content_type="application/octet-stream")
    form.add_field("model", "m")
    body = form()
    parts = parse_multipart(body.content_type, b"".join(_payload_bytes(body)))
    assert [(p.name, p.filename) for p in parts] == [("file", "x.bin"), ("model", None)]
    assert parts[0].data == payload and parts[1].text() == "m"


def _payload_bytes(payload: Any) -> list[bytes]:
    out: list[bytes] = []

    class Sink:
        async def write(self, data: bytes) -> None:
            out.append(bytes(data))

    asyncio.run(payload.write(Sink()))
    return out


# -- Ollama -------------------------------------------------------------------------------


async def test_ollama_native_endpoints() -> None:
    async with FakeOllama(models=["llama3.2:1b", "qwen3"]) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/") as resp:
            assert resp.status == 200 and await resp.text() == "Ollama is running"
        async with s.get(fake.url + "/api/version") as resp:
            assert await resp.json() == {"version": "0.9.6"}
        async with s.get(fake.url + "/api/tags") as resp:
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
            tags = await resp.json()
        assert [m["name"] for m in tags["models"]] == ["llama3.2:1b", "qwen3:latest"]
        first = tags["models"][0]
        assert set(first) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert set(first["details"]) == {
            "parent_model",
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        }
        assert re.fullmatch(r"[0-9a-f]{64}", first["digest"])
        async with s.get(fake.url + "/api/ps") as resp:
            assert await resp.json() == {"models": []}
        async with s.get(fake.url + "/api/nope") as resp:
            assert resp.status == 404 and await resp.text() == "404 page not found"


async def test_ollama_models_come_and_go_and_chat_loads_them() -> None:
    async with FakeOllama(models=[]) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            assert await resp.json() == {"object": "list", "data": None}  # Go nil slice
        fake.add_model("hf.co/bartowski/Qwen3-0.6B-GGUF:Q4_K_M")
        fake.add_model("gemma3")
        async with s.get(fake.url + "/v1/models") as resp:
            data = (await resp.json())["data"]
        assert [(m["id"], m["owned_by"]) for m in data] == [
            ("hf.co/bartowski/Qwen3-0.6B-GGUF:Q4_K_M", "bartowski"),
            ("gemma3:latest", "library"),
        ]
        status, _, _ = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "gemma3", **CHAT}
        )
        assert status == 200 and fake.loaded == {"gemma3:latest"}
        async with s.get(fake.url + "/api/ps") as resp:
            (running,) = (await resp.json())["models"]
        assert running["name"] == "gemma3:latest" and running["size_vram"] == running["size"]
        assert {"expires_at", "context_length", "details", "digest"} <= set(running)
        fake.remove_model("gemma3")
        assert fake.loaded == frozenset()
        status, _, text = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "gemma3", **CHAT}
        )
        assert status == 404
        assert json.loads(text) == {
            "error": {
                "message": 'model "gemma3" not found, try pulling it first',
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }


async def test_ollama_chat_stream_framing() -> None:
    async with FakeOllama(chunks=3) as fake, aiohttp.ClientSession() as s:
        body = {"model": "llama3.2:1b", **CHAT, "stream": True}
        status, ctype, text = await post_json(
            s,
            fake.url + "/v1/chat/completions",
            {**body, "stream_options": {"include_usage": True}},
        )
    assert status == 200 and ctype == "text/event-stream"
    assert text.endswith("data: [DONE]\n\n")
    chunks = chunks_of(text)
    assert len(chunks) == 3 + 2  # content, finish, usage
    assert len({c["id"] for c in chunks}) == 1 and re.fullmatch(
        r"chatcmpl-\d{1,3}", chunks[0]["id"]
    )
    assert all(c["system_fingerprint"] == "fp_ollama" for c in chunks)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks[:-1])
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
    assert joined_delta(chunks) == EXPECTED
    assert fake.streams_completed == 1


async def test_ollama_completions_and_embeddings() -> None:
    async with FakeOllama() as fake, aiohttp.ClientSession() as s:
        status, _, text = await post_json(
            s, fake.url + "/v1/completions", {"model": "llama3.2:1b", "prompt": "hi there"}
        )
        completion = json.loads(text)
        assert status == 200 and re.fullmatch(r"cmpl-\d+", completion["id"])
        assert completion["choices"][0]["text"] == "You said: hi there"
        body = {"model": "llama3.2:1b", "input": ["a", "b c"], "encoding_format": "base64"}
        status, _, text = await post_json(s, fake.url + "/v1/embeddings", body)
        embeddings = json.loads(text)
        assert embeddings["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        vector = struct.unpack("<8f", base64.b64decode(embeddings["data"][1]["embedding"]))
        assert list(vector) == pytest.approx(fake_embedding("b c", 8), abs=1e-6)


async def test_max_tokens_truncates_with_length() -> None:
    async with FakeVLLM() as fake, aiohttp.ClientSession() as s:
        body = {"model": "Qwen/Qwen3-0.6B", **CHAT, "max_tokens": 3}
        _, _, text = await post_json(s, fake.url + "/v1/chat/completions", body)
    choice = json.loads(text)["choices"][0]
    assert choice["message"]["content"] == "You said: tell"
    assert choice["finish_reason"] == "length"


# -- vLLM ---------------------------------------------------------------------------------


async def test_vllm_models_health_version_and_errors() -> None:
    async with FakeVLLM(max_model_len=4096) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            (card,) = (await resp.json())["data"]
        assert {k: card[k] for k in ("id", "object", "owned_by", "root", "parent")} == {
            "id": "Qwen/Qwen3-0.6B",
            "object": "model",
            "owned_by": "vllm",
            "root": "Qwen/Qwen3-0.6B",
            "parent": None,
        }
        assert (
            card["max_model_len"] == 4096 and card["permission"][0]["object"] == "model_permission"
        )
        async with s.get(fake.url + "/health") as resp:
            assert resp.status == 200 and await resp.read() == b""
        async with s.get(fake.url + "/version") as resp:
            assert "version" in await resp.json()
        async with s.get(fake.url + "/nope") as resp:
            assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
        status, _, text = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "gpt-4", **CHAT}
        )
        assert status == 404 and json.loads(text) == {
            "error": {
                "message": "The model `gpt-4` does not exist.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        }
        status, _, text = await post_json(s, fake.url + "/v1/chat/completions", CHAT)
        assert status == 200 and json.loads(text)["model"] == "Qwen/Qwen3-0.6B"
        status, _, text = await post_json(s, fake.url + "/v1/embeddings", {"input": "x"})
        assert status == 400
        assert json.loads(text)["error"]["message"] == "The model does not support Embeddings API"


async def test_vllm_chat_stream_shape() -> None:
    async with FakeVLLM(chunks=2) as fake, aiohttp.ClientSession() as s:
        body = {"model": "Qwen/Qwen3-0.6B", **CHAT, "stream": True}
        status, ctype, text = await post_json(s, fake.url + "/v1/chat/completions", body)
    assert status == 200 and ctype.startswith("text/event-stream")
    chunks = chunks_of(text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {"content": ""},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
    }
    assert "usage" not in chunks[-1]  # no include_usage
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", chunks[0]["id"])
    assert joined_delta(chunks) == EXPECTED


async def test_vllm_embeddings_model() -> None:
    embedder = FakeVLLM(models=["BAAI/bge-m3"], tasks=["embed"])
    async with embedder as fake, aiohttp.ClientSession() as s:
        status, _, text = await post_json(
            s, fake.url + "/v1/embeddings", {"model": "BAAI/bge-m3", "input": "hello"}
        )
        assert status == 200
        reply = json.loads(text)
        assert reply["object"] == "list" and reply["id"].startswith("embd-")
        assert reply["data"][0]["embedding"] == fake_embedding("hello", 8)
        status, _, _ = await post_json(s, fake.url + "/v1/chat/completions", CHAT)
        assert status == 400


def audio_form(audio: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", audio, filename="clip.wav", content_type="audio/wav")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def test_vllm_speech_to_text() -> None:
    wav = make_wav("the quick brown fox jumps over the lazy dog", seconds=1.5)
    stt = FakeVLLM(models=["openai/whisper-small"], tasks=["transcription"], chunks=3)
    async with stt as fake, aiohttp.ClientSession() as s:
        url = fake.url + "/v1/audio/transcriptions"
        async with s.post(url, data=audio_form(wav, model="openai/whisper-small")) as resp:
            assert await resp.json() == {
                "text": "the quick brown fox jumps over the lazy dog",
                "usage": {"type": "duration", "seconds": 2},
            }
        async with s.post(url, data=audio_form(wav, response_format="text")) as resp:
            assert resp.content_type == "application/json"  # vLLM answers JSON for text too
        async with s.post(url, data=audio_form(wav, response_format="verbose_json")) as resp:
            verbose = await resp.json()
        assert verbose["duration"] == "1.5" and verbose["words"] is None
        assert [(seg["start"], seg["end"]) for seg in verbose["segments"]] == [
            (0.0, 0.5),
            (0.5, 1.0),
            (1.0, 1.5),
        ]
        async with s.post(url, data=audio_form(wav, response_format="srt")) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "BadRequestError"
        async with s.post(url, data=audio_form(wav, stream="true")) as resp:
            chunks = chunks_of(await resp.text())
        assert chunks[0]["object"] == "transcription.chunk"
        assert joined_delta(chunks) == "the quick brown fox jumps over the lazy dog"
        translations = fake.url + "/v1/audio/translations"
        async with s.post(translations, data=audio_form(wav)) as resp:
            assert await resp.json() == {"text": "the quick brown fox jumps over the lazy dog"}
        form = aiohttp.FormData()
        form.add_field("model", "openai/whisper-small")
        async with s.post(url, data=form) as resp:
            assert resp.status == 422
    first = fake.requests_to("/v1/audio/transcriptions", "POST")[0]
    parts = parse_multipart(first.headers["Content-Type"], first.body)
    assert [(p.name, p.data) for p in parts] == [("file", wav), ("model", b"openai/whisper-small")]


# -- llama.cpp ----------------------------------------------------------------------------


async def test_llamacpp_model_id_is_the_file_path() -> None:
    path = "/models/gemma-3-270m-Q4_K_M.gguf"
    async with FakeLlamaCpp(model_path=path) as fake, aiohttp.ClientSession() as s:
        for route in ("/v1/models", "/models"):
            async with s.get(fake.url + route) as resp:
                listing = await resp.json()
            assert listing["object"] == "list"
            assert [m["id"] for m in listing["data"]] == [path]
            assert listing["data"][0]["owned_by"] == "llamacpp"
            assert [m["name"] for m in listing["models"]] == [path]
        async with s.get(fake.url + "/props") as resp:
            props = await resp.json()
        assert props["model_path"] == path and props["total_slots"] == 4  # -np -1: auto, 4
        assert props["default_generation_settings"]["n_ctx"] == 4096
        async with s.get(fake.url + "/health") as resp:
            assert await resp.json() == {"status": "ok"}
        # The requested model name is never checked, only echoed.
        status, _, text = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "anything", **CHAT}
        )
        reply = json.loads(text)
        assert status == 200 and reply["model"] == "anything"
        assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{32}", reply["id"]) and "timings" in reply
        async with s.get(fake.url + "/nope") as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}
            }
        fake.loading = True
        async with s.get(fake.url + "/health") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["type"] == "unavailable_error"


async def test_llamacpp_alias_and_stream_shape() -> None:
    async with FakeLlamaCpp(alias="gemma3", chunks=2) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["gemma3"]
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        _, _, text = await post_json(s, fake.url + "/v1/chat/completions", body)
    chunks = chunks_of(text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert chunks[0]["model"] == "gemma3" and chunks[0]["system_fingerprint"].startswith("b")
    finish = chunks[-2]
    assert finish["choices"][0] == {"finish_reason": "stop", "index": 0, "delta": {}}
    assert finish["timings"]["predicted_n"] == 9
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 16
    assert joined_delta(chunks) == EXPECTED


# -- LM Studio ----------------------------------------------------------------------------


async def test_lmstudio_models_state_and_jit() -> None:
    models = [
        ModelSpec("qwen2.5-0.5b-instruct", publisher="Qwen", arch="qwen2"),
        ModelSpec("text-embedding-nomic-embed-text-v1.5", type="embeddings", arch="nomic-bert"),
    ]
    async with FakeLMStudio(models=models) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            assert await resp.json() == {
                "data": [
                    {"id": m.id, "object": "model", "owned_by": "organization_owner"}
                    for m in models
                ],
                "object": "list",
            }
        async with s.get(fake.url + "/api/v0/models") as resp:
            entries = (await resp.json())["data"]
        assert [(e["id"], e["type"], e["state"]) for e in entries] == [
            ("qwen2.5-0.5b-instruct", "llm", "not-loaded"),
            ("text-embedding-nomic-embed-text-v1.5", "embeddings", "not-loaded"),
        ]
        assert set(entries[0]) == {
            "id",
            "object",
            "type",
            "publisher",
            "arch",
            "compatibility_type",
            "quantization",
            "state",
            "max_context_length",
        }
        status, _, text = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "qwen2.5-0.5b-instruct", **CHAT}
        )
        reply = json.loads(text)
        assert status == 200 and reply["stats"] == {}
        assert reply["system_fingerprint"] == "qwen2.5-0.5b-instruct"
        assert re.fullmatch(r"chatcmpl-[a-z0-9]{20}", reply["id"])
        async with s.get(fake.url + "/api/v0/models/qwen2.5-0.5b-instruct") as resp:
            entry = await resp.json()
        assert entry["state"] == "loaded" and entry["loaded_context_length"] == 4096
        async with s.post(fake.url + "/chat/completions", json=CHAT) as resp:
            assert resp.status == 200  # sic: LM Studio answers 200 to unknown endpoints
            assert await resp.json() == {
                "error": "Unexpected endpoint or method. (POST /chat/completions)"
            }


async def test_lmstudio_unknown_model_and_single_loaded_quirk() -> None:
    async with FakeLMStudio(models=["a", "b"]) as fake, aiohttp.ClientSession() as s:
        url = fake.url + "/v1/chat/completions"
        status, _, text = await post_json(s, url, {"model": "nope", **CHAT})
        assert status == 404
        error = json.loads(text)["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert error["message"].startswith('Model "nope" not found.')
        fake.load("b")  # exactly one model loaded: LM Studio ignores the requested name
        status, _, text = await post_json(s, url, {"model": "nope", **CHAT})
        assert status == 200 and json.loads(text)["model"] == "b"
        fake.single_loaded_quirk = False
        status, _, _ = await post_json(s, url, {"model": "nope", **CHAT})
        assert status == 404


async def test_lmstudio_stream_shape() -> None:
    async with FakeLMStudio(chunks=2) as fake, aiohttp.ClientSession() as s:
        body = {"model": "qwen2.5-0.5b-instruct", **CHAT, "stream": True}
        _, _, text = await post_json(s, fake.url + "/v1/chat/completions", body)
    chunks = chunks_of(text)
    assert len(chunks) == 3
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "You said: tell me about",
    }
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


# -- mlx_lm.server ------------------------------------------------------------------------


async def test_mlx_models_and_chat() -> None:
    async with FakeMLX(chunks=2) as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            (entry,) = (await resp.json())["data"]
        assert set(entry) == {"id", "object", "created"}  # no owned_by
        async with s.get(fake.url + "/health") as resp:
            assert await resp.text() == '{"status": "ok"}'
        async with s.get(fake.url + "/v1/nope") as resp:
            assert resp.status == 404 and await resp.read() == b"Not Found"
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        _, _, text = await post_json(s, fake.url + "/v1/chat/completions", body)
        chunks = chunks_of(text)
        assert all(c["model"] == "default_model" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["object"] == "chat.completion" and chunks[-1]["choices"] == []
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert joined_delta(chunks) == EXPECTED
        assert '"id": "chatcmpl-' in text  # Python's json.dumps separators
        status, _, text = await post_json(
            s, fake.url + "/v1/chat/completions", {"model": "nobody/nothing", **CHAT}
        )
        assert status == 500 and "Repository Not Found" in json.loads(text)["error"]


# -- every OpenAI-compatible fake through the real OpenAI SDK ----------------------------


LLM_FAKES: list[tuple[type[OpenAICompatEngine], str]] = [
    (FakeOllama, "llama3.2:1b"),
    (FakeVLLM, "Qwen/Qwen3-0.6B"),
    (FakeLlamaCpp, "/models/gemma-3-270m-Q4_K_M.gguf"),
    (FakeLMStudio, "qwen2.5-0.5b-instruct"),
    (FakeMLX, "mlx-community/Llama-3.2-1B-Instruct-4bit"),
]


@pytest.mark.parametrize(("cls", "model"), LLM_FAKES, ids=[c.kind for c, _ in LLM_FAKES])
async def test_openai_sdk_reads_every_engine(cls: type[OpenAICompatEngine], model: str) -> None:
    async with cls(chunks=5) as fake:
        client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="unused", max_retries=0)
        async with client:
            listed = [m.id async for m in client.models.list()]
            assert model in listed
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}]
            )
            assert reply.choices[0].message.content == EXPECTED
            assert reply.usage is not None and reply.usage.completion_tokens == 9
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, usage = [], None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage
            assert "".join(parts) == EXPECTED
            assert usage is not None and usage.prompt_tokens == 7


# -- media services -----------------------------------------------------------------------


async def test_tts_bytes_pass_through_and_round_trip_to_stt() -> None:
    async with FakeTTS() as tts, FakeWhisper() as stt, aiohttp.ClientSession() as s:
        body = {"model": "tts-1", "input": "good morning quorum", "voice": "nova"}
        async with s.post(tts.url + "/v1/audio/speech", json=body) as resp:
            assert resp.headers["Content-Type"] == "audio/mpeg"
            assert resp.headers["Transfer-Encoding"] == "chunked"
            mp3 = await resp.read()
        assert mp3 == speech_bytes("good morning quorum", "nova", "mp3")
        assert mp3 != speech_bytes("good morning quorum", "alloy", "mp3")
        async with s.post(
            tts.url + "/v1/audio/speech", json={**body, "response_format": "wav"}
        ) as r:
            assert r.headers["Content-Type"] == "audio/wav"
            wav = await r.read()
        assert wav == speech_bytes("good morning quorum", "nova", "wav")
        async with s.post(stt.url + "/v1/audio/transcriptions", data=audio_form(wav)) as resp:
            assert (await resp.json())["text"] == "good morning quorum"
        async with s.post(tts.url + "/v1/audio/speech", json={"model": "tts-1", "voice": "x"}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "input"


async def test_whisper_response_formats() -> None:
    wav = make_wav("one two three four five six", seconds=2.0)
    async with FakeWhisper() as fake, aiohttp.ClientSession() as s:
        url = fake.url + "/v1/audio/transcriptions"
        async with s.post(url, data=audio_form(wav, response_format="text")) as resp:
            assert resp.content_type == "text/plain"
            assert await resp.text() == "one two three four five six\n"
        async with s.post(url, data=audio_form(wav, response_format="srt")) as resp:
            assert await resp.text() == (
                "1\n00:00:00,000 --> 00:00:01,000\none two three four\n\n"
                "2\n00:00:01,000 --> 00:00:02,000\nfive six\n\n"
            )
        async with s.post(url, data=audio_form(wav, response_format="vtt")) as resp:
            assert (await resp.text()).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
        form = audio_form(wav, response_format="verbose_json")
        form.add_field("timestamp_granularities[]", "word")
        async with s.post(url, data=form) as resp:
            verbose = await resp.json()
        assert verbose["task"] == "transcribe" and verbose["duration"] == 2.0
        assert [w["word"] for w in verbose["words"]] == [
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
        ]
        assert verbose["segments"][1]["start"] == 1.0


async def test_images_generate_and_edit_prove_the_upload() -> None:
    upload = make_wav("pretend this is a png") + bytes(range(256))
    async with FakeImages() as fake, aiohttp.ClientSession() as s:
        body = {"prompt": "a red fox", "n": 2, "response_format": "b64_json"}
        status, _, text = await post_json(s, fake.url + "/v1/images/generations", body)
        images = json.loads(text)["data"]
        assert status == 200 and len(images) == 2
        assert png_text(base64.b64decode(images[0]["b64_json"]))["prompt"] == "a red fox"
        status, _, text = await post_json(s, fake.url + "/v1/images/generations", {"prompt": "x"})
        (item,) = json.loads(text)["data"]
        async with s.get(item["url"]) as resp:
            assert resp.content_type == "image/png" and (await resp.read()).startswith(b"\x89PNG")
        form = aiohttp.FormData()
        form.add_field("image", upload, filename="in.png", content_type="image/png")
        form.add_field("prompt", "add a hat")
        form.add_field("response_format", "b64_json")
        async with s.post(fake.url + "/v1/images/edits", data=form) as resp:
            (edited,) = (await resp.json())["data"]
    meta = png_text(base64.b64decode(edited["b64_json"]))
    assert meta["source_sha256"] == hashlib.sha256(upload).hexdigest()


# -- failure modes ------------------------------------------------------------------------

STREAM_BODY: dict[str, Any] = {"model": "llama3.2:1b", **CHAT, "stream": True}


async def test_garbage_is_not_http() -> None:
    async with FakeOllama(mode="garbage") as fake, aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientResponseError, match="Bad status line"):
            await s.get(fake.url + "/api/tags")


async def test_bad_json_and_error_500_shapes() -> None:
    async with FakeVLLM(mode="bad_json") as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.read() == BAD_JSON
            with pytest.raises(json.JSONDecodeError):
                json.loads(await resp.read())
        fake.mode = "error_500"
        async with s.get(fake.url + "/v1/models") as resp:
            assert resp.status == 500
            assert (await resp.json())["error"]["type"] == "InternalServerError"
    async with FakeOllama(mode="error_500") as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/api/tags") as resp:
            assert resp.status == 500 and set(await resp.json()) == {"error"}
        async with s.get(fake.url + "/v1/models") as resp:
            assert (await resp.json())["error"]["type"] == "api_error"


async def test_slow_headers_and_mode_paths() -> None:
    fake = FakeOllama(mode="slow_headers", delay=0.3, mode_paths=["/v1/chat"])
    async with fake, aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.get(fake.url + "/api/tags") as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 0.25  # not a /v1/chat path
        started = time.monotonic()
        status, _, _ = await post_json(s, fake.url + "/v1/chat/completions", STREAM_BODY)
        assert status == 200 and time.monotonic() - started >= 0.3


async def test_hang_never_answers_and_stop_is_prompt() -> None:
    fake = FakeOllama(mode="hang")
    await fake.start()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):
            await s.get(fake.url + "/api/tags", timeout=aiohttp.ClientTimeout(total=0.3))
        assert len(fake.requests_to("/api/tags")) == 1
        pending = asyncio.ensure_future(s.get(fake.url + "/api/version"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_die_midstream_truncates_the_stream() -> None:
    dying = FakeOllama(mode="die_midstream", chunks=6, die_after=3)
    async with dying as fake, aiohttp.ClientSession() as s:
        received = b""
        async with s.post(fake.url + "/v1/chat/completions", json=STREAM_BODY) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for line in resp.content:
                    received += line
        assert received.count(b"data: ") == 3 and b"[DONE]" not in received
        async with s.get(fake.url + "/api/tags") as resp:  # non-streamed: half a body
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert fake.cancelled_count == 0  # the engine died; nobody cancelled


async def test_stall_midstream_goes_silent() -> None:
    stalling = FakeOllama(mode="stall_midstream", chunks=4, die_after=2)
    async with (
        stalling as fake,
        aiohttp.ClientSession() as s,
        s.post(fake.url + "/v1/chat/completions", json=STREAM_BODY) as resp,
    ):
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.3):
                await resp.content.read()


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_client_disconnect_is_seen_as_a_cancel(handler_cancellation: bool) -> None:
    fake = FakeOllama(chunks=20, chunk_delay=0.05, handler_cancellation=handler_cancellation)
    async with fake, aiohttp.ClientSession() as s:
        async with s.post(fake.url + "/v1/chat/completions", json=STREAM_BODY) as resp:
            assert (await resp.content.readline()).startswith(b"data: ")
            assert fake.stream_started.is_set()
        # leaving the block closed the connection mid-stream
        assert await asyncio.to_thread(fake.cancelled.wait, 3.0)
        assert fake.cancelled_count == 1 and fake.streams_completed == 0


async def test_refused_connection_url() -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(closed_port_url() + "/api/tags")


async def test_engine_goes_away_and_comes_back_on_its_port() -> None:
    fake = FakeOllama()
    await fake.start()
    port = fake.port
    await fake.stop()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(f"http://127.0.0.1:{port}/api/tags")
        await fake.start(port=port)
        try:
            async with s.get(f"http://127.0.0.1:{port}/api/tags") as resp:
                assert resp.status == 200
        finally:
            await fake.stop()


def test_fake_in_a_background_thread() -> None:
    """The fake runs on another loop; the test thread reads and flips it safely."""
    fake = FakeVLLM(chunks=30, chunk_delay=0.02)

    async def client(url: str) -> tuple[int, int]:
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/v1/models") as resp:
                first = resp.status
            async with s.post(url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                await r.content.readline()
            return first, r.status

    with LoopThread() as bg:
        url = bg.run(fake.start())
        try:
            assert asyncio.run(client(url)) == (200, 200)
            assert [r.path for r in fake.wait_for_requests(2, timeout=5)] == [
                "/v1/models",
                "/v1/chat/completions",
            ]
            assert fake.cancelled.wait(5) and fake.cancelled_count == 1
            fake.mode = "error_500"
            assert asyncio.run(client(url))[0] == 500
        finally:
            bg.run(fake.stop())


def test_every_fake_has_a_kind_and_port() -> None:
    fakes: list[FakeEngine] = [
        FakeOllama(),
        FakeVLLM(),
        FakeLlamaCpp(),
        FakeLMStudio(),
        FakeMLX(),
        FakeLlamaCppPython(),
        FakeTTS(),
        FakeImages(),
        FakeWhisper(),
    ]
    assert [f.kind for f in fakes] == [
        "ollama",
        "vllm",
        "llamacpp",
        "lmstudio",
        "mlx",
        "llamacpp_python",
        "tts",
        "image",
        "stt",
    ]
    assert [f.default_port for f in fakes[:6]] == [11434, 8000, 8080, 1234, 8080, 8000]
    assert LlamaCppPythonEngine is FakeLlamaCppPython
    assert all(not f.running for f in fakes)
    assert math.isclose(inspect_audio(make_wav(seconds=0.1)).duration, 0.1)


# -- concurrency: slots, queues, locks -----------------------------------------------------
#
# A generation holds its slot for gen_delay seconds; the tests set it high, look at the
# fake's own state (processing / waiting) once it is reached, then set it to 0 so every
# running generation ends at once. No sleep stands in for "the request has arrived".

HOLD = 60.0  # longer than any test: a held generation ends only when gen_delay drops to 0


def wait_s(seconds: float = 10.0) -> float:
    return timeout(seconds)


def finish_reasons(chunks: list[dict[str, Any]]) -> list[Any]:
    return [choice.get("finish_reason") for c in chunks for choice in c.get("choices", [])]


def post_later(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> asyncio.Task[tuple[int, str, str]]:
    return asyncio.create_task(post_json(s, url, body))


async def test_slot_pool_is_first_come_first_served_and_survives_cancellation() -> None:
    fake = FakeVLLM()
    pool = fake.new_pool(1)
    order: list[str] = []

    async def take(name: str) -> None:
        async with pool.slot():
            order.append(name)

    await pool.acquire()
    first = asyncio.create_task(take("first"))
    leaver = asyncio.create_task(take("leaver"))
    last = asyncio.create_task(take("last"))
    await fake.until(lambda: pool.waiting == 3, within=wait_s())
    leaver.cancel()
    await fake.until(lambda: pool.waiting == 2, within=wait_s())
    assert not pool.free and pool.running == 1
    pool.release()
    async with asyncio.timeout(wait_s()):
        await asyncio.gather(first, last)
    assert leaver.cancelled() and order == ["first", "last"]
    assert pool.running == 0 and pool.waiting == 0 and pool.free


async def test_llamacpp_slots_fill_and_further_tasks_are_deferred() -> None:
    fake = FakeLlamaCpp(total_slots=2, gen_delay=HOLD, metrics=True)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        url = fake.url + "/v1/chat/completions"
        running = [post_later(s, url, CHAT) for _ in range(2)]
        await fake.until(lambda: fake.processing == 2, within=wait_s())
        stream = post_later(s, url, {**CHAT, "stream": True})
        embedding = post_later(s, fake.url + "/v1/embeddings", {"input": "x"})
        await fake.until(lambda: fake.waiting == 2, within=wait_s())
        # Deferred tasks have not answered at all: llama-server waits for a task's first
        # result before it sends a streamed answer's headers.
        assert fake.streams_started == 0 and not stream.done()
        async with s.get(fake.url + "/slots") as resp:
            slots = await resp.json()
        assert [slot["is_processing"] for slot in slots] == [True, True]
        async with s.get(fake.url + "/slots?fail_on_no_slot=1") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["message"] == "no slot available"
        async with s.get(fake.url + "/metrics") as resp:
            metrics = await resp.text()
        assert "llamacpp:requests_processing 2\n" in metrics
        assert "llamacpp:requests_deferred 2\n" in metrics
        async with s.get(fake.url + "/props") as resp:
            props = await resp.json()
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["is_processing"] is True
        async with s.get(fake.url + "/v1/models") as resp:  # listing never waits for a slot
            assert resp.status == 200

        fake.gen_delay = 0
        for task in [*running, stream, embedding]:
            status, _, text = await task
            assert status == 200, text
        assert chunks_of(stream.result()[2])[-1]["choices"][0]["finish_reason"] == "stop"
        assert fake.processing == 0 and fake.waiting == 0
    async with FakeLlamaCpp() as fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/metrics") as resp:
            assert resp.status == 501  # only with --metrics
        async with s.get(fake.url + "/slots") as resp:
            assert len(await resp.json()) == 4  # -np -1 (auto) is 4 slots


async def test_ollama_runs_num_parallel_per_model_queues_then_refuses() -> None:
    fake = FakeOllama(models=["llama3.2:1b", "qwen3:0.6b"], num_parallel=1, max_queue=2)
    fake.gen_delay = HOLD
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        url = fake.url + "/v1/chat/completions"
        llama, qwen = {"model": "llama3.2:1b", **CHAT}, {"model": "qwen3:0.6b", **CHAT}
        first = [post_later(s, url, llama), post_later(s, url, qwen)]
        await fake.until(lambda: fake.processing == 2, within=wait_s())  # one per model
        assert fake.processing_for("llama3.2:1b") == fake.processing_for("qwen3:0.6b") == 1
        queued = [
            post_later(s, url, llama),
            post_later(s, fake.url + "/v1/embeddings", {"model": "llama3.2:1b", "input": "x"}),
        ]
        await fake.until(lambda: fake.waiting == 2, within=wait_s())
        assert fake.streams_started == 0
        status, _, text = await post_json(s, url, {**llama, "stream": True})
        assert status == 503
        assert json.loads(text) == {
            "error": {
                "message": "server busy, please try again.  maximum pending requests exceeded",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }
        assert fake.waiting == 2 and fake.processing == 2

        fake.gen_delay = 0
        for task in first + queued:
            status, _, text = await task
            assert status == 200, text
        assert fake.processing == 0 and fake.waiting == 0


async def test_vllm_streams_answer_headers_while_they_wait_for_a_seq() -> None:
    fake = FakeVLLM(max_num_seqs=1, gen_delay=HOLD, chunks=3)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        url = fake.url + "/v1/chat/completions"
        whole = post_later(s, url, CHAT)
        await fake.until(lambda: fake.processing == 1, within=wait_s())
        async with s.post(url, json={**CHAT, "stream": True}) as resp:
            # vLLM returns its StreamingResponse at once: 200 before the request is scheduled
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            assert fake.waiting == 1 and fake.processing == 1 and not whole.done()
            fake.gen_delay = 0
            chunks = chunks_of(await resp.text())
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert (await whole)[0] == 200


@pytest.mark.parametrize("cls", [FakeLMStudio, FakeMLX], ids=["lmstudio", "mlx"])
async def test_one_generation_at_a_time(cls: type[OpenAICompatEngine]) -> None:
    fake = cls(gen_delay=HOLD)
    model = fake.model_ids[0]
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        url = fake.url + "/v1/chat/completions"
        first = post_later(s, url, {"model": model, **CHAT})
        await fake.until(lambda: fake.processing == 1, within=wait_s())
        second = post_later(s, url, {"model": model, **CHAT, "stream": True})
        await fake.until(lambda: fake.waiting == 1, within=wait_s())
        assert fake.processing == 1 and fake.streams_started == 0
        async with s.get(fake.url + "/v1/models") as resp:  # listing answers meanwhile
            assert resp.status == 200
        fake.gen_delay = 0
        assert (await first)[0] == 200
        status, _, text = await second
        assert status == 200 and "stop" in finish_reasons(chunks_of(text))
        assert fake.processing == 0 and fake.waiting == 0


async def test_single_threaded_mlx_makes_every_request_wait() -> None:
    fake = FakeMLX(single_threaded=True, gen_delay=HOLD)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        generation = post_later(s, fake.url + "/v1/chat/completions", CHAT)
        await fake.until(lambda: fake.processing == 1, within=wait_s())
        listing = asyncio.create_task(s.get(fake.url + "/v1/models"))
        health = asyncio.create_task(s.get(fake.url + "/health"))
        await fake.until(lambda: fake.waiting == 2, within=wait_s())
        assert not listing.done() and not health.done()
        fake.gen_delay = 0
        assert (await generation)[0] == 200
        for pending in (listing, health):
            async with await pending as resp:
                assert resp.status == 200


# -- llama-cpp-python -----------------------------------------------------------------------

LCP_MODEL = "/models/gemma-3-270m-it-Q4_K_M.gguf"


async def test_llamacpp_python_shapes() -> None:
    fake = FakeLlamaCppPython(alias="gemma3", chunks=3)
    async with fake, aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/v1/models") as resp:
            assert await resp.read() == (
                b'{"object":"list","data":[{"id":"gemma3","object":"model",'
                b'"owned_by":"me","permissions":[]}]}'
            )
        status, _, text = await post_json(s, fake.url + "/v1/chat/completions", CHAT)
        reply = json.loads(text)
        assert status == 200 and reply["model"] == LCP_MODEL  # no model asked: the path
        assert re.fullmatch(r"chatcmpl-[0-9a-f-]{36}", reply["id"])
        assert reply["choices"][0] == {
            "index": 0,
            "message": {"content": EXPECTED, "role": "assistant"},
            "logprobs": None,
            "finish_reason": "stop",
        }
        body = {"model": "anything", **CHAT, "stream": True}
        body["stream_options"] = {"include_usage": True}  # not a field: ignored
        async with s.post(fake.url + "/v1/chat/completions", json=body) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert resp.headers["X-Accel-Buffering"] == "no"
            text = await resp.text()
        chunks = chunks_of(text)
        assert '"object": "chat.completion.chunk"' in text  # json.dumps separators
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
        assert chunks[-1]["choices"][0] == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
        }
        assert joined_delta(chunks) == EXPECTED and all("usage" not in c for c in chunks)
        assert {c["model"] for c in chunks} == {"anything"}
        long_prompt = {"prompt": " ".join(["word"] * 30)}  # max_tokens defaults to 16
        status, _, text = await post_json(s, fake.url + "/v1/completions", long_prompt)
        choice = json.loads(text)["choices"][0]
        assert choice["finish_reason"] == "length" and len(choice["text"].split()) == 16
        status, _, text = await post_json(s, fake.url + "/v1/embeddings", {"input": "x"})
        assert status == 500 and json.loads(text) == {
            "error": {
                "message": "Llama model must be created with embedding=True to call this method",
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }
        status, _, text = await post_json(s, fake.url + "/v1/chat/completions", {"messages": 1})
        assert status == 500 and json.loads(text)["error"]["type"] == "internal_server_error"
        async with s.get(fake.url + "/nope") as resp:
            assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
        async with s.post(fake.url + "/v1/models") as resp:
            assert resp.status == 405 and await resp.json() == {"detail": "Method Not Allowed"}
    async with FakeLlamaCppPython(embedding=True) as fake:
        client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="unused", max_retries=0)
        async with client:
            assert [m.id async for m in client.models.list()] == [LCP_MODEL]
            vectors = await client.embeddings.create(model=LCP_MODEL, input=["a", "b"])
            assert [len(v.embedding) for v in vectors.data] == [8, 8]
            stream = await client.chat.completions.create(
                model=LCP_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert "".join(parts) == EXPECTED


async def test_llamacpp_python_models_wait_for_a_running_generation() -> None:
    fake = FakeLlamaCppPython(gen_delay=HOLD)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        chat = post_later(s, fake.url + "/v1/chat/completions", CHAT)
        await fake.until(lambda: fake.processing == 1, within=wait_s())
        models = asyncio.create_task(s.get(fake.url + "/v1/models"))
        embedding = post_later(s, fake.url + "/v1/embeddings", {"input": "x"})
        await fake.until(lambda: fake.waiting == 2, within=wait_s())
        assert not models.done() and fake.processing == 1
        fake.gen_delay = 0
        status, _, text = await chat
        assert status == 200 and json.loads(text)["choices"][0]["finish_reason"] == "stop"
        async with await models as resp:
            assert resp.status == 200 and (await resp.json())["data"][0]["owned_by"] == "me"
        assert (await embedding)[0] == 500  # its turn came; the model has no embeddings
        assert fake.processing == 0 and fake.waiting == 0


LONG_WORDS = 200  # content chunks of a long answer: 10 s at the tests' chunk_delay


def long_reply(prompt: str) -> str:
    return " ".join(f"w{i}" for i in range(LONG_WORDS))


async def get_status(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(url) as resp:
        await resp.read()
        return resp.status


async def post_status(s: aiohttp.ClientSession, url: str) -> int:
    return (await post_json(s, url, CHAT))[0]


async def read_sse_until_content(resp: aiohttp.ClientResponse) -> bytes:
    """Read events until the first one with content: the stream holds the model then."""
    received = b""
    async for line in resp.content:
        received += line
        if b'"content"' in line:
            return received
    raise AssertionError(f"stream ended before any content: {received!r}")


@pytest.mark.parametrize("second", ["chat", "models"])
async def test_llamacpp_python_interrupts_a_stream_when_another_request_arrives(
    second: str,
) -> None:
    fake = FakeLlamaCppPython(chunks=LONG_WORDS, chunk_delay=0.05, reply=long_reply)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        body = {**CHAT, "stream": True}
        async with s.post(fake.url + "/v1/chat/completions", json=body) as resp:
            received = await read_sse_until_content(resp)
            if second == "chat":
                other = asyncio.create_task(post_status(s, fake.url + "/v1/chat/completions"))
            else:  # the node's own health probe did exactly this
                other = asyncio.create_task(get_status(s, fake.url + "/v1/models"))
            received += await resp.read()
        text = received.decode()
        assert text.endswith("data: [DONE]\n\n")  # a clean end of stream...
        chunks = chunks_of(text)
        assert 1 < len(chunks) < 100 and set(finish_reasons(chunks)) == {None}  # ...cut short
        assert fake.streams_cut_short == 1
        assert await other == 200
    assert fake.processing == 0 and fake.waiting == 0


async def test_llamacpp_python_lets_a_stream_finish_without_interrupt_requests() -> None:
    fake = FakeLlamaCppPython(
        chunks=LONG_WORDS, chunk_delay=0.05, reply=long_reply, interrupt_requests=False
    )
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(30)):
        body = {**CHAT, "stream": True}
        async with s.post(fake.url + "/v1/chat/completions", json=body) as resp:
            received = await read_sse_until_content(resp)
            listing = asyncio.create_task(s.get(fake.url + "/v1/models"))
            await fake.until(lambda: fake.waiting == 1, within=wait_s())
            assert not listing.done()
            fake.chunk_delay = 0  # let the stream run to its end now
            received += await resp.read()
        chunks = chunks_of(received.decode())
        assert len(chunks) == 1 + LONG_WORDS + 1 and finish_reasons(chunks)[-1] == "stop"
        assert joined_delta(chunks) == long_reply(PROMPT)
        async with await listing as resp:
            assert resp.status == 200
        assert fake.streams_cut_short == 0 and fake.streams_completed == 1


async def test_llamacpp_python_stream_pings_while_it_waits_for_the_model() -> None:
    fake = FakeLlamaCppPython(gen_delay=HOLD, ping_interval=0.05)
    async with fake, aiohttp.ClientSession() as s, asyncio.timeout(wait_s(20)):
        whole = post_later(s, fake.url + "/v1/chat/completions", CHAT)
        await fake.until(lambda: fake.processing == 1, within=wait_s())
        body = {**CHAT, "stream": True}
        async with s.post(fake.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200  # headers at once, like sse-starlette
            first = await resp.content.readline()
            assert first.startswith(b": ping - ") and first.endswith(b"\r\n")
            assert fake.waiting == 1 and not whole.done()
            fake.gen_delay = 0
            rest = await resp.read()
        assert (await whole)[0] == 200
        data = [line for line in rest.split(b"\n") if line.startswith(b"data: ")]
        assert data[-1] == b"data: [DONE]" and b'"finish_reason": "stop"' in data[-2]
