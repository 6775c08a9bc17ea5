"""Anthropic's token counting through a node, with the anthropic SDK's ``messages.count_tokens``
unchanged: passed through to an engine that serves Anthropic's API, asked of vLLM's
``/tokenize``, of llama.cpp's ``/apply-template`` and ``/tokenize``, of Ollama as a one-token
chat; refused in Anthropic's shape when no holder's engine can count."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.apis.helpers import LOOKUP, Wire, anthropic_client
from tests.conftest import MakeRig
from tests.fakes import FakeLlamaCpp, FakeLMStudio, FakeOllama, FakeVLLM

MODEL = "Qwen/Qwen3-0.6B"
TOOL: Any = {"name": "lookup", "description": "Look it up.", "input_schema": LOOKUP}
ASK: Any = {
    "model": MODEL,
    "system": "Answer briefly.",
    "messages": [{"role": "user", "content": "hello there"}],
}
WORDS = 4  # what the fakes count: "Answer briefly." and "hello there", a token a word


def test_vllm_counts_with_its_tokenize(make_rig: MakeRig, wire: Wire) -> None:
    rig = make_rig({"vllm": (FakeVLLM(models=[MODEL]), {})})
    client = anthropic_client(rig.node.url, wire)
    raw = client.messages.with_raw_response.count_tokens(**ASK, tools=[TOOL])
    assert raw.parse().input_tokens == WORDS
    assert raw.headers["x-quorum-translated"] == "count_tokens; engine spoke /tokenize"
    assert raw.headers["x-quorum-route"] == "local"
    (asked,) = rig.fakes["vllm"].requests_to("/tokenize")
    body = asked.json()
    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hello there"},
    ]
    assert body["add_generation_prompt"] is True and body["tools"][0]["type"] == "function"
    assert not rig.fakes["vllm"].requests_to("/v1/chat/completions")  # nothing generated


def test_llamacpp_applies_its_template_then_tokenizes(make_rig: MakeRig, wire: Wire) -> None:
    rig = make_rig({"llama": (FakeLlamaCpp(alias=MODEL), {"engine": "llamacpp"})})
    client = anthropic_client(rig.node.url, wire)
    raw = client.messages.with_raw_response.count_tokens(**ASK)
    # <bos> <start_of_turn> system Answer briefly. <end_of_turn> <start_of_turn> user hello
    # there <end_of_turn> <start_of_turn> model: the template's turns are tokens too.
    assert raw.parse().input_tokens == 13
    assert raw.headers["x-quorum-translated"].endswith("/apply-template, /tokenize")
    fake = rig.fakes["llama"]
    (template,) = fake.requests_to("/apply-template")
    (tokenize,) = fake.requests_to("/tokenize")
    assert template.json()["messages"][1] == {"role": "user", "content": "hello there"}
    assert tokenize.json()["content"].endswith("<start_of_turn>model\n")
    assert tokenize.json()["add_special"] is True


def test_ollama_counts_by_answering_one_token(make_rig: MakeRig, wire: Wire) -> None:
    rig = make_rig({"ollama": (FakeOllama(models=["llama3.2:1b"]), {"engine": "ollama"})})
    client = anthropic_client(rig.node.url, wire)
    assert client.messages.count_tokens(**{**ASK, "model": "llama3.2:1b"}).input_tokens == WORDS
    (asked,) = rig.fakes["ollama"].requests_to("/v1/chat/completions")
    assert asked.json()["max_tokens"] == 1 and asked.json()["stream"] is False


def test_an_engine_that_speaks_anthropic_counts_itself(make_rig: MakeRig, wire: Wire) -> None:
    fake = FakeVLLM(models=[MODEL], native_apis=("messages",))
    rig = make_rig({"vllm": (fake, {"features": ["messages"]})})
    client = anthropic_client(rig.node.url, wire)
    raw = client.messages.with_raw_response.count_tokens(**ASK)
    assert raw.parse().input_tokens == WORDS
    assert "x-quorum-translated" not in raw.headers
    (passed,) = fake.requests_to("/v1/messages/count_tokens")
    assert passed.body == wire.to("/v1/messages/count_tokens")[-1].body  # as the SDK sent it
    assert not fake.requests_to("/tokenize")


def test_a_holder_that_can_count_is_chosen_over_one_that_cannot(
    make_rig: MakeRig, wire: Wire
) -> None:
    rig = make_rig(
        {
            "studio": (FakeLMStudio(models=[MODEL]), {"engine": "lmstudio"}),
            "vllm": (FakeVLLM(models=[MODEL]), {"engine": "vllm"}),
        }
    )
    client = anthropic_client(rig.node.url, wire)
    for _ in range(3):
        assert client.messages.count_tokens(**ASK).input_tokens == WORDS
    assert len(rig.fakes["vllm"].requests_to("/tokenize")) == 3
    assert not [r for r in rig.fakes["studio"].requests if r.method == "POST"]


def test_no_holder_that_can_count_is_a_clear_error(make_rig: MakeRig, wire: Wire) -> None:
    rig = make_rig({"studio": (FakeLMStudio(models=[MODEL]), {"engine": "lmstudio"})})
    client = anthropic_client(rig.node.url, wire)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.count_tokens(**ASK)
    error: Any = refused.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "'studio' on" in error["error"]["message"] and "lmstudio" in error["error"]["message"]
    assert "count" in error["error"]["message"]
    assert not [r for r in rig.fakes["studio"].requests if r.method == "POST"]
    # The rest of the API is unchanged: an unknown model is still 404, a bad body 400.
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(**{**ASK, "model": "nope"})
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.count_tokens(model=MODEL, messages=[])
    assert "messages" in str(bad.value)
