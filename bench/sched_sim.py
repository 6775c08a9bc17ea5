"""The pieces of ``bench scheduling`` that run in the benchmark's own process.

- :class:`SimEngine`: an OpenAI-compatible engine with ``slots`` requests at
  once and a fixed time per request; more wait inside it, first come first
  served (as llama.cpp defers them). A stream spends a tenth of the time
  before its first token, then sends ``CHUNKS`` chunks evenly. It publishes
  nothing about its capacity (a generic OpenAI-compatible server).
- :class:`Oracle`: a dispatcher that knows every engine's slots, speed and
  running requests, and sends each request where it will finish first.
- :func:`open_loop`: Poisson arrivals at a fixed rate, each request on its
  own; latency to the last byte, time to the first token, status.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

MODEL = "bench-model"
CHUNKS = 20
PREFILL = 0.1  # share of a request's time before its first token
ENGINE_HEADER = "X-Sim-Engine"  # which engine served an answer (dispatchers pass it on)
WAIT_HEADER = "X-Quorum-Queue-Wait-Ms"


@dataclass
class EngineSpec:
    name: str
    slots: int
    service_s: float
    behind_peer: bool = False  # reached through the second node (a LAN peer)

    @property
    def rate(self) -> float:
        return self.slots / self.service_s


def _chunk(content: str, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-sim",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


_ANSWER = {
    "id": "chatcmpl-sim",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": CHUNKS, "total_tokens": CHUNKS + 5},
}


def _port_of(site: web.TCPSite) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None)
    assert sockets
    return int(sockets[0].getsockname()[1])


class SimEngine:
    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.slots = asyncio.Semaphore(spec.slots)
        self.served = 0
        self.active = 0  # requests inside the engine, running or queued
        self.epoch = 0  # bumped by ``reset``: requests queued before it are refused
        self.idle = asyncio.Event()
        self.idle.set()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = _port_of(site)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _models(self, _request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "owned_by": "sim"}
        return web.json_response({"object": "list", "data": [model]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.active += 1
        self.idle.clear()
        try:
            return await self._generate(request, body)
        finally:
            self.active -= 1
            if not self.active:
                self.idle.set()

    def reset(self) -> None:
        """Refuse (503) every request still queued here: the run that sent them is over."""
        self.epoch += 1

    async def _generate(self, request: web.Request, body: Any) -> web.StreamResponse:
        epoch = self.epoch
        async with self.slots:
            if epoch != self.epoch:
                return web.json_response({"error": {"message": "reset"}}, status=503)
            self.served += 1
            t = self.spec.service_s
            tag = {ENGINE_HEADER: self.spec.name}
            if not body.get("stream"):
                await asyncio.sleep(t)
                return web.json_response(_ANSWER, headers=tag)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **tag})
            await resp.prepare(request)
            await asyncio.sleep(t * PREFILL)
            step = t * (1 - PREFILL) / CHUNKS
            for _ in range(CHUNKS - 1):
                await resp.write(_chunk("tok "))
                await asyncio.sleep(step)
            await resp.write(_chunk("end", "stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp


class Oracle:
    """Sends each request to the engine where it finishes first, knowing what the engines
    do not publish: slots, speed, and when each running request ends."""

    def __init__(self, engines: Sequence[SimEngine]) -> None:
        self.engines = list(engines)
        self._free_at = {e.spec.name: [0.0] * e.spec.slots for e in self.engines}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = _port_of(site)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def pick(self, now: float) -> SimEngine:
        best: tuple[float, SimEngine] | None = None
        for engine in self.engines:
            slots = self._free_at[engine.spec.name]
            finish = max(now, min(slots)) + engine.spec.service_s
            if best is None or finish < best[0]:
                best = (finish, engine)
        assert best is not None
        finish, engine = best
        slots = self._free_at[engine.spec.name]
        slots[slots.index(min(slots))] = finish
        return engine

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        payload = await request.read()
        engine = self.pick(time.monotonic())
        async with self._session.post(
            engine.url + "/v1/chat/completions",
            data=payload,
            headers={"Content-Type": "application/json"},
        ) as upstream:
            resp = web.StreamResponse(
                status=upstream.status,
                headers={
                    "Content-Type": upstream.headers.get("Content-Type", ""),
                    ENGINE_HEADER: upstream.headers.get(ENGINE_HEADER, ""),
                },
            )
            await resp.prepare(request)
            async for data in upstream.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp


@dataclass
class Outcome:
    status: int
    latency_s: float
    ttft_s: float | None
    error: str = ""
    engine: str = ""  # the engine that served it
    node_wait_ms: float | None = None  # how long Quorum held it in its queue


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0


async def _one(session: aiohttp.ClientSession, url: str, stream: bool, timeout_s: float) -> Outcome:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    began = time.perf_counter()
    ttft = None
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                if not stream:
                    await resp.read()
                else:
                    async for line in resp.content:
                        if ttft is None and line.startswith(b"data: {"):
                            ttft = time.perf_counter() - began
                latency = time.perf_counter() - began
                wait = resp.headers.get(WAIT_HEADER)
                return Outcome(
                    resp.status,
                    latency,
                    ttft if stream else latency,
                    engine=resp.headers.get(ENGINE_HEADER, ""),
                    node_wait_ms=float(wait) if wait else None,
                )
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Outcome(0, time.perf_counter() - began, None, type(exc).__name__)


async def open_loop(
    url: str,
    rate: float,
    duration_s: float,
    *,
    stream: bool,
    seed: int,
    warmup_s: float = 0.0,
    timeout_s: float = 60.0,
) -> Run:
    """Poisson arrivals at ``rate`` a second for ``warmup_s + duration_s``; only those
    that arrived after the warm-up are kept."""
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks: list[tuple[float, asyncio.Task[Outcome]]] = []
        start = time.perf_counter()
        at = 0.0
        while True:
            at += rng.expovariate(rate)
            if at > warmup_s + duration_s:
                break
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append((at, asyncio.create_task(_one(session, url, stream, timeout_s))))
        outcomes = await asyncio.gather(*(t for _, t in tasks))
    kept = [o for (at, _), o in zip(tasks, outcomes, strict=True) if at >= warmup_s]
    return Run(kept, duration_s)


def summary(run: Run, slo_s: float) -> dict[str, Any]:
    """p50, p99 (latency and time to first token), goodput (answers within ``slo_s`` a second)."""
    from bench.stats import percentile, rounded

    ok = [o for o in run.outcomes if o.status == 200]
    lat = sorted(o.latency_s for o in ok)
    ttft = sorted(o.ttft_s for o in ok if o.ttft_s is not None)
    good = sum(1 for o in ok if o.latency_s <= slo_s)
    engines: dict[str, int] = {}
    for o in ok:
        engines[o.engine or "?"] = engines.get(o.engine or "?", 0) + 1
    # The slowest 2 %: where they ran and how long Quorum held them (the p99's story).
    tail = sorted(ok, key=lambda o: o.latency_s)[-max(1, len(ok) // 50) :] if ok else []
    return {
        "requests": len(run.outcomes),
        "failed": len(run.outcomes) - len(ok),
        "p50_ms": rounded(_ms(percentile(lat, 50)), 1),
        "p99_ms": rounded(_ms(percentile(lat, 99)), 1),
        "ttft_p50_ms": rounded(_ms(percentile(ttft, 50)), 1),
        "ttft_p99_ms": rounded(_ms(percentile(ttft, 99)), 1),
        "goodput_rps": round(good / run.duration_s, 2) if run.duration_s else None,
        "by_engine": dict(sorted(engines.items())),
        "slowest": [
            {
                "ms": round(o.latency_s * 1000, 1),
                "engine": o.engine,
                "node_wait_ms": o.node_wait_ms,
            }
            for o in tail
        ],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
