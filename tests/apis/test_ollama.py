"""Ollama's native API on the node's port, with the ollama client unchanged: translated for
an engine that serves only the OpenAI shapes, passed through to an Ollama engine."""

from __future__ import annotations

import json
import time
from typing import Any

import ollama
import pytest

from tests.apis.helpers import LOOKUP, Wire, ollama_client
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeOllama, FakeVLLM, FakeWhisper

MODEL = "Qwen/Qwen3-0.6B"
EMBEDDER = "bge-m3"
OLLAMA_MODEL = "llama3.2:1b"
TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": LOOKUP}}


def translated(make_rig: MakeRig) -> Rig:
    return make_rig(
        {
            "vllm": (FakeVLLM(models=[MODEL], chunks=5), {}),
            "emb": (FakeVLLM(models=[EMBEDDER], tasks=("embed",)), {"type": "embedding"}),
        }
    )


def test_list_show_and_generation_translated(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = ollama_client(rig.node.url, wire)
    names = sorted(m.model or "" for m in client.list().models)
    assert names == sorted([EMBEDDER, MODEL])
    shown = client.show(MODEL)
    assert shown.details is not None and shown.modified_at is not None

    done = client.chat(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], stream=False
    )
    assert done.message.content == "You said: hello there"
    assert done.done and done.done_reason == "stop"
    assert done.eval_count == 4 and (done.total_duration or 0) > 0

    started = time.monotonic()
    parts = list(
        client.chat(model=MODEL, messages=[{"role": "user", "content": "a b c d"}], stream=True)
    )
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == "You said: a b c d"
    assert parts[-1].prompt_eval_count is not None and parts[-1].eval_count == 6
    assert time.monotonic() - started < 10

    generated = client.generate(model=MODEL, prompt="tell me", system="Be brief.", stream=False)
    assert generated.response == "You said: tell me"
    pieces = list(client.generate(model=MODEL, prompt="one two", stream=True))
    assert "".join(p.response or "" for p in pieces) == "You said: one two" and pieces[-1].done

    embedded = client.embed(model=EMBEDDER, input=["first", "second"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 8
    fake = rig.fakes["vllm"]
    sent = [r.json() for r in fake.requests_to("/v1/chat/completions")]
    assert sent[0]["messages"] == [{"role": "user", "content": "hello there"}]
    assert sent[2]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_chat_with_a_tool_translated(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = ollama_client(rig.node.url, wire)
    question: list[Any] = [{"role": "user", "content": "weather in Lima"}]
    for streamed in (False, True):
        if streamed:
            parts = list(client.chat(model=MODEL, messages=question, tools=[TOOL], stream=True))
            (asked,) = [p.message for p in parts if p.message.tool_calls]
        else:
            asked = client.chat(model=MODEL, messages=question, tools=[TOOL], stream=False).message
        (call,) = asked.tool_calls or ()
        assert (call.function.name, call.function.arguments) == (
            "lookup",
            {"query": "weather in Lima"},
        )
        history = [
            *question,
            asked.model_dump(exclude_none=True),
            {"role": "tool", "content": "mild", "tool_name": "lookup"},
        ]
        if streamed:
            parts = list(client.chat(model=MODEL, messages=history, tools=[TOOL], stream=True))
            text = "".join(p.message.content or "" for p in parts)
        else:
            answer = client.chat(model=MODEL, messages=history, tools=[TOOL], stream=False)
            text = answer.message.content or ""
        assert text == "The tool said: mild"


def test_ollama_engine_gets_the_request_unchanged(make_rig: MakeRig, wire: Wire) -> None:
    fake = FakeOllama(models=[OLLAMA_MODEL])
    rig = make_rig({"ollama": (fake, {"engine": "ollama"})})
    client = ollama_client(rig.node.url, wire)
    hi: Any = [{"role": "user", "content": "hi"}]
    streamed = list(client.chat(model=OLLAMA_MODEL, messages=hi, stream=True))
    assert "".join(p.message.content or "" for p in streamed) == "You said: hi"
    assert client.generate(model=OLLAMA_MODEL, prompt="go", stream=False).response == "You said: go"
    assert len(client.embed(model=OLLAMA_MODEL, input="vector").embeddings) == 1
    assert len(client.embeddings(model=OLLAMA_MODEL, prompt="old").embedding) == 8
    asked = client.chat(
        model=OLLAMA_MODEL,
        messages=[{"role": "user", "content": "weather in Bern"}],
        tools=[TOOL],
        stream=False,
    )
    assert asked.message.tool_calls is not None
    assert not fake.requests_to("/v1/chat/completions")
    paths = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/chat"]
    got = [r for r in fake.requests if r.method == "POST"]
    assert [r.path for r in got] == paths
    assert [r.body for r in got] == [s.body for s in wire.sent if s.path in paths]


def test_errors_in_ollama_shape(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = ollama_client(rig.node.url, wire)
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    assert "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.show("no-such-model")
    assert unknown.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model=MODEL, messages=[{"role": "wizard", "content": "x"}], stream=False)
    assert bad.value.status_code == 400 and "messages[0].role" in bad.value.error
    assert not [r for r in rig.fakes["vllm"].requests if r.method == "POST"]


def test_only_language_and_embedding_models_are_ollama_models(
    make_rig: MakeRig, wire: Wire
) -> None:
    rig = make_rig(
        {
            "vllm": (FakeVLLM(models=[MODEL]), {}),
            "asr": (FakeWhisper(), {"type": "stt"}),
            "emb": (FakeVLLM(models=[EMBEDDER], tasks=("embed",)), {"type": "embedding"}),
        }
    )
    client = ollama_client(rig.node.url, wire)
    assert sorted(m.model or "" for m in client.list().models) == sorted([EMBEDDER, MODEL])
    assert client.show(EMBEDDER).capabilities == ["embedding"]
    assert "completion" in (client.show(MODEL).capabilities or [])
    with pytest.raises(ollama.ResponseError) as speech:
        client.show("whisper-1")  # held, but a transcription model is no Ollama model
    assert speech.value.status_code == 404


def test_curl_examples_work_whatever_their_content_type(make_rig: MakeRig) -> None:
    """Ollama's docs post JSON with curl -d, which says application/x-www-form-urlencoded."""
    import urllib.request

    rig = translated(make_rig)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    request = urllib.request.Request(
        rig.node.url + "/api/chat",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.load(resp)
    assert answer["message"]["content"] == "You said: hi" and answer["done"] is True
