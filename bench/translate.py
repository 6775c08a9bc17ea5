"""``python3 -m bench.translate``: what translating a stream costs, against not translating it.

Two fake engines (:mod:`bench.engine`, which serves only chat completions),
each behind its own node (as in ``bench node``): one *paced*, waiting
``paced_delay_ms`` (1 ms) between token chunks, about 1,000 tokens per second
per stream, faster than any real engine streams one answer; one *unpaced*,
writing its chunks as fast as the machine allows (a stress test of the node's
CPU per token). In each round the same streams go through each node twice,
the order alternating between rounds:

- ``chat``: ``POST /v1/chat/completions`` with ``"stream": true``: the engine's
  SSE passes through the node as it comes (the baseline);
- ``responses``: ``POST /v1/responses`` with ``"stream": true``: the node
  translates the request to chat completions and every chunk of the engine's
  stream into the Responses event stream (``X-Quorum-Translated``).

The measure is token chunks per second: per stream, tokens over the time from
writing the request to the last byte (one stream at a time), and over all
streams, tokens that arrived before the job's deadline per second (16 at
once). Counting tokens rather than SSE events keeps the two comparable (a
Responses stream has 8 framing events, a chat stream 2); each stream must
have exactly its tokens and framing, or it counts as an error and the run
fails. The node's CPU per token chunk is read from ``/proc`` for each path.

The ratio responses/chat is taken within each round, median over rounds; the
target is >= 90 % in every scenario. The load runs in this process (uvloop
when installed) over keep-alive connections. The JSON report goes to stdout
(and ``--json FILE``), progress to stderr; exit status 0 when every stream
was whole, 1 otherwise. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import aio, node, report
from bench.client import Connection, ConnectionClosed, Exchange, ProtocolError, Window
from bench.engine import MODEL
from bench.procs import BenchError, Children, cpu_seconds, loads_library
from bench.stats import difference, median, percentile, ratio, rounded

PATHS = ("chat", "responses")
# Framing events around the token chunks: chat has its final chunk and [DONE]; Responses
# has created, in_progress, output_item.added, content_part.added before the deltas and
# output_text.done, content_part.done, output_item.done, completed after them.
FRAMING = {"chat": 2, "responses": 8}
RATIO_FLOOR = report.STREAM_RATIO_FLOOR
SYSTEM = "You are a helpful assistant."
PROMPT = "Say hello in one short sentence."


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int = 9
    warmup_s: float = 0.2
    duration_s: float = 1.0
    stream_tokens: int = 1024  # per stream from the unpaced engine
    paced_tokens: int = 256  # per stream from the paced one (a quarter of a second)
    paced_delay_ms: float = 1.0
    node_log_level: str = "warning"  # one log line per request would weigh on both paths
    start_timeout_s: float = 60.0
    timeout_s: float = 30.0


FULL = Settings()
QUICK = Settings(rounds=3, warmup_s=0.1, duration_s=0.5)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    concurrency: int
    paced: bool


SCENARIOS = (
    Scenario("paced_1", 1, True),
    Scenario("paced_16", 16, True),
    Scenario("unpaced_1", 1, False),
    Scenario("unpaced_16", 16, False),
)


def request(path: str, port: int, tokens: int) -> bytes:
    """The request bytes of one stream on ``path`` (chat | responses), as the SDK sends them."""
    if path == "chat":
        target = "/v1/chat/completions"
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT},
            ],
            "max_tokens": tokens,
            "stream": True,
        }
    else:
        target = "/v1/responses"
        body = {
            "model": MODEL,
            "instructions": SYSTEM,
            "input": PROMPT,
            "max_output_tokens": tokens,
            "stream": True,
        }
    encoded = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        + "".join(h + "\r\n" for h in _SDK_HEADERS)
        + f"Content-Length: {len(encoded)}\r\n\r\n"
    )
    return head.encode() + encoded


_SDK_HEADERS = (
    "Accept: application/json",
    "Content-Type: application/json",
    "User-Agent: OpenAI/Python 1.54.0",
    "Authorization: Bearer unused",
    "X-Stainless-Lang: python",
    "X-Stainless-Retry-Count: 0",
)


@dataclass
class Job:
    """One measured job: ``concurrency`` workers streaming on ``path`` until the deadline."""

    path: str
    concurrency: int
    duration_s: float
    tokens: int
    timeout_s: float
    done: list[Exchange]
    errors: list[str]
    window: Window


async def _worker(job: Job, conns: list[Connection | None], index: int, wire: bytes) -> None:
    expected = job.tokens + FRAMING[job.path]
    while time.perf_counter() < job.window.deadline:
        conn = conns[index]
        try:
            if conn is None or not conn.usable:
                conn = conns[index] = await Connection.open("127.0.0.1", _port(wire))
            async with asyncio.timeout(job.timeout_s):
                exchange = await conn.send(wire, count_events=True, window=job.window)
        except (OSError, ConnectionClosed, ProtocolError, TimeoutError) as exc:
            job.errors.append(f"{type(exc).__name__}: {exc}")
            conns[index] = None
            if len(job.errors) > 20:
                return
            continue
        if exchange.status != 200:
            job.errors.append(f"HTTP {exchange.status}")
        elif exchange.events != expected:
            job.errors.append(f"{job.path}: {exchange.events} events, not {expected}")
        else:
            job.done.append(exchange)


def _port(wire: bytes) -> int:
    host = wire.split(b"\r\nHost: ", 1)[1].split(b"\r\n", 1)[0]
    return int(host.rsplit(b":", 1)[1])


async def run_job(
    conns: list[Connection | None],
    path: str,
    port: int,
    concurrency: int,
    tokens: int,
    secs: float,
    timeout_s: float,
) -> dict[str, Any]:
    wire = request(path, port, tokens)
    start = time.perf_counter()
    job = Job(path, concurrency, secs, tokens, timeout_s, [], [], Window(start + secs))
    await asyncio.gather(*(_worker(job, conns, i, wire) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    framing = FRAMING[path]
    rates = [job.tokens / (e.end - e.sent) for e in job.done if e.end > e.sent]
    ttfb = sorted((e.first_event - e.sent) * 1000 for e in job.done if e.first_event)
    # Events before the deadline include the framing of each stream begun: count tokens only,
    # less the framing of the streams that ended (or started) inside the window.
    streams = max(1, len(job.done))
    window_tokens = max(0, job.window.events - framing * streams)
    return {
        "path": path,
        "concurrency": concurrency,
        "streams": len(job.done),
        "errors": len(job.errors),
        "error_samples": sorted(set(job.errors))[:5],
        "elapsed_s": rounded(elapsed),
        "events_per_stream": median(e.events for e in job.done),
        "ttfb_p50_ms": rounded(percentile(ttfb, 50)),
        "stream_tokens_per_s": rounded(median(rates), 1),
        "aggregate_tokens_per_s": rounded(window_tokens / secs, 1),
        "tokens_total": job.tokens * len(job.done),
    }


async def _rounds(
    ports: dict[bool, int], pids: dict[bool, int], s: Settings, progress: Any
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every scenario on both paths, ``s.rounds`` times; ``ports`` and ``pids`` of the node
    in front of the paced (True) and the unpaced (False) engine."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        sc.name: {p: [] for p in PATHS} for sc in SCENARIOS
    }
    pools: dict[tuple[str, str], list[Connection | None]] = {}
    try:
        for round_no in range(1, s.rounds + 1):
            order = PATHS if round_no % 2 else PATHS[::-1]
            for sc in SCENARIOS:
                port, pid = ports[sc.paced], pids[sc.paced]
                tokens = s.paced_tokens if sc.paced else s.stream_tokens
                for path in order:
                    conns = pools.setdefault((sc.name, path), [None] * sc.concurrency)
                    job = (conns, path, port, sc.concurrency, tokens)
                    await run_job(*job, s.warmup_s, s.timeout_s)
                    before = cpu_seconds(pid)
                    result = await run_job(*job, s.duration_s, s.timeout_s)
                    cpu = difference(cpu_seconds(pid), before)
                    total = result["tokens_total"]
                    result["node_cpu_us_per_token"] = (
                        rounded(cpu * 1e6 / total, 2) if cpu is not None and total else None
                    )
                    raw[sc.name][path].append(result)
                    progress(
                        f"round {round_no} {sc.name:<10} {path:<9} "
                        f"{result['stream_tokens_per_s']} tokens/s per stream  "
                        f"{result['aggregate_tokens_per_s']} tokens/s total"
                        + (f"  ERRORS {result['errors']}" if result["errors"] else "")
                    )
    finally:
        for conns in pools.values():
            for conn in conns:
                if conn is not None:
                    conn.close()
    return raw


KEYS = ("ttfb_p50_ms", "stream_tokens_per_s", "aggregate_tokens_per_s", "node_cpu_us_per_token")


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per scenario: each path's medians over rounds, and responses/chat paired in rounds."""
    out: dict[str, Any] = {}
    for name, sides in raw.items():
        chat, responses = sides["chat"], sides["responses"]
        entry: dict[str, Any] = {}
        for path, results in sides.items():
            entry[path] = {k: rounded(median(r.get(k) for r in results)) for k in KEYS}
            entry[path]["events_per_stream"] = median(r["events_per_stream"] for r in results)
            entry[path]["streams"] = sum(r["streams"] for r in results)
            entry[path]["errors"] = sum(r["errors"] for r in results)
            samples = sorted({x for r in results for x in r["error_samples"]})
            if samples:
                entry[path]["error_samples"] = samples[:5]
        for key in ("stream_tokens_per_s", "aggregate_tokens_per_s"):
            pairs = [ratio(b.get(key), a.get(key)) for a, b in zip(chat, responses, strict=True)]
            entry[f"ratio_{key}"] = rounded(median(pairs))
            entry[f"ratio_{key}_by_round"] = [rounded(p) for p in pairs]
        out[name] = entry
    return out


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    goal = f"a translated Responses stream keeps >= {RATIO_FLOOR:.0%} of the chat stream's"
    out = []
    for sc in SCENARIOS:
        one = sc.concurrency == 1
        key = "ratio_stream_tokens_per_s" if one else "ratio_aggregate_tokens_per_s"
        engine = "a paced engine" if sc.paced else "an unpaced engine (CPU stress)"
        what = "per stream" if one else f"in all, {sc.concurrency} streams at once"
        out.append(
            report.at_least(
                f"translate_{sc.name}",
                f"{goal} token chunks/s {what}, from {engine}",
                scenarios[sc.name][key],
                RATIO_FLOOR,
                "x",
            )
        )
    return out


