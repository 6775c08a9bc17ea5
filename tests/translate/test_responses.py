"""OpenAI Responses requests in, whole responses out (recorded shapes, the SDK's models)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response

from quorum.errors import InvalidRequest, UpstreamFailed
from quorum.translate import responses

from .helpers import openai_client, usage

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


IMAGE_FILE = {"type": "input_image", "file_id": "file_1"}
NOPE = {"type": "function", "name": "nope"}


def chat_answer(
    content: str | None = "Hello!",
    *,
    finish: str | None = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-9a8b7c6d5e4f",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "qwen3",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(),
    }


def test_string_input_and_settings() -> None:
    req = responses.chat_request(
        {
            "model": "qwen3",
            "input": "Hi",
            "instructions": "Be brief.",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "store": True,
            "metadata": {"k": "v"},
            "reasoning": {"effort": "minimal"},
        }
    )
    assert req.chat == {
        "model": "qwen3",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning_effort": "low",
    }
    assert not req.stream
    assert req.echo["metadata"] == {"k": "v"}


def test_items_become_chat_messages() -> None:
    req = responses.chat_request(
        {
            "model": "qwen3",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
            ],
        }
    )
    assert req.chat["messages"] == [
        {"role": "system", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Thanks"},
    ]


def test_tools_choice_format_and_stream() -> None:
    req = responses.chat_request(
        {
            "model": "qwen3",
            "input": "Weather?",
            "tools": [WEATHER, {"type": "web_search"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "schema": {"type": "object"},
                    "strict": True,
                }
            },
            "stream": True,
        }
    )
    assert req.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]  # web_search runs at OpenAI: left out
    assert req.chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert req.chat["parallel_tool_calls"] is False
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert req.chat["stream"] is True
    assert req.chat["stream_options"] == {"include_usage": True}
    assert req.echo["tools"][0]["name"] == "get_weather"


def test_allowed_tools_keeps_only_those() -> None:
    other = {**WEATHER, "name": "other"}
    req = responses.chat_request(
        {
            "model": "m",
            "input": "x",
            "tools": [WEATHER, other],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "other"}],
            },
        }
    )
    assert [t["function"]["name"] for t in req.chat["tools"]] == ["other"]
    assert req.chat["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "computer_call_output"}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [IMAGE_FILE]}]},
         "input[0].content[0].image_url"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": NOPE}, "tool_choice.name"),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": [{"role": "system", "content": "only"}]}, "input"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        responses.chat_request(body)
    assert err.value.param == field
    assert f"'{field}'" in err.value.message


def test_previous_response_id_says_the_node_is_stateless() -> None:
    with pytest.raises(InvalidRequest, match="stores no responses"):
        responses.chat_request({"model": "m", "input": "x", "previous_response_id": "resp_1"})


def test_whole_answer_parses_as_the_sdks_response() -> None:
    req = responses.chat_request({"model": "qwen3", "input": "Hi", "instructions": "Be brief."})
    out = responses.answer(req, chat_answer(), response_id="resp_abc123", created_at=1_700_000_000)
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Hello!"
    assert parsed.status == "completed"
    assert parsed.instructions == "Be brief."
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (11, 7)
    assert parsed.usage.total_tokens == 18
    assert out["output"][0]["id"] == "msg_abc123"
    assert out["store"] is False


def test_length_finish_is_an_incomplete_response() -> None:
    req = responses.chat_request({"model": "qwen3", "input": "Hi", "max_output_tokens": 3})
    out = Response.model_validate(responses.answer(req, chat_answer("Hel", finish="length")))
    assert out.status == "incomplete"
    assert out.incomplete_details is not None
    assert out.incomplete_details.reason == "max_output_tokens"
    assert out.max_output_tokens == 3


def test_an_answer_without_finish_reason_is_cut() -> None:
    req = responses.chat_request({"model": "m", "input": "Hi"})
    with pytest.raises(UpstreamFailed) as err:
        responses.answer(req, chat_answer(finish=None))
    assert err.value.code == "answer_cut"


def test_reasoning_becomes_a_reasoning_item() -> None:
    req = responses.chat_request({"model": "m", "input": "Hi"})
    out = Response.model_validate(responses.answer(req, chat_answer("42", reasoning="6*7")))
    assert [item.type for item in out.output] == ["reasoning", "message"]
    assert out.output_text == "42"


def test_tool_call_round_trip_through_the_sdk() -> None:
    """function_call out -> the SDK's next input -> assistant tool_calls and a tool message."""
    req = responses.chat_request(
        {"model": "qwen3", "input": "Weather in Paris?", "tools": [WEATHER]}
    )
    call = {
        "id": "call_51f0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    answer = chat_answer(None, finish="tool_calls", tool_calls=[call])
    body = json.dumps(responses.answer(req, answer)).encode()
    with openai_client(body, content_type="application/json") as client:
        first = client.responses.create(model="qwen3", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, c.call_id, c.arguments) for c in calls] == [
        ("get_weather", "call_51f0", '{"city":"Paris"}')
    ]
    # What an SDK user sends next: the conversation so far, the call, and its output.
    follow = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": "call_51f0", "output": '{"temp": 21}'},
    ]
    again = responses.chat_request({"model": "qwen3", "input": follow, "tools": [WEATHER]})
    assert again.chat["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_51f0", "content": '{"temp": 21}'},
    ]


def test_tool_outputs_as_parts_and_images_follow_the_tool_messages() -> None:
    req = responses.chat_request(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "a", "name": "shot", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "read", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "a",
                    "output": [
                        {"type": "input_text", "text": "here"},
                        {"type": "input_image", "image_url": "https://x/1.png", "detail": "low"},
                    ],
                },
                {
                    "type": "function_call_output",
                    "output": "text",
                },  # no call_id: the next unanswered
            ],
        }
    )
    messages = req.chat["messages"]
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "user"]
    assert len(messages[0]["tool_calls"]) == 2
    assert messages[1] == {"role": "tool", "tool_call_id": "a", "content": "here"}
    assert messages[2]["tool_call_id"] == "b"
    assert messages[3]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/1.png", "detail": "low"}}
    ]


def test_a_text_message_then_calls_merge_into_one_assistant_turn() -> None:
    req = responses.chat_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "ok"},
            ],
        }
    )
    assistant = req.chat["messages"][1]
    assert assistant["content"] == "Checking."
    assert assistant["tool_calls"][0]["id"] == "a"
