"""Recorded engine shapes and in-memory SDK clients for the translation tests.

The SDKs read our bytes through their own transports' mock (httpx2's for the
openai and anthropic SDKs, httpx's for ollama): their parsing runs unchanged,
and no socket is opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai

from quorum.translate.stream import StreamTranslator

JsonObject = dict[str, Any]


def chunk(
    *,
    content: str | None = None,
    reasoning: str | None = None,
    tools: list[JsonObject] | None = None,
    finish: str | None = None,
    usage: JsonObject | None = None,
    role: bool = False,
    cid: str = "chatcmpl-4f1c2a9e7b3d",
) -> JsonObject:
    """One chat-completion chunk, as vLLM and llama.cpp write them."""
    delta: JsonObject = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tools is not None:
        delta["tool_calls"] = tools
    out: JsonObject = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "qwen3",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["choices"] = []
        out["usage"] = usage
    return out


def usage(prompt: int = 11, completion: int = 7) -> JsonObject:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def text_chunks(
    *pieces: str, finish: str | None = "stop", with_usage: bool = True
) -> list[JsonObject]:
    """A plain text answer: a role chunk, the pieces, the finish, the usage."""
    out = [chunk(role=True, content="")]
    out += [chunk(content=p) for p in pieces]
    if finish is not None:
        out.append(chunk(finish=finish))
        if with_usage:
            out.append(chunk(usage=usage()))
    return out


def tool_chunks(
    name: str = "get_weather", arguments: str = '{"city": "Paris"}'
) -> list[JsonObject]:
    """A tool call streamed in pieces, as vLLM does: id and name first, then the arguments."""
    half = len(arguments) // 2
    return [
        chunk(role=True, content=""),
        chunk(
            tools=[
                {
                    "index": 0,
                    "id": "call_7d2e",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        ),
        chunk(tools=[{"index": 0, "function": {"arguments": arguments[:half]}}]),
        chunk(tools=[{"index": 0, "function": {"arguments": arguments[half:]}}]),
        chunk(finish="tool_calls"),
        chunk(usage=usage(20, 9)),
    ]


def sse_bytes(chunks: list[JsonObject], *, done: bool = True) -> bytes:
    raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return raw + (b"data: [DONE]\n\n" if done else b"")


def translate(tr: StreamTranslator, raw: bytes, *, step: int | None = None) -> bytes:
    """Feed the engine's bytes (whole, or ``step`` bytes at a time) and end the stream."""
    if step is None:
        return tr.feed_sse(raw) + tr.end()
    out = b"".join(tr.feed_sse(raw[i : i + step]) for i in range(0, len(raw), step))
    return out + tr.end()


def sse_events(body: bytes) -> list[tuple[str, JsonObject]]:
    """Our named server-sent events, decoded."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def ndjson_lines(body: bytes) -> list[JsonObject]:
    return [json.loads(line) for line in body.decode().splitlines() if line]


def _pieces(body: bytes, step: int) -> Iterator[bytes]:
    for i in range(0, len(body), step):
        yield body[i : i + step]


def _handler(
    body: bytes, content_type: str, status: int, step: int
) -> Callable[[httpx2.Request], httpx2.Response]:
    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            status, headers={"content-type": content_type}, content=_pieces(body, step)
        )

    return handle


def openai_client(
    body: bytes, *, content_type: str = "text/event-stream", status: int = 200, step: int = 97
) -> openai.OpenAI:
    """An openai client that gets ``body`` (in ``step``-byte pieces) for any request."""
    transport = httpx2.MockTransport(_handler(body, content_type, status, step))
    return openai.OpenAI(
        api_key="unused",
        base_url="http://node.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def anthropic_client(
    body: bytes, *, content_type: str = "text/event-stream", status: int = 200, step: int = 97
) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(_handler(body, content_type, status, step))
    return anthropic.Anthropic(
        api_key="unused",
        base_url="http://node.test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def ollama_client(handle: Callable[[str, JsonObject], tuple[int, bytes]]) -> ollama.Client:
    """An ollama client whose requests go to ``handle(path, body) -> (status, bytes)``."""

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        status, out = handle(request.url.path, body)
        return httpx.Response(status, content=out)

    return ollama.Client(host="http://node.test", transport=httpx.MockTransport(respond))
