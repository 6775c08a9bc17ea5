"""A fake engine as a process, for a network namespace: ``python3 -m tests.lan.serve_fake``.

``--kind ollama --port 11434 --models llama3.2:1b,qwen3:0.6b`` serves
:class:`tests.fakes.FakeOllama` on ``--host`` (default 127.0.0.1, the
namespace's own loopback). It prints one JSON object per line on stdout:
``{"event": "ready", "url": ..., "models": [...]}`` once listening, then
``{"event": "request", ...}`` for every request the engine receives (method,
path, model, and whether an ``Authorization`` or ``X-Quorum-Hop`` header
reached it), so a test can see what a node forwarded, and
``{"event": "cancelled", "count": N}`` when a client went away mid-answer. SIGTERM or SIGINT stop
it; it exits 0 after a clean stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
from typing import Any

from tests.fakes import ENGINES, FakeEngine, RecordedRequest

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    with _print_lock:
        print(json.dumps({"event": event, **fields}), flush=True)


def describe(request: RecordedRequest) -> dict[str, Any]:
    model = None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        model = request.json().get("model")
    return {
        "method": request.method,
        "path": request.path,
        "model": model,
        "authorization": "Authorization" in request.headers,
        "hop": request.headers.get("X-Quorum-Hop"),
    }


def report(fake: FakeEngine, stop: threading.Event) -> None:
    """Print each recorded request and each cancellation once; runs in a thread (waits block)."""
    seen = cancelled = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            fake.wait_for_requests(seen + 1, timeout=0.2)
        for request in fake.requests[seen:]:
            emit("request", **describe(request))
            seen += 1
        if fake.cancelled_count > cancelled:
            cancelled = fake.cancelled_count
            emit("cancelled", count=cancelled, streams_completed=fake.streams_completed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", required=True, choices=sorted(ENGINES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", default="", help="comma-separated; empty: the engine's own")
    parser.add_argument("--chunks", type=int, default=4, help="content events per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()

    models = [m for m in args.models.split(",") if m] or None
    fake = ENGINES[args.kind](models=models, chunks=args.chunks, chunk_delay=args.chunk_delay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await fake.start(args.host, args.port)
    done = threading.Event()
    reporter = threading.Thread(
        target=report, args=(fake, done), name="report-requests", daemon=True
    )
    reporter.start()
    emit("ready", kind=args.kind, url=url, models=fake.model_ids)
    try:
        await stop.wait()
    finally:
        await fake.stop()
        done.set()
        await asyncio.to_thread(reporter.join, 5)
        emit("stopped", requests=len(fake.requests))


if __name__ == "__main__":
    asyncio.run(main())
