"""Token counts read from every engine's answer shapes, streamed in any chunking."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.api.usage import usage_from_tail
from quorum.usage import (
    ResponseUsageScanner,
    SseUsageScanner,
    Usage,
    UsageRecord,
    make_record,
    new_request_id,
    usage_from_json,
)
from tests.fakes import (
    FakeEngine,
    FakeLlamaCpp,
    FakeLMStudio,
    FakeMLX,
    FakeOllama,
    FakeVLLM,
    OpenAICompatEngine,
)
from tests.fakes._openai import DONE_FRAME, plan_generation

ENGINES: list[type[OpenAICompatEngine]] = [
    FakeVLLM,
    FakeOllama,
    FakeLlamaCpp,
    FakeLMStudio,
    FakeMLX,
]
BODY = {"messages": [{"role": "user", "content": "one two three four five"}]}


def engine(cls: type[FakeEngine]) -> OpenAICompatEngine:
    made = cls(models=["m"], chunks=5)
    assert isinstance(made, OpenAICompatEngine)
    return made


def stream_bytes(eng: OpenAICompatEngine, *, include_usage: bool, chat: bool = True) -> bytes:
    body: dict[str, Any] = {**BODY, "stream": True}
    if not chat:
        body = {"prompt": "one two three four five", "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    g = plan_generation(eng, body, "m", chat=chat)
    chunks = eng.chat_chunks(g, "c1") if chat else eng.completion_chunks(g, "c1")
    return b"".join(eng.sse_frame(c) for c in chunks) + DONE_FRAME


def expected(eng: OpenAICompatEngine, chat: bool = True) -> Usage:
    g = plan_generation(
        eng, dict(BODY) if chat else {"prompt": "one two three four five"}, "m", chat=chat
    )
    return Usage(g.prompt_tokens, g.completion_tokens)


def scan(data: bytes, cuts: list[int]) -> Usage | None:
    scanner = SseUsageScanner()
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        scanner.feed(data[last:cut])
        last = max(last, cut)
    scanner.feed(data[last:])
    return scanner.close()


@pytest.mark.parametrize("cls", ENGINES, ids=lambda c: c.kind)
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
def test_usage_chunk_of_every_engine(cls: type[OpenAICompatEngine], chat: bool) -> None:
    eng = engine(cls)
    assert scan(stream_bytes(eng, include_usage=True, chat=chat), []) == expected(eng, chat)


@given(cuts=st.lists(st.integers(0, 10_000), max_size=30))
@settings(max_examples=60)
def test_any_chunking_finds_the_same_usage(cuts: list[int]) -> None:
    eng = engine(FakeVLLM)
    assert scan(stream_bytes(eng, include_usage=True), cuts) == expected(eng)


def test_without_include_usage_only_llamacpp_reports_via_timings() -> None:
    for cls in ENGINES:
        eng = engine(cls)
        found = scan(stream_bytes(eng, include_usage=False), [])
        if cls is FakeLlamaCpp:
            assert found == expected(eng)
        else:
            assert found is None, cls.kind


@pytest.mark.parametrize("cls", ENGINES, ids=lambda c: c.kind)
def test_whole_json_answers(cls: type[OpenAICompatEngine]) -> None:
    eng = engine(cls)
    g = plan_generation(eng, dict(BODY), "m", chat=True)
    body = json.dumps(eng.chat_response(g, "c1")).encode()
    assert usage_from_json(body) == expected(eng)
    scanner = ResponseUsageScanner("application/json; charset=utf-8")
    for i in range(0, len(body), 7):
        scanner.feed(body[i : i + 7])
    assert scanner.result() == expected(eng)


def test_dialects() -> None:
    assert usage_from_json(b'{"usage": {"prompt_tokens": 3, "total_tokens": 3}}') == Usage(3, None)
    assert usage_from_json(b'{"usage": {"input_tokens": 4, "output_tokens": 5}}') == Usage(4, 5)
    assert usage_from_json(
        b'{"type": "response.completed", "response": {"usage": {"input_tokens": 1, '
        b'"output_tokens": 2}}}'
    ) == Usage(1, 2)
    assert usage_from_json(b'{"done": true, "prompt_eval_count": 7, "eval_count": 9}') == Usage(
        7, 9
    )
    # Billed by duration: no tokens. Nonsense values are ignored, not trusted.
    assert usage_from_json(b'{"text": "hi", "usage": {"type": "duration", "seconds": 3}}') is None
    assert usage_from_json(b'{"usage": {"prompt_tokens": -1, "completion_tokens": true}}') is None
    assert usage_from_json(b"not json") is None
    assert usage_from_json(b"[1, 2]") is None


def test_running_usage_and_null_usage_chunks() -> None:
    frames = [
        {"choices": [{"delta": {"content": "a"}}], "usage": None},
        {
            "choices": [{"delta": {"content": "b"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
        {
            "choices": [{"delta": {"content": "c"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        },
        {"choices": [], "usage": None},
    ]
    data = b"".join(b"data: " + json.dumps(f).encode() + b"\r\n\r\n" for f in frames)
    assert scan(data + b"data: [DONE]\r\n\r\n", [5, 50]) == Usage(3, 2)


def test_ndjson_stream_and_unterminated_last_line() -> None:
    lines = [
        {"message": {"content": "a"}, "done": False},
        {"message": {"content": ""}, "done": True, "prompt_eval_count": 2, "eval_count": 6},
    ]
    data = b"\n".join(json.dumps(line).encode() for line in lines)  # no final newline
    scanner = ResponseUsageScanner("application/x-ndjson")
    scanner.feed(data)
    assert scanner.result() == Usage(2, 6)


def test_overlong_lines_are_skipped_with_bounded_memory() -> None:
    scanner = SseUsageScanner(max_line=100)
    scanner.feed(b"data: " + b"x" * 500)
    scanner.feed(b"y" * 500 + b'"usage": {"prompt_tokens": 99}\n')
    scanner.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n')
    assert scanner.close() == Usage(1, 2)


def test_huge_json_answer_is_read_from_its_tail() -> None:
    vectors = [[0.1] * 64 for _ in range(4000)]
    body = json.dumps(
        {"data": vectors, "model": "e", "usage": {"prompt_tokens": 42, "total_tokens": 42}}
    ).encode()
    scanner = ResponseUsageScanner("application/json", max_json=100_000)
    for i in range(0, len(body), 65536):
        scanner.feed(body[i : i + 65536])
    assert scanner.result() == Usage(42, None)
    assert usage_from_tail(b'"content": "the word "usage": x", "usage": {"prompt_tokens": 5}}') == (
        Usage(5, None)
    )


def test_binary_answers_have_no_usage() -> None:
    scanner = ResponseUsageScanner("audio/wav")
    scanner.feed(b"RIFF....WAVE")
    assert scanner.result() is None


def test_make_record_accepts_whatever_the_request_carried() -> None:
    record = make_record(
        request_id=new_request_id(),
        started_at=1_700_000_000.5,
        model="m" * 5000,
        endpoint="chat",
        route="lan",
        node="studio",
        status=200,
        duration_s=0.25,
        ttfb_s=-1.0,  # a clock step: clamped, not refused
        usage=Usage(3, 4),
        key_id="abc123",
        error=None,
    )
    assert (record.time_ms, len(record.model), record.ttfb_ms) == (1_700_000_000_500, 1024, 0.0)
    assert (record.duration_ms, record.prompt_tokens, record.completion_tokens) == (250.0, 3, 4)
    assert UsageRecord.decode(record.encode()) == record


def test_a_batch_of_events_finds_the_counts_and_the_done_among_them() -> None:
    filler = b"".join(
        b'data: {"choices":[{"delta":{"content":"t%d"}}]}\n\n' % i for i in range(500)
    )
    last = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":500}}\n\n'
    data = filler + b'data: {"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    data += filler + last + b"data: [DONE]\n\n"
    for cut in (0, 7, len(filler) + 20, len(data) - len(last) - 10, len(data) - 5):
        scanner = SseUsageScanner()
        scanner.feed(data[:cut])
        scanner.feed(data[cut:])
        assert scanner.close() == Usage(3, 500), cut  # the last counts win
        assert scanner.done, cut
    fooled = SseUsageScanner()
    fooled.feed(b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n')
    assert not fooled.done


def test_a_skipped_overlong_line_ends_at_its_newline_in_a_later_chunk() -> None:
    scanner = SseUsageScanner(max_line=100)
    scanner.feed(b"data: " + b"x" * 500)
    scanner.feed(b"x" * 50)
    scanner.feed(b'"usage": {"prompt_tokens": 99}\ndata: {"usage": {"prompt_tokens": 4}}\n')
    assert scanner.close() == Usage(4, None)
