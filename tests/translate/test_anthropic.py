"""Anthropic Messages requests in, messages and errors out (recorded shapes, the SDK)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from quorum.errors import InvalidRequest, UpstreamFailed
from quorum.translate import anthropic as an

from .helpers import anthropic_client, usage

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
EPHEMERAL = {"type": "ephemeral"}
PARIS = {"city": "Paris"}
FILE = {"type": "file", "file_id": "file_1"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def body(**over: Any) -> dict[str, Any]:
    return {
        "model": "qwen3",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hi"}],
        **over,
    }


def chat_answer(
    content: str | None = "Hello!",
    *,
    finish: str | None = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    **choice: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-0a1b2c3d4e5f",
        "object": "chat.completion",
        "model": "qwen3",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": usage(),
    }


def test_system_settings_and_plain_messages() -> None:
    req = an.chat_request(
        body(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            stop_sequences=["END"],
            temperature=0.3,
            top_p=0.8,
            top_k=40,
            metadata={"user_id": "u-1"},
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    )
    assert req.chat == {
        "model": "qwen3",
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 256,
        "stop": ["END"],
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 40,
        "user": "u-1",
    }
    assert req.stop_sequences == ("END",)
    assert not req.stream


def test_blocks_tools_and_stream() -> None:
    req = an.chat_request(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?", "cache_control": EPHEMERAL},
                        {"type": "image", "source": PNG},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Let me look."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": PARIS,
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "And now?"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"},
                    ],
                },
            ],
            tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stream=True,
        )
    )
    assert req.chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21 C"},  # results come first
        {"role": "user", "content": "And now?"},
    ]
    assert req.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]  # web_search runs at Anthropic: left out
    assert req.chat["tool_choice"] == "required"
    assert req.chat["parallel_tool_calls"] is False
    assert req.chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("choice", "chat"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"},
         {"type": "function", "function": {"name": "get_weather"}}),
    ],
)  # fmt: skip
def test_tool_choices(choice: dict[str, Any], chat: Any) -> None:
    assert an.chat_request(body(tools=[WEATHER], tool_choice=choice)).chat["tool_choice"] == chat


SHOT = {"type": "tool_use", "id": "t", "name": "shot", "input": {}}


def test_errored_tool_results_and_their_images() -> None:
    req = an.chat_request(
        body(
            messages=[
                {"role": "assistant", "content": [SHOT]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "disk full"},
                                {"type": "image", "source": PNG},
                            ],
                        }
                    ],
                },
            ]
        )
    )
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert req.chat["messages"][1:] == [
        {"role": "tool", "tool_call_id": "t", "content": "Error: disk full"},
        {"role": "user", "content": [image]},
    ]


def test_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = an.chat_request(body(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": FILE}]}]},
         "messages[0].content[0].source.type"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
         "messages[0].content[0].tool_use_id"),
        ({"system": 3}, "system"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"stop_sequences": "END\n"}, None),  # a single string is accepted
        ({"temperature": "hot"}, "temperature"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(over: dict[str, Any], field: str | None) -> None:
    raw = {k: v for k, v in body(**over).items() if v is not None}
    if field is None:
        an.chat_request(raw)
        return
    with pytest.raises(InvalidRequest) as err:
        an.chat_request(raw)
    assert err.value.param == field


def test_whole_answer_parses_as_the_sdks_message() -> None:
    req = an.chat_request(body())
    out = an.answer(req, chat_answer(), message_id="msg_01")
    message = Message.model_validate(out)
    assert message.content[0].type == "text" and message.content[0].text == "Hello!"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert message.model == "qwen3"
    assert an.answer(req, chat_answer())["id"] == "msg_0a1b2c3d4e5f"


@pytest.mark.parametrize(
    ("finish", "extra", "reason", "sequence"),
    [
        ("length", {}, "max_tokens", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),
        ("stop", {"stop_reason": 151645}, "end_turn", None),  # vLLM: a stop token id
        ("content_filter", {}, "refusal", None),
    ],
)
def test_stop_reasons(
    finish: str, extra: dict[str, Any], reason: str, sequence: str | None
) -> None:
    req = an.chat_request(body(stop_sequences=["END"]))
    out = Message.model_validate(an.answer(req, chat_answer(finish=finish, **extra)))
    assert (out.stop_reason, out.stop_sequence) == (reason, sequence)


def test_cached_tokens_are_cache_reads() -> None:
    answer = chat_answer()
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 8}
    out = Message.model_validate(an.answer(an.chat_request(body()), answer))
    assert (out.usage.input_tokens, out.usage.cache_read_input_tokens) == (3, 8)


def test_tool_use_round_trip_through_the_sdk() -> None:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    req = an.chat_request(body(tools=[WEATHER]))
    out = an.answer(req, chat_answer(None, finish="tool_calls", tool_calls=[call]))
    assert Message.model_validate(out).content[0].type == "tool_use"
    raw = json.dumps(out)
    with anthropic_client(raw.encode(), content_type="application/json") as client:
        first = client.messages.create(
            model="qwen3",
            max_tokens=256,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("call_9", "get_weather", {"city": "Paris"})
    # What an SDK user sends next: the answer as an assistant turn, then the result.
    turn = {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in first.content],
    }
    result = {"type": "tool_result", "tool_use_id": "call_9", "content": "21 C"}
    follow = [
        {"role": "user", "content": "Weather in Paris?"},
        turn,
        {"role": "user", "content": [result]},
    ]
    again = an.chat_request(body(messages=follow, tools=[WEATHER]))
    sent = {**call, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert again.chat["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [sent]},
        {"role": "tool", "tool_call_id": "call_9", "content": "21 C"},
    ]


def test_arguments_that_are_not_json_are_an_engine_failure() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    with pytest.raises(UpstreamFailed, match="'f'"):
        an.answer(
            an.chat_request(body()), chat_answer(None, finish="tool_calls", tool_calls=[call])
        )


def test_a_cut_answer_is_refused() -> None:
    with pytest.raises(UpstreamFailed):
        an.answer(an.chat_request(body()), chat_answer(finish=None))


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (502, "api_error", anthropic.InternalServerError),
        (503, "overloaded_error", anthropic.InternalServerError),
    ],
)
def test_errors_in_anthropics_shape(status: int, kind: str, error: type[Exception]) -> None:
    out = an.error_body(status, "nope")
    assert out == {"type": "error", "error": {"type": kind, "message": "nope"}}
    raw = json.dumps(out).encode()
    client = anthropic_client(raw, status=status, content_type="application/json")
    with client, pytest.raises(error) as err:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert isinstance(err.value, anthropic.APIStatusError)
    assert err.value.body == out
