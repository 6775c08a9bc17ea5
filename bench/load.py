"""The load generator: closed-loop workers over keep-alive connections, one process.

A job names a target base URL (``http://127.0.0.1:P``), a kind and a
concurrency. ``concurrency`` workers each own one connection and send
requests back to back until ``duration_s`` has passed (a request under way at
the deadline is finished and counted):

- ``chat``: non-streaming ``POST /v1/chat/completions``; every request's
  latency (request written to last byte read) is kept.
- ``stream``: the same with ``"stream": true`` and ``max_tokens`` chunks;
  for each stream the time to its first SSE event and its events per second
  (from request to last byte), and over all workers the events that arrived
  before the deadline, per second of the job. A stream with fewer than
  ``max_tokens + 2`` events (tokens, final chunk, ``[DONE]``) is an error.
- ``speech``: ``POST /v1/audio/speech`` asking for ``body_bytes`` of audio
  (the fake engine's ``bench_bytes``): a large binary answer; MB/s per
  request (answer bytes over request written to last byte), 1 MB = 10**6 bytes.
- ``upload``: ``POST /v1/audio/transcriptions`` with a ``body_bytes`` file
  in a multipart body: a large upload; MB/s per request (request bytes over
  request written to last byte of the answer).

``model`` defaults to the fake engine's one (``bench-model``); ``token``
replaces the SDK's ``Authorization: Bearer unused`` (with an API key, for a
node reached from another address). ``tls`` speaks TLS 1.3 to the target:
``{"ca": PEM file}`` checks the server's certificate chains to that CA (a
cluster CA: node certificates name node ids, not hosts, so host names are not
checked), and ``"cert"``/``"key"`` (PEM files) add a client certificate: a
member's, as nodes present to each other.

Requests carry the headers an OpenAI SDK sends, so the node copies as many
headers as it would in real use.

``python3 -m bench.load --serve`` reads jobs as JSON lines on stdin and
answers each with one JSON line on stdout, keeping its connections between
jobs (so a warm-up job warms the connections the measured job uses);
``python3 -m bench.load --target URL --kind chat ...`` runs one job.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import ssl
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from bench import aio
from bench.client import Connection, ConnectionClosed, Exchange, ProtocolError, Window
from bench.engine import MODEL
from bench.stats import median, percentile, rounded

SDK_HEADERS = (
    "Accept: application/json",
    "Content-Type: application/json",
    "User-Agent: OpenAI/Python 1.54.0",
    "Authorization: Bearer unused",
    "X-Stainless-Lang: python",
    "X-Stainless-Package-Version: 1.54.0",
    "X-Stainless-OS: Linux",
    "X-Stainless-Arch: x64",
    "X-Stainless-Runtime: CPython",
    "X-Stainless-Runtime-Version: 3.11.7",
    "X-Stainless-Retry-Count: 0",
)
MAX_ERRORS = 50
KINDS = ("chat", "stream", "speech", "upload")
MB = 1_000_000
MAX_BODY_BYTES = 1 << 32
UPLOAD_BOUNDARY = "bench-boundary-7c2f0d9a5e"


@dataclass(frozen=True, slots=True)
class Job:
    target: str
    kind: str = "chat"  # chat | stream | speech | upload
    concurrency: int = 1
    duration_s: float = 1.0
    max_tokens: int = 16
    max_requests: int = 500_000
    timeout_s: float = 30.0
    model: str = MODEL
    body_bytes: int = 0  # speech: answer size; upload: file size
    token: str | None = None
    tls: dict[str, str] | None = None  # {"ca": ..., "cert": ..., "key": ...}: PEM files

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        job = cls(**data)
        if (
            job.kind not in KINDS
            or job.concurrency < 1
            or job.duration_s <= 0
            or not 0 <= job.body_bytes <= MAX_BODY_BYTES
        ):
            raise ValueError(f"bad job: {job}")
        return job


def _head(path: str, host: str, ctype: str, length: int, token: str | None) -> bytes:
    headers = [h for h in SDK_HEADERS if not h.startswith("Content-Type:")]
    if token is not None:
        headers = [
            f"Authorization: Bearer {token}" if h.startswith("Authorization:") else h
            for h in headers
        ]
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        + "".join(h + "\r\n" for h in headers)
        + f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def chat_request(
    host: str, *, stream: bool, max_tokens: int, model: str = MODEL, token: str | None = None
) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return _head("/v1/chat/completions", host, "application/json", len(encoded), token) + encoded


def speech_request(host: str, *, model: str, size: int, token: str | None = None) -> bytes:
    body = {
        "model": model,
        "input": "Hello from the benchmark.",
        "voice": "alloy",
        "response_format": "mp3",
        "bench_bytes": size,
    }
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return _head("/v1/audio/speech", host, "application/json", len(encoded), token) + encoded


@functools.cache
def _audio(size: int) -> bytes:
    # Random, so that nothing on the way could compress it; seeded, so runs send the same.
    return random.Random(size).randbytes(size)


def upload_request(host: str, *, model: str, size: int, token: str | None = None) -> bytes:
    """A transcription request as the SDK sends it: model first, then the file."""
    b = UPLOAD_BOUNDARY
    fields = "".join(
        f'--{b}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("model", model), ("response_format", "json"))
    )
    body = b"".join(
        (
            fields.encode(),
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="bench.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n".encode(),
            _audio(size),
            f"\r\n--{b}--\r\n".encode(),
        )
    )
    ctype = f"multipart/form-data; boundary={b}"
    return _head("/v1/audio/transcriptions", host, ctype, len(body), token) + body


def job_request(job: Job) -> bytes:
    host = urlsplit(job.target).netloc
    if job.kind == "speech":
        return speech_request(host, model=job.model, size=job.body_bytes, token=job.token)
    if job.kind == "upload":
        return upload_request(host, model=job.model, size=job.body_bytes, token=job.token)
    return chat_request(
        host,
        stream=job.kind == "stream",
        max_tokens=job.max_tokens,
        model=job.model,
        token=job.token,
    )


# A connection idle this long is replaced before its next request: servers close idle
# keep-alive connections (uvicorn after 5 s), and a request sent as the close crosses it
# would fail for a reason that is not the server's speed. Idle that long happens only
# between jobs whose workers finished far apart (16 slow streams), never within a job.
IDLE_REOPEN_S = 2.0


@functools.cache
def tls_context(ca: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    """TLS 1.3 against ``ca``, with a client certificate when ``cert`` is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # a node certificate names a node id, not a host
    context.load_verify_locations(ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def job_tls(job: Job) -> ssl.SSLContext | None:
    if job.tls is None:
        return None
    return tls_context(job.tls["ca"], job.tls.get("cert"), job.tls.get("key"))


def _tls_id(tls: ssl.SSLContext | None) -> int:
    return 0 if tls is None else id(tls)  # contexts are cached: one id per TLS setting


class Pool:
    """Connections by (host, port, TLS or not) and worker index, reopened when one closes."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int, int, int], Connection] = {}
        self._used: dict[tuple[str, int, int, int], float] = {}

    async def get(
        self, host: str, port: int, index: int, tls: ssl.SSLContext | None = None
    ) -> Connection:
        key = (host, port, index, _tls_id(tls))
        conn = self._conns.get(key)
        now = time.monotonic()
        if conn is not None and now - self._used.get(key, now) > IDLE_REOPEN_S:
            conn.close()
            conn = None
        if conn is None or not conn.usable:
            conn = await Connection.open(host, port, tls)
            self._conns[key] = conn
        self._used[key] = now
        return conn

    def done(self, host: str, port: int, index: int, tls: ssl.SSLContext | None = None) -> None:
        """The connection's last answer just ended: its idle time starts now."""
        self._used[(host, port, index, _tls_id(tls))] = time.monotonic()

    def drop(self, host: str, port: int, index: int, tls: ssl.SSLContext | None = None) -> None:
        conn = self._conns.pop((host, port, index, _tls_id(tls)), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


async def _worker(
    pool: Pool,
    index: int,
    job: Job,
    request: bytes,
    deadline: float,
    window: Window | None,
    done: list[Exchange],
    errors: list[str],
) -> None:
    split = urlsplit(job.target)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    tls = job_tls(job)
    while time.perf_counter() < deadline and len(done) < job.max_requests:
        if len(errors) >= MAX_ERRORS:
            return
        try:
            conn = await pool.get(host, port, index, tls)
            async with asyncio.timeout(job.timeout_s):
                exchange = await conn.send(request, count_events=window is not None, window=window)
        except (OSError, ConnectionClosed, ProtocolError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            pool.drop(host, port, index, tls)
            await asyncio.sleep(0.01)
            continue
        pool.done(host, port, index, tls)
        if exchange.status != 200:
            errors.append(f"HTTP {exchange.status}")
        elif window is not None and exchange.events < job.max_tokens + 2:
            # Every token chunk, the final chunk and [DONE]: a proxy that cut the stream short
            # (and said so in an error event, or not at all) must not look fast.
            errors.append(f"short stream: {exchange.events} of {job.max_tokens + 2} events")
        else:
            done.append(exchange)


async def run_job(pool: Pool, job: Job) -> dict[str, Any]:
    stream = job.kind == "stream"
    request = job_request(job)
    done: list[Exchange] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + job.duration_s
    window = Window(deadline) if stream else None
    await asyncio.gather(
        *(
            _worker(pool, i, job, request, deadline, window, done, errors)
            for i in range(job.concurrency)
        )
    )
    elapsed = time.perf_counter() - start
    result: dict[str, Any] = {
        "job": asdict(job),
        "requests": len(done),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "elapsed_s": rounded(elapsed),
        "rps": rounded(len(done) / elapsed, 1),
    }
    if stream:
        assert window is not None
        result.update(_stream_summary(done, window, job.duration_s))
    elif job.kind in ("speech", "upload"):
        sent = len(request) if job.kind == "upload" else None
        result.update(_transfer_summary(done, sent, elapsed))
    else:
        latencies = sorted((e.end - e.sent) * 1000 for e in done)
        result.update(
            {
                "p50_ms": rounded(percentile(latencies, 50)),
                "p90_ms": rounded(percentile(latencies, 90)),
                "p99_ms": rounded(percentile(latencies, 99)),
                "mean_ms": rounded(sum(latencies) / len(latencies)) if latencies else None,
                "max_ms": rounded(latencies[-1]) if latencies else None,
            }
        )
    return result


def _stream_summary(done: list[Exchange], window: Window, duration_s: float) -> dict[str, Any]:
    ttfb = sorted((e.first_event - e.sent) * 1000 for e in done if e.first_event is not None)
    # From the request, not from the first event: a proxy that holds events back and sends
    # them in one batch would otherwise look faster than the engine itself.
    rates = [e.events / (e.end - e.sent) for e in done if e.end > e.sent]
    return {
        "streams": len(done),
        "events_total": sum(e.events for e in done),
        "events_per_stream": median(e.events for e in done),
        "ttfb_p50_ms": rounded(percentile(ttfb, 50)),
        "ttfb_p99_ms": rounded(percentile(ttfb, 99)),
        "stream_chunks_per_s": rounded(median(rates), 1),
        "aggregate_chunks_per_s": rounded(window.events / duration_s, 1),
    }


def _transfer_summary(done: list[Exchange], sent: int | None, elapsed: float) -> dict[str, Any]:
    """MB/s per request: the bytes that crossed (``sent``, else the answer's) over its time."""
    sizes = [sent if sent is not None else e.body_bytes for e in done]
    rates = sorted(
        n / (e.end - e.sent) / MB for n, e in zip(sizes, done, strict=True) if e.end > e.sent
    )
    latencies = sorted((e.end - e.sent) * 1000 for e in done)
    return {
        "transfers": len(done),
        "bytes_per_request": int(median(sizes) or 0),
        "mb_total": sum(sizes) / MB,
        "mb_per_s": rounded(median(rates), 1),
        "mb_per_s_min": rounded(rates[0], 1) if rates else None,
        "mb_per_s_max": rounded(rates[-1], 1) if rates else None,
        "p50_ms": rounded(percentile(latencies, 50)),
        "aggregate_mb_per_s": rounded(sum(sizes) / elapsed / MB, 1),
    }


async def serve(uvloop_used: bool) -> None:
    """Jobs from stdin, one JSON line each; results to stdout, one JSON line each."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pool = Pool()
    print(json.dumps({"ready": True, "uvloop": uvloop_used}), flush=True)
    try:
        while line := await reader.readline():
            try:
                result = await run_job(pool, Job.from_json(json.loads(line)))
            except (ValueError, TypeError) as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result), flush=True)
    finally:
        pool.close()


async def once(job: Job, uvloop_used: bool) -> None:
    pool = Pool()
    try:
        result = await run_job(pool, job)
    finally:
        pool.close()
    print(json.dumps({**result, "uvloop": uvloop_used}, indent=2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.load", description=__doc__.split("\n")[0])
    p.add_argument("--serve", action="store_true", help="take jobs as JSON lines on stdin")
    p.add_argument("--target", help="base URL, e.g. http://127.0.0.1:32768")
    p.add_argument("--kind", choices=KINDS, default="chat")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--max-tokens", type=int, default=256, help="chunks per stream")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--bytes", type=int, default=16 * MB, help="speech/upload size")
    args = p.parse_args(argv)
    if args.serve:
        aio.run(serve)
        return 0
    if not args.target:
        p.error("--target is needed without --serve")
    job = Job(
        args.target,
        args.kind,
        args.concurrency,
        args.duration,
        args.max_tokens,
        model=args.model,
        body_bytes=args.bytes,
    )
    aio.run(lambda uvloop_used: once(job, uvloop_used))
    return 0


if __name__ == "__main__":
    sys.exit(main())
