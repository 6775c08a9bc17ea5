"""A fake OpenAI engine that costs as little as possible per request.

``python3 -m bench.engine --port P`` serves, over HTTP/1.1 with keep-alive:

- ``GET /v1/models``: one model, ``bench-model``.
- ``POST /v1/chat/completions``: a fixed small completion with ``usage``; with
  ``"stream": true``, ``max_tokens`` SSE chunks (``data: {...}\\n\\n``) then a
  final chunk with ``finish_reason`` and ``usage``, then ``data: [DONE]``, in
  chunked transfer encoding. ``--chunk-delay-ms`` waits between chunks; at 0
  each chunk is still its own write, one event-loop turn apart, as a real
  engine emits tokens.
- ``POST /v1/audio/speech``: ``bench_bytes`` bytes of ``audio/mpeg`` (a JSON
  field of the request; default 16 MiB), with ``Content-Length``, written in
  1 MiB slices as the socket drains: a large binary answer for throughput.
- ``POST /v1/audio/transcriptions``: reads the whole (multipart) body, up to
  128 MiB, and answers ``{"text": ...}``: a large upload for throughput.
- anything else: 404 (so the node's engine probes find no Ollama, LM Studio
  or llama.cpp and call it a generic OpenAI-compatible server).

The model name of a request is never checked: one engine serves as the
``llm``, ``tts`` and ``stt`` service of a node at once.

It is a bare ``asyncio.Protocol`` with every response pre-encoded, on uvloop
when installed, so the benchmark measures Quorum rather than this fake. On
start it prints one JSON line, ``{"port": P, "uvloop": true|false}``.

Request bodies must carry ``Content-Length`` (chunked uploads are answered
501); pipelined requests are answered in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine
from typing import Any, cast

from bench import aio

MODEL = "bench-model"
MAX_HEAD = 64 * 1024
MAX_BODY = 128 * 1024 * 1024
MAX_STREAM_CHUNKS = 1_000_000
DEFAULT_STREAM_CHUNKS = 16
DEFAULT_SPEECH_BYTES = 16 * 1024 * 1024
MAX_SPEECH_BYTES = 4 * 1024 * 1024 * 1024
SPEECH_SLICE = 1024 * 1024


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _fixed(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(value: object) -> bytes:
    return _chunk(b"data: " + _json(value) + b"\n\n")


_USAGE = {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16}
_CHUNK_BASE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": MODEL,
}

MODELS = _fixed(
    "200 OK",
    _json(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
        }
    ),
)
COMPLETION = _fixed(
    "200 OK",
    _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench engine."},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    ),
)
NOT_FOUND = _fixed("404 Not Found", _json({"error": {"message": "not found", "code": 404}}))
BAD_REQUEST = _fixed("400 Bad Request", _json({"error": {"message": "bad request"}}))
TOO_LARGE = _fixed("413 Payload Too Large", _json({"error": {"message": "too large"}}))
NOT_IMPLEMENTED = _fixed("501 Not Implemented", _json({"error": {"message": "chunked body"}}))

TRANSCRIPTION = _fixed("200 OK", _json({"text": "Hello from the bench engine."}))
# Not silence: bytes no link along the way could compress.
AUDIO_SLICE = bytes(range(256)) * (SPEECH_SLICE // 256)

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
# Sixteen different tokens in turn, all the same size: LiteLLM ends a stream whose last 100
# chunks have the same content (its guard against a model stuck in a loop).
TOKENS = tuple(
    _event(
        {
            **_CHUNK_BASE,
            "choices": [{"index": 0, "delta": {"content": f"t{i:x} "}, "finish_reason": None}],
        }
    )
    for i in range(16)
)
STREAM_END = (
    _event(
        {
            **_CHUNK_BASE,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": _USAGE,
        }
    )
    + _chunk(b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)


def stream_chunks(body: bytes) -> int | None:
    """How many token chunks a chat request asks to stream; ``None`` for a plain answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("stream") is not True:
        return None
    n = data.get("max_tokens")
    if not isinstance(n, int) or n < 1:
        return DEFAULT_STREAM_CHUNKS
    return min(n, MAX_STREAM_CHUNKS)


def speech_bytes(body: bytes) -> int:
    """How many audio bytes a speech request asks for (``bench_bytes``), within bounds."""
    try:
        data = json.loads(body)
    except ValueError:
        return DEFAULT_SPEECH_BYTES
    n = data.get("bench_bytes") if isinstance(data, dict) else None
    if not isinstance(n, int) or n < 0:
        return DEFAULT_SPEECH_BYTES
    return min(n, MAX_SPEECH_BYTES)


