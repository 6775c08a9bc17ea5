"""OpenAI's Responses API through a node, with the openai SDK unchanged: translated for an
engine that serves only chat completions, passed through to one that serves it natively."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.apis.helpers import LOOKUP, Wire, openai_client
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeVLLM

MODEL = "Qwen/Qwen3-0.6B"
TOOL: Any = {"type": "function", "name": "lookup", "parameters": LOOKUP}


def translated(make_rig: MakeRig) -> Rig:
    return make_rig({"vllm": (FakeVLLM(models=[MODEL]), {})})


def native(make_rig: MakeRig, **over: Any) -> Rig:
    fake = FakeVLLM(models=[MODEL], native_apis=("responses",))
    return make_rig({"vllm": (fake, {"features": ["responses"]})}, **over)


def calls(output: list[Any]) -> list[Any]:
    return [item for item in output if item.type == "function_call"]


def test_create_translated_with_tool_round_trip(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = openai_client(rig.base_url, wire)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="hello there", instructions="Answer briefly."
    )
    done = raw.parse()
    assert done.output_text == "You said: hello there"
    assert done.status == "completed" and done.model == MODEL
    assert done.usage is not None and done.usage.output_tokens == 4
    assert raw.headers["x-quorum-translated"].startswith("responses")
    assert raw.headers["x-quorum-route"] == "local"
    fake = rig.fakes["vllm"]
    (first,) = fake.requests_to("/v1/chat/completions")
    assert first.json()["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hello there"},
    ]

    asked = client.responses.create(model=MODEL, input="weather in Paris", tools=[TOOL])
    (call,) = calls(asked.output)
    assert (call.name, json.loads(call.arguments)) == ("lookup", {"query": "weather in Paris"})
    history: list[Any] = [
        {"role": "user", "content": "weather in Paris"},
        *[item.model_dump(exclude_none=True) for item in asked.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
    ]
    answered = client.responses.create(model=MODEL, input=history, tools=[TOOL])
    assert answered.output_text == "The tool said: sunny, 21 C"
    assert not calls(answered.output)
    sent = fake.requests_to("/v1/chat/completions")[-1].json()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


def stream_events(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    with client.responses.stream(**kwargs) as stream:
        return list(stream)


def test_stream_translated_with_tool_round_trip(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = openai_client(rig.base_url, wire)
    events = stream_events(client, model=MODEL, input="one two three four")
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "You said: one two three four"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.output_tokens == 6

    events = stream_events(client, model=MODEL, input="weather in Oslo", tools=[TOOL])
    done = events[-1].response
    (call,) = calls(done.output)
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"query": "weather in Oslo"} == json.loads(call.arguments)
    history: list[Any] = [
        {"role": "user", "content": "weather in Oslo"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "snow"},
    ]
    events = stream_events(client, model=MODEL, input=history, tools=[TOOL])
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "The tool said: snow"


def test_native_engine_gets_the_request_unchanged(make_rig: MakeRig, wire: Wire) -> None:
    rig = native(make_rig, aliases={"house-model": MODEL})
    client = openai_client(rig.base_url, wire)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="weather in Rome", tools=[TOOL], instructions="Use the tool."
    )
    (call,) = calls(raw.parse().output)
    assert json.loads(call.arguments) == {"query": "weather in Rome"}
    assert "x-quorum-translated" not in raw.headers
    fake = rig.fakes["vllm"]
    assert not fake.requests_to("/v1/chat/completions")
    (got,) = fake.requests_to("/v1/responses")
    (sent,) = wire.to("/v1/responses")
    assert got.body == sent.body  # byte for byte

    history = [
        {"role": "user", "content": "weather in Rome"},
        {"type": "function_call", "call_id": call.call_id, "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call.call_id, "output": "warm"},
    ]
    events = stream_events(client, model="house-model", input=history, tools=[TOOL])
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "The tool said: warm"
    got = fake.requests_to("/v1/responses")[-1]
    sent = wire.to("/v1/responses")[-1]
    # An alias is the only change: the engine's own name for the model.
    assert got.json() == {**sent.json(), "model": MODEL}
    assert sent.json()["model"] == "house-model"


def test_errors_in_openai_shape(make_rig: MakeRig, wire: Wire) -> None:
    rig = translated(make_rig)
    client = openai_client(rig.base_url, wire)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="hi")
    assert missing.value.status_code == 404
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as stateful:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert stateful.value.param == "previous_response_id"
    assert "stores no responses" in stateful.value.message
    mystery: Any = [{"type": "mystery"}]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model=MODEL, input=mystery)
    body: Any = bad.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the SDK unwraps "error"
    assert body["param"] == "input[0].type"
    assert not [r for r in rig.fakes["vllm"].requests if r.method == "POST"]
