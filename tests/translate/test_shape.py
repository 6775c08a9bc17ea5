"""Plain chunks read by their learned shape give the very bytes a full decode gives.

Every translator is run twice on the same engine bytes, split the same way: as it is
(plain chunks of a learned shape read without decoding, runs of them at once) and with
learning turned off (every chunk decoded and parsed). The two outputs must be equal,
whatever the texts hold (quotes, backslashes, control characters, any Unicode, nothing)
and however the engine writes its JSON.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.translate import anthropic, ollama, responses
from quorum.translate.anthropic_stream import AnthropicStream
from quorum.translate.ollama_stream import OllamaStream
from quorum.translate.responses_stream import ResponsesStream
from quorum.translate.shape import Shape, learn
from quorum.translate.sse import ChatSseDecoder, decode
from quorum.translate.stream import StreamTranslator

from .helpers import chunk, usage

JsonObject = dict[str, Any]


def _ticks() -> Callable[[], int]:
    counter = itertools.count(1_700_000_000_000_000_000, 1_234_567)
    return lambda: next(counter)


def make(api: str) -> StreamTranslator:
    """A translator whose ids and clocks are fixed, so two runs can be compared."""
    if api == "responses":
        req = responses.chat_request({"model": "m", "input": "hi", "stream": True})
        return ResponsesStream(req, response_id="resp_1", clock=lambda: 1_700_000_000.0)
    if api == "anthropic":
        body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
        return AnthropicStream(anthropic.chat_request({**body, "stream": True}), message_id="m1")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return OllamaStream(ollama.chat_request(body), clock=_ticks(), wall=_ticks())


def slow(tr: StreamTranslator) -> StreamTranslator:
    tr._learn = lambda payload, chunk: None  # type: ignore[method-assign]
    return tr


APIS = ("responses", "anthropic", "ollama")

# Engines write their JSON differently: compact or spaced, ASCII-escaped or not.
WRITERS: dict[str, Callable[[JsonObject], str]] = {
    "vllm": lambda c: json.dumps(c, ensure_ascii=False, separators=(",", ":")),
    "llama-cpp-python": json.dumps,
    "spaced": lambda c: json.dumps(c, ensure_ascii=False),
}

texts = st.text(
    st.one_of(
        st.sampled_from(['"', "\\", "\n", "\t", "\x00", "\x7f", "é", "→", "😀", "\u2028", " "]),
        st.characters(codec="utf-8"),
    ),
    max_size=6,
)
pieces = st.lists(st.tuples(st.booleans(), texts), max_size=40)


def stream_bytes(parts: list[tuple[bool, str]], writer: str, *, changing: bool = False) -> bytes:
    """The engine's SSE: a role chunk, thoughts (True) and text, the finish and usage.
    ``changing``: the creation time moves on every few chunks, as llama.cpp's does."""
    write = WRITERS[writer]
    chunks = [chunk(role=True, content="")]
    for i, (thinking, text) in enumerate(parts):
        made = chunk(reasoning=text) if thinking else chunk(content=text)
        if changing:
            made["created"] += i // 3
        chunks.append(made)
    chunks += [chunk(finish="stop"), chunk(usage=usage())]
    events = (b"data: " + write(c).encode() + b"\n\n" for c in chunks)
    return b"".join(events) + b"data: [DONE]\n\n"


def run(tr: StreamTranslator, raw: bytes, cuts: list[int]) -> bytes:
    out, at = [], 0
    for n in cuts:
        out.append(tr.feed_sse(raw[at : at + n]))
        at += n
    out.append(tr.feed_sse(raw[at:]))
    return b"".join(out) + tr.end()


@settings(max_examples=60, deadline=None)
@given(
    parts=pieces,
    api=st.sampled_from(APIS),
    writer=st.sampled_from(sorted(WRITERS)),
    changing=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=12),
)
def test_learned_shapes_write_what_a_full_decode_writes(
    parts: list[tuple[bool, str]], api: str, writer: str, changing: bool, cuts: list[int]
) -> None:
    raw = stream_bytes(parts, writer, changing=changing)
    assert run(make(api), raw, cuts) == run(slow(make(api)), raw, cuts)


@pytest.mark.parametrize("api", APIS)
def test_a_plain_stream_is_read_by_its_shape_in_runs(api: str) -> None:
    parts = [(False, f"t{i} ") for i in range(64)]
    raw = stream_bytes(parts, "vllm")
    tr = make(api)
    reads: list[tuple[bool, int]] = []
    plains = tr._plains

    def spy(reasoning: bool, texts: list[str]) -> bytes:
        reads.append((reasoning, len(texts)))
        return plains(reasoning, texts)

    tr._plains = spy  # type: ignore[method-assign]
    step = len(raw) // 4
    out = run(tr, raw, [step] * 3)
    assert out == run(slow(make(api)), raw, [step] * 3)
    assert sum(n for _, n in reads) > 48  # most tokens went in runs, not one by one


