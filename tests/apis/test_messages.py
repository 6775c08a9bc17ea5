"""Anthropic's Messages API through a node, with the anthropic SDK unchanged: translated for
an engine that serves only chat completions, passed through to one that serves it natively.
The SDK's key goes as ``x-api-key`` by default, as Bearer with ``auth_token``: loopback
takes either, and neither reaches the engine."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.apis.helpers import LOOKUP, Wire, anthropic_client
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeVLLM

MODEL = "Qwen/Qwen3-0.6B"
TOOL: Any = {"name": "lookup", "description": "Look it up.", "input_schema": LOOKUP}


def translated(make_rig: MakeRig) -> Rig:
    return make_rig({"vllm": (FakeVLLM(models=[MODEL]), {})})


def native(make_rig: MakeRig) -> Rig:
    fake = FakeVLLM(models=[MODEL], native_apis=("messages",))
    return make_rig({"vllm": (fake, {"features": ["messages"]})})


def tool_uses(message: Any) -> list[Any]:
    return [block for block in message.content if block.type == "tool_use"]


def round_trip(client: anthropic.Anthropic, *, stream: bool) -> tuple[Any, Any]:
    """Ask with the tool, answer its call, and return both answers of the model."""
    question: list[Any] = [{"role": "user", "content": "weather in Paris"}]

    def ask(messages: list[Any]) -> Any:
        if not stream:
            return client.messages.create(
                model=MODEL, max_tokens=64, messages=messages, tools=[TOOL]
            )
        with client.messages.stream(
            model=MODEL, max_tokens=64, messages=messages, tools=[TOOL]
        ) as events:
            kinds = [e.type for e in events]
            assert kinds[0] == "message_start" and "content_block_delta" in kinds
            return events.get_final_message()

    asked = ask(question)
    assert asked.stop_reason == "tool_use"
    (use,) = tool_uses(asked)
    assert (use.name, use.input) == ("lookup", {"query": "weather in Paris"})
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in asked.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        },
    ]
    return asked, ask(history)


def test_create_and_stream_translated_with_a_tool(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = anthropic_client(rig.node.url, wire)
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "hello there"}],
    )
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "You said: hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 4
    assert raw.headers["x-quorum-translated"].startswith("messages")
    fake = rig.fakes["vllm"]
    (first,) = fake.requests_to("/v1/chat/completions")
    assert first.json()["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert wire.sent[0].headers["x-api-key"] == "unused"
    assert "authorization" not in wire.sent[0].headers
    assert "x-api-key" not in first.headers and "authorization" not in first.headers

    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == "You said: one two three"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5

    for streamed in (False, True):
        asked, answered = round_trip(client, stream=streamed)
        assert answered.stop_reason == "end_turn"
        assert answered.content[0].text == "The tool said: sunny"
        sent = fake.requests_to("/v1/chat/completions")[-1].json()["messages"]
        assert sent[-1] == {
            "role": "tool",
            "tool_call_id": tool_uses(asked)[0].id,
            "content": "sunny",
        }


def test_bearer_key_is_accepted_from_loopback(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = anthropic_client(rig.node.url, wire, key="sk-ant-local", bearer=True)
    message = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "You said: hi"  # type: ignore[union-attr]
    (sent,) = wire.to("/v1/messages")
    assert sent.headers["authorization"] == "Bearer sk-ant-local"
    assert "x-api-key" not in sent.headers
    (got,) = rig.fakes["vllm"].requests_to("/v1/chat/completions")
    assert "sk-ant-local" not in str(dict(got.headers))


def test_native_engine_gets_the_request_unchanged(make_rig: MakeRig, wire: Wire) -> None:
    rig = native(make_rig)
    client = anthropic_client(rig.node.url, wire)
    for streamed in (False, True):
        _, answered = round_trip(client, stream=streamed)
        assert answered.content[0].text == "The tool said: sunny"
    fake = rig.fakes["vllm"]
    assert not fake.requests_to("/v1/chat/completions")
    got = fake.requests_to("/v1/messages")
    sent = wire.to("/v1/messages")
    assert len(got) == len(sent) == 4
    assert [g.body for g in got] == [s.body for s in sent]  # byte for byte
    assert "x-api-key" not in got[0].headers


def test_errors_in_anthropic_shape(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = anthropic_client(rig.node.url, wire)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    body: Any = missing.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    hologram: Any = [{"role": "user", "content": [{"type": "hologram"}]}]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=8, messages=hologram)
    body = bad.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, messages=[], max_tokens=8)
    assert not [r for r in rig.fakes["vllm"].requests if r.method == "POST"]
