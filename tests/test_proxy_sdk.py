"""Every /v1 endpoint through a real node, with the official openai SDK, against fake engines."""

from __future__ import annotations

import hashlib
import io

import openai
import pytest

from quorum.answers.verbose import wav_seconds
from tests.conftest import MakeRig
from tests.fakes import (
    FakeImages,
    FakeLlamaCpp,
    FakeMLX,
    FakeOllama,
    FakeTTS,
    FakeVLLM,
    FakeWhisper,
    make_png,
    make_wav,
    png_text,
    speech_bytes,
)


def test_chat_sync_with_route_headers(make_rig: MakeRig) -> None:
    rig = make_rig({"ollama": (FakeOllama(), {"engine": "ollama"})})
    raw = rig.client().chat.completions.with_raw_response.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "hello there"}]
    )
    done = raw.parse()
    assert done.choices[0].message.content == "You said: hello there"
    assert raw.headers["x-quorum-node"] == "node-a"
    assert raw.headers["x-quorum-route"] == "local"
    assert raw.headers["x-request-id"]
    sent = rig.fakes["ollama"].requests_to("/v1/chat/completions")
    assert sent[0].headers.get("X-Request-Id") == raw.headers["x-request-id"]


def test_streaming_passes_chunk_by_chunk(make_rig: MakeRig) -> None:
    vllm = FakeVLLM(chunks=6, chunk_delay=0.15)
    rig = make_rig({"vllm": (vllm, {})})
    stream = rig.client().chat.completions.create(
        model="Qwen/Qwen3-0.6B",
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = []
    completed_when_first_arrived = None
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if completed_when_first_arrived is None:
                completed_when_first_arrived = vllm.streams_completed
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    # The first piece reached the client while the engine was still generating.
    assert completed_when_first_arrived == 0
    assert "".join(pieces) == "You said: one two three four five six"
    assert len(pieces) > 1
    assert usage is not None and usage.completion_tokens > 0


async def test_async_streaming_and_llamacpp_model_names(make_rig: MakeRig) -> None:
    rig = make_rig({"box": (FakeLlamaCpp(), {})})
    async with rig.async_client() as client:
        names = [m.id async for m in client.models.list()]
        assert names == ["gemma-3-270m-Q4_K_M"]
        stream = await client.chat.completions.create(
            model="gemma-3-270m-Q4_K_M",
            messages=[{"role": "user", "content": "hi llama"}],
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "You said: hi llama"
    (sent,) = rig.fakes["box"].requests_to("/v1/chat/completions")
    assert sent.json()["model"] == "/models/gemma-3-270m-Q4_K_M.gguf"


async def test_async_completions_and_embeddings(make_rig: MakeRig) -> None:
    rig = make_rig(
        {
            "mlx": (FakeMLX(), {}),
            "emb": (FakeVLLM(models=["bge-m3"], tasks=("embed",)), {"type": "embedding"}),
        }
    )
    mlx_model = rig.fakes["mlx"].model_ids[0]
    async with rig.async_client() as client:
        done = await client.completions.create(model=mlx_model, prompt="tell me")
        assert "tell me" in done.choices[0].text
        emb = await client.embeddings.create(model="bge-m3", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8


def test_models_list_whole_node_with_types(make_rig: MakeRig) -> None:
    rig = make_rig(
        {
            "ollama": (FakeOllama(models=["llama3.2:1b", "qwen3:0.6b"]), {}),
            "asr": (FakeWhisper(), {"type": "stt"}),
        }
    )
    models = {m.id: m for m in rig.client().models.list()}
    assert set(models) == {"llama3.2:1b", "qwen3:0.6b", "whisper-1"}
    extra = models["whisper-1"].model_extra or {}
    assert models["whisper-1"].owned_by == "node-a"
    assert extra["quorum"]["type"] == "stt"
    assert extra["quorum"]["holders"][0]["service"] == "asr"
    assert rig.client().models.retrieve("qwen3:0.6b").id == "qwen3:0.6b"
    with pytest.raises(openai.NotFoundError):
        rig.client().models.retrieve("absent")


def test_transcription_upload_arrives_intact(make_rig: MakeRig) -> None:
    rig = make_rig({"asr": (FakeWhisper(), {"type": "stt", "features": ["timestamps"]})})
    wav = make_wav("the quick brown fox", seconds=1.0)
    result = rig.client().audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", io.BytesIO(wav), "audio/wav")
    )
    assert result.text == "the quick brown fox"
    (sent,) = rig.fakes["asr"].requests_to("/v1/audio/transcriptions")
    assert wav in sent.body
    verbose = rig.client().audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", wav), response_format="verbose_json"
    )
    assert verbose.segments  # the service has timestamps: nothing downgraded


def test_verbose_json_downgraded_without_timestamps(make_rig: MakeRig) -> None:
    """The SDK gets a valid verbose_json object (empty segments), not plain text."""
    rig = make_rig({"asr": (FakeWhisper(), {"type": "stt"})})
    wav = make_wav("downgrade me")
    raw = rig.client().audio.transcriptions.with_raw_response.create(
        model="whisper-1",
        file=("clip.wav", wav),
        response_format="verbose_json",
        language="en",
    )
    assert "without segments" in raw.headers["x-quorum-downgraded"]
    assert raw.headers["content-type"].startswith("application/json")
    verbose = raw.parse()
    assert verbose.text.strip() == "downgrade me"
    assert verbose.segments == []
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(wav_seconds(wav), abs=0.01)
    assert verbose.duration > 0
    (sent,) = rig.fakes["asr"].requests_to("/v1/audio/transcriptions")
    assert b'name="response_format"\r\n\r\njson\r\n' in sent.body


async def test_translation_async(make_rig: MakeRig) -> None:
    rig = make_rig({"asr": (FakeWhisper(), {"type": "stt"})})
    async with rig.async_client() as client:
        with pytest.warns(DeprecationWarning):  # the SDK marks translations deprecated
            out = await client.audio.translations.create(
                model="whisper-1", file=("a.wav", make_wav("bonjour"))
            )
    assert out.text == "bonjour"


def test_speech_download_is_byte_exact(make_rig: MakeRig) -> None:
    rig = make_rig({"tts": (FakeTTS(), {"type": "tts"})})
    with rig.client().audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input="Quorum speaks.", response_format="wav"
    ) as resp:
        audio = resp.read()
        assert resp.headers["content-type"] == "audio/wav"
    assert audio == speech_bytes("Quorum speaks.", "nova", "wav")


