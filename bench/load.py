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
  before the deadline, per second of the job.

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
import json
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


@dataclass(frozen=True, slots=True)
class Job:
    target: str
    kind: str = "chat"  # chat | stream
    concurrency: int = 1
    duration_s: float = 1.0
    max_tokens: int = 16
    max_requests: int = 500_000
    timeout_s: float = 30.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        job = cls(**data)
        if job.kind not in ("chat", "stream") or job.concurrency < 1 or job.duration_s <= 0:
            raise ValueError(f"bad job: {job}")
        return job


def chat_request(host: str, *, stream: bool, max_tokens: int) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        + "".join(h + "\r\n" for h in SDK_HEADERS)
        + f"Content-Length: {len(encoded)}\r\n\r\n"
    ).encode() + encoded


class Pool:
    """Connections by (host, port) and worker index, reopened when one closes."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int, int], Connection] = {}

    async def get(self, host: str, port: int, index: int) -> Connection:
        conn = self._conns.get((host, port, index))
        if conn is None or not conn.usable:
            conn = await Connection.open(host, port)
            self._conns[(host, port, index)] = conn
        return conn

    def drop(self, host: str, port: int, index: int) -> None:
        conn = self._conns.pop((host, port, index), None)
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
    while time.perf_counter() < deadline and len(done) < job.max_requests:
        if len(errors) >= MAX_ERRORS:
            return
        try:
            conn = await pool.get(host, port, index)
            async with asyncio.timeout(job.timeout_s):
                exchange = await conn.send(request, count_events=window is not None, window=window)
        except (OSError, ConnectionClosed, ProtocolError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            pool.drop(host, port, index)
            await asyncio.sleep(0.01)
            continue
        if exchange.status == 200:
            done.append(exchange)
        else:
            errors.append(f"HTTP {exchange.status}")


async def run_job(pool: Pool, job: Job) -> dict[str, Any]:
    split = urlsplit(job.target)
    stream = job.kind == "stream"
    request = chat_request(split.netloc, stream=stream, max_tokens=job.max_tokens)
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
    p.add_argument("--kind", choices=["chat", "stream"], default="chat")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--max-tokens", type=int, default=256, help="chunks per stream")
    args = p.parse_args(argv)
    if args.serve:
        aio.run(serve)
        return 0
    if not args.target:
        p.error("--target is needed without --serve")
    job = Job(args.target, args.kind, args.concurrency, args.duration, args.max_tokens)
    aio.run(lambda uvloop_used: once(job, uvloop_used))
    return 0


if __name__ == "__main__":
    sys.exit(main())