def test_a_shape_is_learned_only_where_the_text_sits_once() -> None:
    plain = chunk(content="Hi")
    raw = json.dumps(plain).encode()
    shape = learn(raw, plain)
    assert isinstance(shape, Shape) and not shape.reasoning
    assert shape.read(raw.replace(b'"Hi"', b'"a\\"b"')) == ('a"b', b'"a\\"b"')
    assert shape.read(raw.replace(b'"Hi"', b'"\\u00e9"')) == ("é", '"é"'.encode())
    assert shape.read(raw.replace(b'"Hi"', b'""')) is None  # empty: left to the parser
    assert shape.read(raw.replace(b'"Hi"', b'"a" , "b"')) is None  # not one string
    assert shape.read(raw.replace(b'"Hi"', b'"a\nb"')) is None  # a raw control character
    assert shape.read(raw.replace(b'"Hi"', b'"\xff"')) is None  # not UTF-8
    # The text is also the model's name: where it sits is not known, nothing is learned.
    named = chunk(content="qwen3")
    assert learn(json.dumps(named).encode(), named) is None
    # Not plain: a finish, usage, two texts at once, a tool call.
    for other in (chunk(content="x", finish="stop"), chunk(usage=usage())):
        assert learn(json.dumps(other).encode(), other) is None
    both = chunk(content="x", reasoning="y")
    assert learn(json.dumps(both).encode(), both) is None


def test_runs_are_refused_unless_every_chunk_is_of_the_shape() -> None:
    plain = chunk(content="Hi")
    raw = json.dumps(plain, separators=(",", ":")).encode()
    shape = learn(raw, plain)
    assert shape is not None
    one = raw.replace(b'"Hi"', b'"a"')
    assert shape.read_many([one, one]) == ["a", "a"]
    for bad in (
        raw.replace(b'"Hi"', b'"a\\nb"'),  # escaped: left to one-by-one reading
        raw.replace(b'"Hi"', b'"a", "b"'),
        raw.replace(b'"Hi"', b'""'),
        raw.replace(b'"qwen3"', b'"other"'),
        raw.replace(b'"Hi"', b'"\x01"'),
    ):
        assert shape.read_many([one, bad]) is None
        assert shape.read_many([bad, one]) is None


def test_a_broken_chunk_of_a_learned_shape_still_fails_the_stream() -> None:
    good = b"data: " + json.dumps(chunk(content="a")).encode() + b"\n\n"
    broken = good.replace(b'"a"', b'"a\x01"')  # a raw control character: not JSON
    role = b"data: " + json.dumps(chunk(role=True, content="")).encode() + b"\n\n"
    raw = role + good * 4 + broken + good
    for api in APIS:
        fast, ref = make(api), slow(make(api))
        assert run(fast, raw, []) == run(ref, raw, [])
        assert fast.error is not None and "not JSON" in fast.error


def test_decoder_reads_the_usual_reads_and_the_others_alike() -> None:
    events = [json.dumps(chunk(content=str(i))).encode() for i in range(5)]
    plain = b"".join(b"data: " + e + b"\n\n" for e in events)
    odd = (
        b": ping\n\n"
        + b"data: " + events[0] + b"\n\n"
        + b"event: x\ndata:" + events[1] + b"\n\n\n"
        + b"data: " + events[2] + b"\r\n\r\n"
        + b"data: [DONE]\n\ndata: " + events[3] + b"\n\n"
    )  # fmt: skip
    assert ChatSseDecoder().payloads(plain) == events
    decoder = ChatSseDecoder()
    assert decoder.payloads(odd) == events[:3] and decoder.done
    assert decoder.payloads(plain) == []
    assert [decode(p) for p in events] == ChatSseDecoder().feed(plain)


def test_decoder_takes_the_usual_last_read_whole_and_stops_at_its_done() -> None:
    events = [json.dumps(chunk(content=str(i))).encode() for i in range(3)]
    last = b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    decoder = ChatSseDecoder()
    assert decoder.payloads(last) == events and decoder.done
    assert decoder.payloads(b"data: " + events[0] + b"\n\n") == []


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_long_reads_are_split_at_a_mark_and_checked_whole(writer: str) -> None:
    texts = [f"w{i} " for i in range(300)]
    raw = stream_bytes([(False, t) for t in texts], writer)
    role_and_first = raw.index(b"\n\n", raw.index(b"w0 ")) + 2
    shape_read: list[int] = []
    for api in APIS:
        tr = make(api)
        out = tr.feed_sse(raw[:role_and_first])
        shape = tr._shape
        assert shape is not None
        body = raw[role_and_first : raw.index(b"data: ", raw.index(b'"w299 "') - 300)]
        whole = body[: body.rfind(b"\n\n") + 2]
        assert len(whole) > 4096
        got = shape.read_events(whole)
        assert got is not None and got[0] == "w1 "
        shape_read.append(len(got))
        # A text that is not one (a quote in it) anywhere in a long read: all refused.
        spoiled = whole.replace(b'"w150 "', b'"w1\\"50 "')
        assert shape.read_events(spoiled) is None
        out += tr.feed_sse(raw[role_and_first:]) + tr.end()
        assert out == run(slow(make(api)), raw, [role_and_first])
    assert len(set(shape_read)) == 1 and shape_read[0] > 25
