"""Chat streams told as Anthropic's event stream, read back by the anthropic SDK."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import ParsedMessage, RawMessageStreamEvent
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from quorum.translate import anthropic as an
from quorum.translate.anthropic_stream import AnthropicStream

from .helpers import (
    anthropic_client,
    chunk,
    sse_bytes,
    sse_events,
    text_chunks,
    tool_chunks,
    translate,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
ASK: dict[str, Any] = {
    "model": "qwen3",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


def stream_of(
    chunks: list[dict[str, Any]], *, done: bool = True, step: int | None = None, **body: Any
) -> bytes:
    req = an.chat_request({**ASK, "stream": True, **body})
    return translate(
        AnthropicStream(req, message_id="msg_01"), sse_bytes(chunks, done=done), step=step
    )


def final_message(body: bytes) -> ParsedMessage[Any]:
    with anthropic_client(body) as client, client.messages.stream(**ASK) as stream:
        return stream.get_final_message()


def test_text_stream_event_sequence() -> None:
    events = sse_events(stream_of(text_chunks("Hel", "lo")))
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        assert data["type"] == name
        if name != "ping":
            EVENTS.validate_python(data)  # each is a valid event of the SDK's union
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"input_tokens": 11, "output_tokens": 7}


def test_the_sdk_accumulates_our_stream() -> None:
    body = stream_of(text_chunks("Hel", "lo, ", "world"))
    with anthropic_client(body) as client, client.messages.stream(**ASK) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Hello, world"
    assert message.content[0].type == "text"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert message.id == "msg_01"


def test_create_with_stream_true_yields_typed_events() -> None:
    with anthropic_client(stream_of(text_chunks("ok"))) as client:
        kinds = [e.type for e in client.messages.create(**ASK, stream=True)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_tool_use_stream() -> None:
    message = final_message(stream_of(tool_chunks(arguments='{"city": "Paris"}')))
    use = message.content[0]
    assert use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("call_7d2e", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 20


def test_thinking_text_and_interleaved_parallel_calls() -> None:
    chunks = [
        chunk(role=True, reasoning="Let me "),
        chunk(reasoning="check."),
        chunk(content="Checking both."),
        chunk(tools=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}]),
        chunk(tools=[{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]),
        chunk(tools=[{"index": 0, "function": {"arguments": "1}"}}]),
        chunk(finish="tool_calls"),
    ]
    message = final_message(stream_of(chunks))
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Let me check."
    inputs = [b.input for b in message.content if b.type == "tool_use"]
    assert inputs == [{"x": 1}, {}]
    assert message.usage.output_tokens == 0  # this engine sent no usage


def test_stop_sequence_and_max_tokens() -> None:
    last = chunk(finish="stop")
    last["choices"][0]["stop_reason"] = "END"
    events = sse_events(stream_of([chunk(content="a"), last], stop_sequences=["END"]))
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    events = sse_events(stream_of(text_chunks("a", finish="length")))
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_a_cut_stream_ends_with_an_error_event_never_message_stop() -> None:
    body = stream_of(text_chunks("Hel", "lo", finish=None))
    events = sse_events(body)
    name, data = events[-1]
    assert (name, data["type"], data["error"]["type"]) == ("error", "error", "api_error")
    assert "finish_reason" in data["error"]["message"]
    assert "message_stop" not in [name for name, _ in events]
    with (
        anthropic_client(body) as client,
        pytest.raises(anthropic.APIStatusError, match="api_error"),
        client.messages.stream(**ASK) as stream,
    ):
        for _ in stream:
            pass


def test_fail_mid_stream_once() -> None:
    req = an.chat_request({**ASK, "stream": True})
    tr = AnthropicStream(req)
    out = tr.feed(chunk(content="Hel")) + tr.fail("the peer went away")
    assert sse_events(out)[-1][1]["error"]["message"] == "the peer went away"
    assert tr.end() == tr.fail("again") == b""


def test_tool_arguments_that_break_json_pass_through_as_the_engine_wrote_them() -> None:
    # The stream passes arguments on as they come: the client sees what the engine wrote.
    chunks = tool_chunks(arguments='{"city": Paris}')
    deltas = [d for n, d in sse_events(stream_of(chunks)) if n == "content_block_delta"]
    assert "".join(d["delta"]["partial_json"] for d in deltas) == '{"city": Paris}'


@given(st.integers(min_value=1, max_value=64))
def test_chunk_boundaries_do_not_change_the_stream(step: int) -> None:
    chunks = [chunk(role=True, reasoning="ok "), *text_chunks("é", "→", "ünï")[1:]]
    assert stream_of(chunks, step=step) == stream_of(chunks)
