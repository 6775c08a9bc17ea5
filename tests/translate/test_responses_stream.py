"""Chat streams told as the Responses event stream, read back by the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import ParsedResponse, ResponseStreamEvent
from pydantic import TypeAdapter

from quorum.translate import responses
from quorum.translate.responses_stream import ResponsesStream

from .helpers import (
    chunk,
    openai_client,
    sse_bytes,
    sse_events,
    text_chunks,
    tool_chunks,
    translate,
)

ADDED = "response.output_item.added"
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def stream_of(
    chunks: list[dict[str, Any]], *, done: bool = True, step: int | None = None, **body: Any
) -> bytes:
    req = responses.chat_request({"model": "qwen3", "input": "Hi", "stream": True, **body})
    tr = ResponsesStream(req, response_id="resp_5e1d", clock=lambda: 1_700_000_000.0)
    return translate(tr, sse_bytes(chunks, done=done), step=step)


def test_text_stream_event_sequence() -> None:
    events = sse_events(stream_of(text_chunks("Hel", "lo")))
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    for _, data in events:
        EVENTS.validate_python(data)  # each one is a valid event of the SDK's union
    done = events[-1][1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["input_tokens"] == 11
    assert done["output"][0]["content"][0]["text"] == "Hello"


def final_response(body: bytes, **kw: Any) -> ParsedResponse[Any]:
    """What ``client.responses.stream(...)`` makes of our bytes."""
    with (
        openai_client(body) as client,
        client.responses.stream(model="qwen3", input="Hi", **kw) as stream,
    ):
        return stream.get_final_response()


def test_the_sdk_stream_helper_accumulates_our_events() -> None:
    body = stream_of(text_chunks("Hel", "lo, ", "world"))
    with (
        openai_client(body) as client,
        client.responses.stream(model="qwen3", input="Hi") as stream,
    ):
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello, world"
    assert final.usage is not None
    assert final.usage.output_tokens == 7


def test_create_with_stream_true_yields_typed_events() -> None:
    with openai_client(stream_of(text_chunks("ok"))) as client:
        kinds = [
            type(e).__name__ for e in client.responses.create(model="q", input="Hi", stream=True)
        ]
    assert kinds[0] == "ResponseCreatedEvent"
    assert kinds[-1] == "ResponseCompletedEvent"


def test_tool_call_stream() -> None:
    body = stream_of(tool_chunks(arguments='{"city": "Paris"}'), tools=[WEATHER])
    names = [name for name, _ in sse_events(body)]
    assert names.count("response.function_call_arguments.delta") == 2
    assert "response.function_call_arguments.done" in names
    assert "response.output_text.delta" not in names
    final = final_response(body, tools=[WEATHER])
    call = final.output[0]
    assert call.type == "function_call"
    assert (call.name, call.call_id, json.loads(call.arguments)) == (
        "get_weather",
        "call_7d2e",
        {"city": "Paris"},
    )


def test_reasoning_then_text_then_two_calls() -> None:
    chunks = [
        chunk(role=True, reasoning="Let me "),
        chunk(reasoning="check."),
        chunk(content="Checking both."),
        chunk(tools=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}]),
        chunk(tools=[{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]),
        chunk(tools=[{"index": 0, "function": {"arguments": "1}"}}]),  # interleaved
        chunk(finish="tool_calls"),
    ]
    final = final_response(stream_of(chunks))
    assert [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "Let me check."
    assert final.output_text == "Checking both."
    assert [item.arguments for item in final.output if item.type == "function_call"] == [
        '{"x":1}',
        "{}",
    ]
    assert final.usage is None  # this engine sent none


def test_length_finish_ends_with_response_incomplete() -> None:
    events = sse_events(stream_of(text_chunks("Hel", finish="length")))
    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["response"]["output"][0]["status"] == "incomplete"


def test_a_cut_stream_ends_with_an_error_never_completed() -> None:
    body = stream_of(text_chunks("Hel", "lo", finish=None))  # [DONE] with no finish_reason
    names = [name for name, _ in sse_events(body)]
    assert names[-2:] == ["error", "response.failed"]
    assert "response.completed" not in names
    failed = sse_events(body)[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    with openai_client(body) as client:
        events = list(client.responses.create(model="q", input="Hi", stream=True))
        assert events[-2].type == "error" and events[-2].code == "answer_cut"
        assert events[-1].type == "response.failed"
        with client.responses.stream(model="q", input="Hi") as stream:
            for _ in stream:
                pass
            with pytest.raises(RuntimeError, match=r"response\.completed"):
                stream.get_final_response()


def test_a_stream_that_closes_without_done_or_finish_is_cut_too() -> None:
    names = [name for name, _ in sse_events(stream_of(text_chunks("x", finish=None), done=False))]
    assert names[-1] == "response.failed"


def test_fail_ends_a_broken_stream_once() -> None:
    req = responses.chat_request({"model": "m", "input": "Hi", "stream": True})
    tr = ResponsesStream(req)
    first = tr.feed(text_chunks("Hel")[1])
    out = tr.fail("the peer went away")
    events = sse_events(first + out)
    assert events[-2][1]["message"] == "the peer went away"
    assert tr.error == "the peer went away"
    assert tr.fail("again") == tr.end() == tr.feed(chunk(content="x")) == b""


def test_an_engine_error_chunk_mid_stream() -> None:
    body = stream_of(
        [*text_chunks("Hel", finish=None), {"error": {"message": "CUDA out of memory"}}]
    )
    events = sse_events(body)
    assert events[-2][1]["message"] == "CUDA out of memory"
    assert events[-1][0] == "response.failed"


def test_a_stream_failing_before_any_chunk_still_opens_the_response() -> None:
    req = responses.chat_request({"model": "m", "input": "Hi", "stream": True})
    names = [name for name, _ in sse_events(ResponsesStream(req).fail("no engine"))]
    assert names == ["response.created", "response.in_progress", "error", "response.failed"]


@given(st.integers(min_value=1, max_value=64))
def test_chunk_boundaries_do_not_change_the_stream(step: int) -> None:
    chunks = [chunk(role=True, reasoning="ok "), *text_chunks("é", "→", "ünï")[1:]]
    assert stream_of(chunks, step=step) == stream_of(chunks)


def test_an_empty_answer_is_still_one_message() -> None:
    final = final_response(stream_of([chunk(role=True, content=""), chunk(finish="stop")]))
    assert [item.type for item in final.output] == ["message"]
    assert final.output_text == ""


def test_thoughts_between_text_get_their_own_items() -> None:
    chunks = [
        chunk(role=True, reasoning="a"),
        chunk(content="b"),
        chunk(reasoning="c"),
        chunk(content="d"),
        chunk(finish="stop"),
    ]
    items = [data["item"] for name, data in sse_events(stream_of(chunks)) if name == ADDED]
    assert [item["id"] for item in items] == ["rs_5e1d", "msg_5e1d", "rs_5e1d_1", "msg_5e1d_1"]
    assert final_response(stream_of(chunks)).output_text == "bd"


def test_the_translator_reports_usage_and_whether_it_finished() -> None:
    req = responses.chat_request({"model": "m", "input": "Hi", "stream": True})
    tr = ResponsesStream(req)
    translate(tr, sse_bytes(text_chunks("ok")))
    assert tr.finished and tr.closed and tr.error is None
    assert tr.usage is not None and (tr.usage.input, tr.usage.output) == (11, 7)
