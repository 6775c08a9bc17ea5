"""Chat streams told as Ollama's NDJSON lines, read back by the ollama client; model lists."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import ollama
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.translate import ollama as ol
from quorum.translate import ollama_models as om
from quorum.translate.ollama_stream import OllamaStream

from .helpers import (
    JsonObject,
    chunk,
    ndjson_lines,
    ollama_client,
    sse_bytes,
    text_chunks,
    tool_chunks,
    translate,
)

WALL = 1_700_000_000_123_456_789
ASK: dict[str, Any] = {"model": "qwen3", "messages": [{"role": "user", "content": "Hi"}]}


def ticks(step: int = 1_000_000) -> Iterator[int]:
    """A monotonic clock that moves ``step`` ns at each reading."""
    return itertools.count(0, step)


def stream_of(
    chunks: list[JsonObject],
    *,
    request: ol.OllamaRequest | None = None,
    done: bool = True,
    step: int | None = None,
) -> bytes:
    req = request or ol.chat_request(ASK)
    clock = ticks()
    tr = OllamaStream(req, clock=lambda: next(clock), wall=lambda: WALL)
    return translate(tr, sse_bytes(chunks, done=done), step=step)


def client_for(body: bytes) -> ollama.Client:
    return ollama_client(lambda path, request: (200, body))


def test_chat_stream_lines_and_the_last_one() -> None:
    lines = ndjson_lines(stream_of(text_chunks("Hel", "lo")))
    assert lines[:-1] == [
        {
            "model": "qwen3",
            "created_at": "2023-11-14T22:13:20.123456789Z",
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        for piece in ("Hel", "lo")
    ]
    assert lines[-1] == {
        "model": "qwen3",
        "created_at": "2023-11-14T22:13:20.123456789Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        # The clock: 0 at the start, 1 ms at the first token, 2 ms at the end.
        "total_duration": 2_000_000,
        "load_duration": 0,
        "prompt_eval_count": 11,
        "prompt_eval_duration": 1_000_000,
        "eval_count": 7,
        "eval_duration": 1_000_000,
    }


def test_the_client_reads_our_stream() -> None:
    parts = list(client_for(stream_of(text_chunks("Hel", "lo"))).chat(**ASK, stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Hello"
    assert isinstance(parts[-1], ollama.ChatResponse)
    assert (parts[-1].done, parts[-1].eval_count) == (True, 7)


def test_thinking_then_text() -> None:
    chunks = [chunk(role=True, reasoning="hmm"), *text_chunks("ok")[1:]]
    parts = list(client_for(stream_of(chunks)).chat(**ASK, stream=True))
    assert parts[0].message.thinking == "hmm"
    assert parts[1].message.content == "ok"


def test_tool_calls_go_out_whole_at_the_finish() -> None:
    parts = list(client_for(stream_of(tool_chunks())).chat(**ASK, stream=True))
    calls = [p for p in parts if p.message.tool_calls]
    assert len(calls) == 1 and not calls[0].done
    assert calls[0].message.tool_calls is not None
    [call] = calls[0].message.tool_calls
    assert (call.function.name, dict(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_generate_stream_from_a_text_completion() -> None:
    req = ol.generate_request({"model": "m", "prompt": "The sky is", "raw": True})
    completion = [
        {"id": "cmpl-1", "choices": [{"index": 0, "text": " blue", "finish_reason": None}]},
        {"id": "cmpl-1", "choices": [{"index": 0, "text": ".", "finish_reason": "length"}]},
    ]
    lines = ndjson_lines(stream_of(completion, request=req))
    assert [line.get("response") for line in lines] == [" blue", ".", ""]
    assert lines[-1]["done_reason"] == "length"
    assert "eval_count" not in lines[-1]  # the engine sent no usage
    client = client_for(stream_of(completion, request=req))
    parts = list(client.generate(model="m", prompt="x", stream=True))
    assert isinstance(parts[-1], ollama.GenerateResponse) and parts[-1].done


def test_llama_cpp_timings_give_the_durations() -> None:
    last = chunk(finish="stop")
    last["timings"] = {"prompt_n": 5, "prompt_ms": 2.5, "predicted_n": 3, "predicted_ms": 30.0}
    line = ndjson_lines(stream_of([chunk(content="a"), last]))[-1]
    assert (line["prompt_eval_count"], line["eval_count"]) == (5, 3)
    assert (line["prompt_eval_duration"], line["eval_duration"]) == (2_500_000, 30_000_000)


def test_a_cut_stream_ends_with_an_error_line_never_done() -> None:
    body = stream_of(text_chunks("Hel", "lo", finish=None))
    lines = ndjson_lines(body)
    assert set(lines[-1]) == {"error"} and "finish_reason" in lines[-1]["error"]
    assert not any(line.get("done") for line in lines)
    with pytest.raises(ollama.ResponseError, match="cut off"):
        list(client_for(body).chat(**ASK, stream=True))


def test_tool_arguments_that_are_not_an_object_fail_the_stream() -> None:
    lines = ndjson_lines(stream_of(tool_chunks(arguments='"Paris"')))
    assert "not a JSON object" in lines[-1]["error"]


def test_fail_mid_stream_once() -> None:
    tr = OllamaStream(ol.chat_request(ASK))
    out = tr.feed(chunk(content="Hel")) + tr.fail("the peer went away")
    assert ndjson_lines(out)[-1] == {"error": "the peer went away"}
    assert tr.end() == tr.fail("again") == b""
    assert tr.media_type == "application/x-ndjson"


@given(st.integers(min_value=1, max_value=64))
def test_chunk_boundaries_do_not_change_the_stream(step: int) -> None:
    chunks = [chunk(role=True, reasoning="ok "), *text_chunks("é", "→", "ünï")[1:]]
    assert stream_of(chunks, step=step) == stream_of(chunks)


# --- the cluster's models as Ollama's -------------------------------------------------

MODELS = [
    ("Qwen/Qwen3-30B-A3B", "llm"),
    ("llama3.2:3b-instruct-q4_K_M", "llm"),
    ("nomic-embed-text", "embedding"),
    ("Qwen/Qwen3-30B-A3B", "llm"),  # held by two services: listed once
    ("whisper-large-v3", "stt"),  # not an Ollama model
]


def models_client() -> ollama.Client:
    def handle(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if path == "/api/tags":
            return 200, json.dumps(om.tags(MODELS, modified_ns=WALL)).encode()
        if path == "/api/ps":
            return 200, json.dumps(om.ps(MODELS[:1], expires_ns=WALL, context_length=8192)).encode()
        if path == "/api/show":
            kinds = dict(MODELS)
            if body["model"] not in kinds:
                return 404, json.dumps(ol.error_body(f"model '{body['model']}' not found")).encode()
            return 200, json.dumps(om.show(body["model"], kinds[body["model"]])).encode()
        return 404, b"{}"

    return ollama_client(handle)


def test_tags_through_the_client() -> None:
    listed = models_client().list().models
    assert [m.model for m in listed] == [
        "Qwen/Qwen3-30B-A3B",
        "llama3.2:3b-instruct-q4_K_M",
        "nomic-embed-text",
    ]
    qwen, llama = listed[0], listed[1]
    assert qwen.details is not None and llama.details is not None
    assert (qwen.details.family, qwen.details.parameter_size) == ("qwen3", "30B")
    assert (llama.details.family, llama.details.parameter_size) == ("llama3.2", "3B")
    assert llama.details.quantization_level == "Q4_K_M"
    assert qwen.digest == om.tags(MODELS)["models"][0]["digest"]  # stable


def test_ps_show_and_version() -> None:
    client = models_client()
    [running] = client.ps().models
    assert (running.model, running.context_length) == ("Qwen/Qwen3-30B-A3B", 8192)
    shown = client.show("nomic-embed-text")
    assert shown.capabilities == ["embedding"]
    assert client.show("Qwen/Qwen3-30B-A3B").capabilities == ["completion", "tools"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope")
    assert err.value.status_code == 404
    assert om.version() == {"version": om.OLLAMA_VERSION}