def test_image_generation_and_edit_upload(make_rig: MakeRig) -> None:
    rig = make_rig({"img": (FakeImages(), {"type": "image"})})
    client = rig.client()
    gen = client.images.generate(
        model="dall-e-2", prompt="a lighthouse", response_format="b64_json"
    )
    assert gen.data and gen.data[0].b64_json
    picture = make_png(b"source picture", size=16)
    edit = client.images.edit(
        model="dall-e-2",
        image=("in.png", picture, "image/png"),
        prompt="add a boat",
        response_format="b64_json",
    )
    import base64

    assert edit.data and edit.data[0].b64_json
    out = base64.b64decode(edit.data[0].b64_json)
    assert png_text(out)["source_sha256"] == hashlib.sha256(picture).hexdigest()


def test_same_name_routed_by_type(make_rig: MakeRig) -> None:
    rig = make_rig(
        {
            "chat": (FakeVLLM(models=["whisper-1"]), {}),
            "asr": (FakeWhisper(), {"type": "stt"}),
        }
    )
    client = rig.client()
    chat = client.chat.completions.create(
        model="whisper-1", messages=[{"role": "user", "content": "to the llm"}]
    )
    assert chat.choices[0].message.content == "You said: to the llm"
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", make_wav("to stt")))
    assert text.text == "to stt"
    assert len(rig.fakes["chat"].requests_to("/v1/chat/completions")) == 1
    assert len(rig.fakes["asr"].requests_to("/v1/audio/transcriptions")) == 1
    assert not rig.fakes["chat"].requests_to("/v1/audio/transcriptions")