def start_pair(
    kids: Children, tmp: Path, settings: Settings, paced: bool
) -> tuple[int, int, dict[str, Any]]:
    """A fake engine (paced or not) and a node in front of it: the node's port, pid, facts."""
    name = "paced" if paced else "unpaced"
    where = tmp / name
    where.mkdir()
    delay = settings.paced_delay_ms if paced else 0.0
    args = [sys.executable, "-m", "bench.engine", "--port", "0", "--chunk-delay-ms", str(delay)]
    engine = kids.start(f"engine-{name}", args, log=where / "engine.log")
    hello = json.loads(engine.read_line(15))
    node_settings = node.Settings(
        node_log_level=settings.node_log_level, start_timeout_s=settings.start_timeout_s
    )
    proc, port, startup_s = node.start_node(kids, where, int(hello["port"]), node_settings)
    facts = {
        "engine_chunk_delay_ms": delay,
        "engine_uvloop": bool(hello["uvloop"]),
        "node_uvloop": loads_library(proc.pid, "/uvloop/loop."),
        "node_startup_to_healthy_ms": rounded(startup_s * 1000, 1),
    }
    return port, proc.pid, facts


def run(settings: Settings, progress: Any) -> dict[str, Any]:
    began = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmpdir, Children() as kids:
        tmp = Path(tmpdir)
        ports: dict[bool, int] = {}
        pids: dict[bool, int] = {}
        pairs: dict[str, Any] = {}
        for paced in (True, False):
            ports[paced], pids[paced], facts = start_pair(kids, tmp, settings, paced)
            pairs["paced" if paced else "unpaced"] = facts
            progress(f"{'paced' if paced else 'unpaced'} engine and its node ready")
        load_uvloop: list[bool] = []

        async def main(uvloop_used: bool) -> dict[str, dict[str, list[dict[str, Any]]]]:
            load_uvloop.append(uvloop_used)
            return await _rounds(ports, pids, settings, progress)

        raw = aio.run(main)
    scenarios = summarize(raw)
    errors = sum(sc[p]["errors"] for sc in scenarios.values() for p in PATHS)
    uvloop = {
        "node": pairs["unpaced"]["node_uvloop"],
        "engine": pairs["unpaced"]["engine_uvloop"],
        "load": load_uvloop[0],
    }
    return {
        "bench": "translate",
        "schema": 1,
        "started_at": started_at,
        "elapsed_s": rounded(time.perf_counter() - began, 1),
        "settings": asdict(settings),
        "machine": node.machine_info(uvloop),
        "engines": pairs,
        "scenarios": scenarios,
        "targets": targets(scenarios),
        "request_errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m bench.translate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", metavar="FILE", type=Path, help="also write the report here")
    p.add_argument("--quick", action="store_true", help="a smoke run (well under a minute)")
    p.add_argument("--rounds", type=int, help="alternating chat/responses rounds")
    p.add_argument("--duration", type=float, help="seconds per measured job")
    args = p.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = replace(settings, rounds=max(1, args.rounds))
    if args.duration is not None:
        settings = replace(settings, duration_s=max(0.05, args.duration))

    def progress(text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        result = run(settings, progress)
    except BenchError as exc:
        progress(f"translate: could not run: {exc}")
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 1 if result["request_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
