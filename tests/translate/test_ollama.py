"""Ollama's native requests in, answers and errors out, read back by the ollama client."""

from __future__ import annotations

import json
import re
from typing import Any

import ollama
import pytest

from quorum.errors import InvalidRequest, UpstreamFailed
from quorum.translate import ollama as ol

from .helpers import JsonObject, ollama_client, usage

NOW = 1_700_000_000_123_456_789
PNG, JPEG = "iVBORw0KGgoAAAA", "/9j/4AAQ"
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def chat_answer(
    content: str = "Hello!",
    *,
    finish: str | None = "stop",
    tool_calls: list[JsonObject] | None = None,
    **extra: Any,
) -> JsonObject:
    message: JsonObject = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "model": "qwen3",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(),
        **extra,
    }


def serve(answer: JsonObject, seen: list[ol.OllamaRequest] | None = None) -> ollama.Client:
    """An ollama client in front of a node that translates, and an engine that says ``answer``."""
    readers = {
        "/api/chat": ol.chat_request,
        "/api/generate": ol.generate_request,
        "/api/embed": ol.embed_request,
        "/api/embeddings": ol.embeddings_request,
    }

    def handle(path: str, body: JsonObject) -> tuple[int, bytes]:
        try:
            req = readers[path](body)
        except InvalidRequest as exc:
            return 400, json.dumps(ol.error_body(exc.message)).encode()
        if seen is not None:
            seen.append(req)
        out = ol.load_answer(req) if req.load_only else ol.answer(req, answer, elapsed_ns=5_000_000)
        return 200, json.dumps(out).encode()

    return ollama_client(handle)


def test_chat_request_with_images_tools_and_options() -> None:
    req = ol.chat_request(
        {
            "model": "llava",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What?", "images": [PNG, JPEG]},
            ],
            "tools": [WEATHER],
            "format": "json",
            "think": "high",
            "keep_alive": "5m",
            "options": {
                "temperature": 0.1, "top_p": 0.9, "top_k": 40, "seed": 7, "num_predict": 64,
                "stop": ["\n\n"], "num_ctx": 8192, "min_p": 0.05,
            },
        }
    )  # fmt: skip
    assert req.kind == "chat" and req.path == "/v1/chat/completions"
    assert req.stream  # Ollama streams unless told not to
    assert req.body == {
        "model": "llava",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
                ],
            },
        ],
        "tools": [WEATHER],
        "temperature": 0.1,
        "top_p": 0.9,
        "min_p": 0.05,
        "top_k": 40,
        "seed": 7,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip


def test_tool_messages_find_their_calls() -> None:
    req = ol.chat_request(
        {
            "model": "m",
            "stream": False,
            "format": {"type": "object"},
            "options": {"num_predict": -1},
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                        {"function": {"name": "get_time", "arguments": {}}},
                    ],
                },
                {"role": "tool", "tool_name": "get_time", "content": "noon"},
                {"role": "tool", "content": "21 C"},  # neither id nor name: the next unanswered
            ],
        }
    )
    messages = req.body["messages"]
    assert messages[1]["tool_calls"][0] == {
        "id": "call_1_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1_1", "content": "noon"}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1_0", "content": "21 C"}
    assert req.body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "max_tokens" not in req.body  # -1: no limit
    assert not req.stream and "stream" not in req.body


def test_generate_goes_to_chat_unless_raw_or_with_a_suffix() -> None:
    templated = ol.generate_request({"model": "m", "prompt": "Why?", "system": "Be brief."})
    assert templated.path == "/v1/chat/completions"
    assert templated.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    ]
    prompt = "[INST] Why? [/INST]"
    raw = ol.generate_request({"model": "m", "prompt": prompt, "raw": True, "stream": False})
    assert (raw.path, raw.body) == ("/v1/completions", {"model": "m", "prompt": prompt})
    fim = ol.generate_request(
        {"model": "m", "prompt": "def f(", "suffix": "    return x", "stream": False}
    )
    assert fim.path == "/v1/completions"
    assert fim.body == {"model": "m", "prompt": "def f(", "suffix": "    return x"}


def test_embed_requests() -> None:
    one = ol.embed_request({"model": "e", "input": "hello", "truncate": True, "dimensions": 64})
    assert (one.path, one.body) == (
        "/v1/embeddings",
        {"model": "e", "input": ["hello"], "encoding_format": "float", "dimensions": 64},
    )
    assert ol.embed_request({"model": "e", "input": ["a", "b"]}).body["input"] == ["a", "b"]
    old = ol.embeddings_request({"model": "e", "prompt": "hello"})
    assert (old.kind, old.body["input"]) == ("embeddings", ["hello"])


def one(**message: Any) -> JsonObject:
    return {"model": "m", "messages": [message]}


