"""The engine's side, read once: SSE decoding, chunk parsing, whole answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.errors import InvalidRequest, UpstreamFailed
from quorum.translate.chat import (
    ChatSseDecoder,
    ChatStreamParser,
    Delta,
    Finish,
    Reasoning,
    Text,
    ToolArgs,
    ToolStart,
    parse_answer,
)
from quorum.translate.common import Counts, counts_from, finish_reason, get_int, stop_list

from .helpers import chunk, sse_bytes, text_chunks, tool_chunks, usage


def deltas(chunks: list[dict[str, object]]) -> list[Delta]:
    parser = ChatStreamParser()
    return [d for c in chunks for d in parser.feed(c)]


def test_decoder_reads_events_split_anywhere_and_stops_at_done() -> None:
    raw = sse_bytes(text_chunks("Hel", "lo"))
    raw = raw.replace(b"\n\n", b"\r\n\r\n", 1) + b"data: " + json.dumps(chunk(content="x")).encode()
    decoder = ChatSseDecoder()
    got = [c for i in range(len(raw)) for c in decoder.feed(raw[i : i + 1])] + decoder.end()
    assert len(got) == 5
    assert decoder.done
    assert got[1]["choices"][0]["delta"] == {"content": "Hel"}


def test_decoder_skips_comments_and_event_names_and_joins_data_lines() -> None:
    decoder = ChatSseDecoder()
    raw = b': keep-alive\n\nevent: chunk\ndata: {"a":\ndata: 1}\n\n'
    assert decoder.feed(raw) == [{"a": 1}]
    assert not decoder.done


def test_decoder_refuses_an_event_that_is_not_json() -> None:
    with pytest.raises(UpstreamFailed, match="not JSON"):
        ChatSseDecoder().feed(b"data: {oops\n\n")


def test_last_event_without_its_blank_line_still_counts() -> None:
    decoder = ChatSseDecoder()
    assert decoder.feed(b'data: {"a": 1}') == []
    assert decoder.end() == [{"a": 1}]


def test_parser_gives_text_reasoning_and_finish_with_late_usage() -> None:
    chunks = [chunk(role=True, reasoning="think"), *text_chunks("a", "b")]
    parser = ChatStreamParser()
    got = [d for c in chunks for d in parser.feed(c)]
    assert got == [Reasoning("think"), Text("a"), Text("b"), Finish("stop")]
    assert parser.usage == Counts(input=11, output=7)
    assert parser.id == "chatcmpl-4f1c2a9e7b3d"


def test_reasoning_under_either_name() -> None:
    c = chunk()
    c["choices"][0]["delta"] = {"reasoning": "r"}
    assert deltas([c]) == [Reasoning("r")]


def test_tool_call_spread_over_chunks() -> None:
    got = deltas(tool_chunks(arguments='{"city": "Paris"}'))
    assert got[0] == ToolStart(0, "call_7d2e", "get_weather")
    assert "".join(d.fragment for d in got if isinstance(d, ToolArgs)) == '{"city": "Paris"}'
    assert got[-1] == Finish("tool_calls")


def test_tool_call_whose_name_comes_after_its_arguments() -> None:
    got = deltas(
        [
            chunk(tools=[{"index": 0, "id": "c1", "function": {"arguments": '{"a"'}}]),
            chunk(tools=[{"index": 0, "function": {"name": "f", "arguments": ": 1}"}}]),
            chunk(finish="tool_calls"),
        ]
    )
    assert got == [ToolStart(0, "c1", "f"), ToolArgs(0, '{"a"'), ToolArgs(0, ": 1}"), got[-1]]


def test_parallel_calls_without_index_and_whole_in_one_chunk() -> None:
    # Ollama's /v1 and llama.cpp send each call whole; some engines leave out the index.
    got = deltas(
        [
            chunk(
                tools=[
                    {"id": "a", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "function": {"name": "g", "arguments": {"x": 1}}},
                ]
            ),
            chunk(finish="stop"),  # "stop" after tool calls is a tool_calls finish
        ]
    )
    assert got == [
        ToolStart(0, "a", "f"),
        ToolArgs(0, "{}"),
        ToolStart(1, "b", "g"),
        ToolArgs(1, '{"x":1}'),
        Finish("tool_calls"),
    ]


def test_a_call_without_id_gets_one() -> None:
    got = deltas([chunk(tools=[{"index": 0, "function": {"name": "f"}}]), chunk(finish="stop")])
    assert isinstance(got[0], ToolStart)
    assert got[0].id.startswith("call_")


def test_nothing_counts_after_the_finish_but_usage() -> None:
    parser = ChatStreamParser()
    parser.feed(chunk(finish="length"))
    assert parser.feed(chunk(content="late")) == []
    parser.feed(chunk(usage=usage(3, 4)))
    assert parser.finish == Finish("length")
    assert parser.usage == Counts(3, 4)


def test_vllm_stop_reason_names_the_matched_stop_string() -> None:
    c = chunk(finish="stop")
    c["choices"][0]["stop_reason"] = "END"
    assert deltas([c]) == [Finish("stop", "END")]


def test_an_error_chunk_fails_the_stream() -> None:
    with pytest.raises(UpstreamFailed, match="out of memory"):
        ChatStreamParser().feed({"error": {"message": "out of memory", "code": 500}})


def test_llama_cpp_timings_are_usage_when_there_is_none() -> None:
    assert counts_from({"timings": {"prompt_n": 5, "predicted_n": 9}}) == Counts(5, 9)
    detailed = {
        "usage": {
            **usage(10, 5),
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }
    assert counts_from(detailed) == Counts(10, 5, cached=4, reasoning=2)


@pytest.mark.parametrize(
    ("engine", "ours"),
    [("stop", "stop"), ("eos", "stop"), ("length", "length"), ("function_call", "tool_calls"),
     ("content_filter", "content_filter"), ("abort", "stop"), (None, None), ("", None)],
)  # fmt: skip
def test_finish_reasons_as_engines_spell_them(engine: str | None, ours: str | None) -> None:
    assert finish_reason(engine) == ours


def test_whole_chat_answer() -> None:
    answer = parse_answer(
        {
            "id": "chatcmpl-1",
            "model": "qwen3",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "hmm",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": usage(),
        }
    )
    assert (answer.text, answer.reasoning, answer.finish) == ("", "hmm", Finish("tool_calls"))
    assert answer.tool_calls[0].name == "f"
    assert answer.usage == Counts(11, 7)


def test_whole_text_completion() -> None:
    answer = parse_answer({"choices": [{"index": 0, "text": "abc", "finish_reason": "length"}]})
    assert (answer.text, answer.finish) == ("abc", Finish("length"))


@pytest.mark.parametrize("bad", [[], {"choices": []}, {"choices": "x"}, "text"])
def test_an_answer_that_is_not_one(bad: object) -> None:
    with pytest.raises(UpstreamFailed):
        parse_answer(bad)


def test_field_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequest, match=r"'options\.num_predict': must be an integer") as err:
        get_int({"num_predict": "ten"}, "num_predict", "options")
    assert err.value.param == "options.num_predict"
    with pytest.raises(InvalidRequest, match="'stop'"):
        stop_list([1], "stop")


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_split_of_the_bytes_gives_the_same_deltas(cuts: list[int]) -> None:
    raw = sse_bytes([*tool_chunks(), *text_chunks("é", "→ ok")[1:]])
    whole = ChatSseDecoder().feed(raw)
    decoder, got, at = ChatSseDecoder(), [], 0
    for n in cuts:
        got += decoder.feed(raw[at : at + n])
        at += n
    got += decoder.feed(raw[at:]) + decoder.end()
    assert got == whole
