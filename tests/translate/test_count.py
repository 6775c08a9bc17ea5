"""Anthropic's token counting asked of each engine: the requests, and reading the answers."""

from __future__ import annotations

from typing import Any

import pytest

from quorum.errors import InvalidRequest, UpstreamFailed
from quorum.translate.count import Ask, answer, count_request, counter

TOOL = {"name": "lookup", "description": "Look it up.", "input_schema": {"type": "object"}}
BODY: dict[str, Any] = {
    "model": "qwen3",
    "system": "Answer briefly.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    "tools": [TOOL],
    "tool_choice": {"type": "any"},
}
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "hello there"},
]


def test_the_body_is_a_messages_request_without_max_tokens() -> None:
    req = count_request(BODY)
    assert req.model == "qwen3"
    assert req.chat["messages"] == MESSAGES
    assert req.chat["tools"][0]["function"]["name"] == "lookup"
    assert req.chat["tool_choice"] == "required"
    assert set(req.chat) == {"model", "messages", "tools", "tool_choice"}  # no sampling
    # max_tokens and stream are no part of counting: sent or not, they change nothing
    assert count_request({**BODY, "max_tokens": 5, "stream": True}) == req


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_a_bad_body_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        count_request(body)
    assert err.value.param == field


def test_vllm_is_asked_its_tokenize_with_the_chat() -> None:
    counting = counter("vllm", count_request(BODY).chat)
    assert counting is not None
    first = counting.first()
    assert first.path == "/tokenize"
    assert first.body["messages"] == MESSAGES and first.body["add_generation_prompt"] is True
    assert "tool_choice" not in first.body and first.body["tools"]
    assert counting.read({"count": 17, "max_model_len": 32768, "tokens": [1] * 17}) == 17
    with pytest.raises(UpstreamFailed, match="no count"):
        counter("vllm", {"messages": []}).read({"tokens": []})  # type: ignore[union-attr]


def test_llamacpp_applies_its_template_then_tokenizes_the_prompt() -> None:
    counting = counter("llamacpp", count_request(BODY).chat)
    assert counting is not None
    first = counting.first()
    assert first.path == "/apply-template" and first.body["tool_choice"] == "required"
    then = counting.read({"prompt": "<start_of_turn>user\nhello<end_of_turn>\n"})
    assert then == Ask(
        "/tokenize", {"content": "<start_of_turn>user\nhello<end_of_turn>\n", "add_special": True}
    )
    assert counting.read({"tokens": [2, 105, 2364, 107]}) == 4


def test_llamacpp_answers_without_what_was_asked_are_the_engine_s_fault() -> None:
    counting = counter("llamacpp", {"messages": []})
    assert counting is not None
    with pytest.raises(UpstreamFailed, match="no prompt"):
        counting.read({"error": "x"})
    counting.read({"prompt": "p"})
    with pytest.raises(UpstreamFailed, match="no tokens"):
        counting.read({"tokens": "3"})


@pytest.mark.parametrize("engine", ["llama-cpp-python", "embedded", "ollama"])
def test_engines_without_a_tokenizer_endpoint_answer_one_token(engine: str) -> None:
    counting = counter(engine, count_request(BODY).chat)
    assert counting is not None
    first = counting.first()
    assert first.path == "/v1/chat/completions"
    assert first.body["max_tokens"] == 1 and first.body["stream"] is False
    assert "tool_choice" not in first.body
    usage = {"prompt_tokens": 23, "completion_tokens": 1, "total_tokens": 24}
    assert counting.read({"choices": [], "usage": usage}) == 23
    with pytest.raises(UpstreamFailed, match=r"usage\.prompt_tokens"):
        counting.read({"choices": []})


@pytest.mark.parametrize("engine", ["lmstudio", "mlx", "openai"])
def test_other_engines_are_not_asked(engine: str) -> None:
    assert counter(engine, {"messages": []}) is None


def test_the_answer() -> None:
    assert answer(12) == {"input_tokens": 12}
    with pytest.raises(UpstreamFailed):
        counter("vllm", {}).read([])  # type: ignore[union-attr]