@pytest.mark.parametrize(
    ("reader", "body", "field"),
    [
        (ol.chat_request, {"messages": []}, "model"),
        (ol.chat_request, {"model": "m", "messages": "hi"}, "messages"),
        (ol.chat_request, one(role="robot", content="x"), "messages[0].role"),
        (ol.chat_request, one(role="user", images=[3]), "messages[0].images[0]"),
        (ol.chat_request, one(role="tool", content="x"), "messages[0]"),
        (ol.chat_request, one(role="assistant", tool_calls=[{}]),
         "messages[0].tool_calls[0].function"),
        (ol.chat_request, {"model": "m", "format": "yaml", "messages": []}, "format"),
        (ol.chat_request, {"model": "m", "options": {"num_predict": "x"}}, "options.num_predict"),
        (ol.chat_request, {"model": "m", "options": {"stop": 1}}, "options.stop"),
        (ol.chat_request, {"model": "m", "tools": [{"type": "function"}]}, "tools[0].function"),
        (ol.generate_request, {"model": "m", "prompt": 1}, "prompt"),
        (ol.generate_request, {"model": "m", "prompt": "x", "raw": True, "images": ["x"]},
         "images"),
        (ol.embed_request, {"model": "m", "input": [1, 2]}, "input"),
        (ol.embeddings_request, {"prompt": "x"}, "model"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(reader: Any, body: JsonObject, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        reader(body)
    assert err.value.param == field


def test_chat_answer_through_the_client() -> None:
    seen: list[ol.OllamaRequest] = []
    client = serve(chat_answer("Hello!"), seen)
    out = client.chat(model="qwen3", messages=[{"role": "user", "content": "Hi"}], stream=False)
    assert out.message.content == "Hello!"
    assert (out.done, out.done_reason) == (True, "stop")
    assert (out.prompt_eval_count, out.eval_count) == (11, 7)
    assert out.total_duration == 5_000_000
    assert out.eval_duration == 5_000_000  # no engine timings: the whole time
    assert out.prompt_eval_duration is None  # unknown: left out, as Ollama leaves zeros out
    assert out.created_at is not None and RFC3339_NS.match(out.created_at)
    assert seen[0].body["messages"] == [{"role": "user", "content": "Hi"}]


def test_durations_from_llama_cpp_timings() -> None:
    req = ol.chat_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    timings = {"prompt_n": 11, "prompt_ms": 12.5, "predicted_n": 7, "predicted_ms": 70.25}
    out = ol.answer(req, chat_answer(timings=timings), elapsed_ns=90_000_000, now_ns=NOW)
    assert out["created_at"] == "2023-11-14T22:13:20.123456789Z"
    assert (out["prompt_eval_duration"], out["eval_duration"]) == (12_500_000, 70_250_000)
    assert out["total_duration"] == 90_000_000


def test_tool_call_round_trip_through_the_client() -> None:
    paris = '{"city": "Paris"}'
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": paris}}
    client = serve(chat_answer("", finish="tool_calls", tool_calls=[call]))
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat(model="m", messages=ask, tools=[WEATHER], stream=False)
    assert first.done_reason == "stop"  # Ollama says stop after a tool call
    assert first.message.tool_calls is not None
    [made] = first.message.tool_calls
    assert made.function.name == "get_weather"
    assert dict(made.function.arguments) == {"city": "Paris"}
    # What an ollama user sends next: the answer's message, then the tool's result.
    seen: list[ol.OllamaRequest] = []
    serve(chat_answer("It is 21 C."), seen).chat(
        model="m",
        messages=[
            *ask,
            first.message,
            {"role": "tool", "tool_name": "get_weather", "content": "21"},
        ],
        stream=False,
    )
    messages = seen[0].body["messages"]
    [sent] = messages[1]["tool_calls"]
    assert sent["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert messages[2] == {"role": "tool", "tool_call_id": sent["id"], "content": "21"}


def test_generate_answer_through_the_client() -> None:
    choice = {"index": 0, "text": " blue.", "finish_reason": "length"}
    answer = {"id": "cmpl-1", "choices": [choice], "usage": usage(3, 2)}
    out = serve(answer).generate(model="m", prompt="The sky is", raw=True, stream=False)
    assert (out.response, out.done_reason, out.eval_count) == (" blue.", "length", 2)


def test_embed_answers_through_the_client() -> None:
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
        ],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    out = serve(answer).embed(model="e", input=["a", "b"])
    assert [list(v) for v in out.embeddings] == [[0.1, 0.2], [0.3, 0.4]]
    assert out.prompt_eval_count == 4
    assert list(serve(answer).embeddings(model="e", prompt="a").embedding) == [0.1, 0.2]


def test_load_only_requests_are_answered_without_the_engine() -> None:
    client = serve({})  # the engine's answer is never read
    [out] = client.chat(model="m", messages=[], stream=True)  # a load answers in one line
    assert out.done_reason == "load"
    assert client.generate(model="m", prompt="").done_reason == "load"
    assert ol.load_answer(ol.embed_request({"model": "e"})) == {"model": "e", "embeddings": []}


def test_cut_and_broken_answers() -> None:
    req = ol.chat_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    with pytest.raises(UpstreamFailed):
        ol.answer(req, chat_answer(finish=None))
    bad_call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    with pytest.raises(UpstreamFailed, match="'f'"):
        ol.answer(req, chat_answer(finish="tool_calls", tool_calls=[bad_call]))
    with pytest.raises(UpstreamFailed):
        ol.answer(ol.embed_request({"model": "e", "input": "x"}), {"data": "nope"})


def test_errors_in_ollamas_shape() -> None:
    client = serve(chat_answer())
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="m", messages=[{"role": "robot", "content": "x"}], stream=False)
    assert err.value.status_code == 400
    assert err.value.error == "'messages[0].role': unknown role 'robot'"
    assert ol.error_body("model 'x' not found") == {"error": "model 'x' not found"}