class EngineProtocol(asyncio.Protocol):
    """One client connection: parse requests from the buffer, answer each in order."""

    def __init__(self, chunk_delay_s: float) -> None:
        self._delay = chunk_delay_s
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streaming: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._streaming is not None:
            self._streaming.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._streaming is None:
            self._process()

    def _fail(self, answer: bytes) -> None:
        if self._transport is not None:
            self._transport.write(answer)
            self._transport.close()
        self._buf.clear()

    def _process(self) -> None:
        """Answer every complete request in the buffer, stopping at a stream."""
        while self._transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    self._fail(BAD_REQUEST)
                return
            lines = bytes(self._buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                self._fail(BAD_REQUEST)
                return
            method, target = parts[0], parts[1]
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    if not value.strip().isdigit():
                        self._fail(BAD_REQUEST)
                        return
                    length = int(value)
                elif name == b"transfer-encoding":
                    self._fail(NOT_IMPLEMENTED)
                    return
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            if length > MAX_BODY:
                self._fail(TOO_LARGE)
                return
            start = end + 4
            if len(self._buf) < start + length:
                return
            path = target.split(b"?", 1)[0]
            # An upload's body is counted, never copied: only a JSON body is read.
            body = (
                b""
                if path == b"/v1/audio/transcriptions"
                else bytes(self._buf[start : start + length])
            )
            del self._buf[: start + length]
            if not self._answer(method, path, body, close):
                return

    def _answer(self, method: bytes, path: bytes, body: bytes, close: bool) -> bool:
        """Answer one request; False when the connection is busy streaming or closing."""
        transport = self._transport
        assert transport is not None
        if method == b"POST" and path == b"/v1/chat/completions":
            chunks = stream_chunks(body)
            if chunks is not None:
                self._start(self._stream(chunks, close))
                return False
            transport.write(COMPLETION)
        elif method == b"POST" and path == b"/v1/audio/speech":
            self._start(self._speech(speech_bytes(body), close))
            return False
        elif method == b"POST" and path == b"/v1/audio/transcriptions":
            transport.write(TRANSCRIPTION)
        elif method == b"GET" and path == b"/v1/models":
            transport.write(MODELS)
        else:
            transport.write(NOT_FOUND)
        if close:
            transport.close()
            return False
        return True

    def _start(self, answer: Coroutine[Any, Any, None]) -> None:
        """Write a long answer in its own task; requests behind it wait for its end."""
        self._streaming = asyncio.get_running_loop().create_task(answer)

    def _answered(self, close: bool) -> None:
        """A long answer is complete: close, or go on with the requests behind it."""
        self._streaming = None
        if close:
            if self._transport is not None:
                self._transport.close()
        elif self._buf:
            self._process()

    async def _speech(self, size: int, close: bool) -> None:
        transport = self._transport
        assert transport is not None
        head = f"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {size}\r\n\r\n"
        transport.write(head.encode())
        left = size
        while left:
            if self._writable is not None:
                await self._writable
            if transport.is_closing():
                return
            n = min(left, SPEECH_SLICE)
            transport.write(AUDIO_SLICE if n == SPEECH_SLICE else AUDIO_SLICE[:n])
            left -= n
            if left:
                await asyncio.sleep(0)  # let a pause_writing() land before the next slice
        self._answered(close)

    async def _stream(self, chunks: int, close: bool) -> None:
        transport = self._transport
        assert transport is not None
        delay = self._delay
        transport.write(STREAM_HEAD)
        for i in range(chunks):
            await asyncio.sleep(delay)
            if self._writable is not None:
                await self._writable
            if transport.is_closing():
                return
            transport.write(TOKENS[i & 15])
        transport.write(STREAM_END)
        self._answered(close)


async def serve(host: str, port: int, chunk_delay_s: float, uvloop_used: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EngineProtocol(chunk_delay_s), host, port, reuse_address=True, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": bound, "uvloop": uvloop_used}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.engine", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed on start)")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="wait between SSE chunks")
    args = p.parse_args(argv)
    delay = args.chunk_delay_ms / 1000
    aio.run(lambda uvloop_used: serve(args.host, args.port, delay, uvloop_used))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
