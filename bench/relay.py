"""``python3 -m bench relay``: a request through the relay against the same request served locally.

Processes, all on 127.0.0.1 and all killed at the end: the fake engine, a
relay (``python3 -m relay.cli serve``, cluster made with ``cluster create``),
node A fronting the engine as an ``llm``, a ``tts`` and an ``stt`` service,
node B with no engine (both ``--relay ws://.../tunnel --token T --no-mdns``),
and the load generator. Once B lists A's models with route ``relay``, every
scenario runs in each round against A (``local``: A -> engine) and against B
(``relay``: B -> relay -> A -> engine), and against the engine itself (``direct``),
the order rotating between rounds.

Then the relay's memory, on a second relay started for it alone (so the
numbers are not blurred by what the load left in the first one's heap):
``bench.tunnels`` opens idle authenticated tunnels that each said HELLO, then
holds streams open between a few fake nodes; resident memory is read before
and after each step.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import report
from bench.engine import MODEL
from bench.floor import HOPS, copy_chain
from bench.node import free_port, machine_info, measure, progress_line, start_engine
from bench.procs import (
    BenchError,
    Child,
    Children,
    fetch,
    loads_library,
    poll,
    rss_mib,
    wait_http_ok,
)
from bench.relay_memory import (
    memory_of,
    raise_file_limit,
    relay_memory,
    serving_node_download,
    start_relay,
)
from bench.stats import rounded

Progress = Callable[[str], None]
MB = 1_000_000
TTS_MODEL = "bench-tts"
STT_MODEL = "bench-stt"
# The fake engine takes any number of requests at once; without this the node would queue
# past its default for a generic OpenAI server (8) and the bench would measure that queue.
ENGINE_CONCURRENCY = 1024

# The targets for the relay path.
ADDED_P50_LIMIT_MS = 3.0
THROUGHPUT_FLOOR_MB_S = 100.0
IDLE_CONNECTION_LIMIT_KIB = 50.0


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int = 7
    warmup_s: float = 0.2
    duration_s: float = 1.0
    stream_tokens: int = 1024
    speech_bytes: int = 64 * MB
    upload_bytes: int = 25 * MB
    idle_connections: int = 1000
    held_streams: int = 1000
    node_log_level: str = "info"
    start_timeout_s: float = 60.0


FULL = Settings()
QUICK = Settings(rounds=3, warmup_s=0.1, duration_s=0.3, speech_bytes=32 * MB)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: str  # what the load generator runs: chat | stream | speech | upload
    concurrency: int

    @property
    def report_kind(self) -> str:
        return "transfer" if self.kind in ("speech", "upload") else self.kind


SCENARIOS = (
    Scenario("chat_c1", "chat", 1),
    Scenario("chat_c16", "chat", 16),
    Scenario("chat_c64", "chat", 64),
    Scenario("stream_1", "stream", 1),
    Scenario("stream_16", "stream", 16),
    Scenario("speech_1", "speech", 1),
    Scenario("upload_1", "upload", 1),
)
SIDES = ("direct", "local", "relay")
STREAM_RATIO_FLOOR = 0.70  # the issue: streaming through the relay >= 70 % of direct


def start_node(
    kids: Children,
    tmp: Path,
    name: str,
    relay_port: int,
    token: str,
    services: list[dict[str, Any]],
    settings: Settings,
) -> tuple[Child, int]:
    port = free_port()
    config = tmp / f"{name}.yaml"
    body = {
        "node": {"data_dir": str(tmp / f"{name}-data"), "bind": "127.0.0.1"},
        "autodetect": {"enabled": False},
        "embedded": {"mode": "off"},
        "services": services,
    }
    config.write_text(f"# python3 -m bench relay: node {name}\n" + yaml.safe_dump(body))
    args = [sys.executable, "-m", "quorum.cli", "up", "--config", str(config)]
    args += ["--port", str(port), "--name", name, "--no-mdns", "--token", token]
    args += ["--relay", f"ws://127.0.0.1:{relay_port}/tunnel"]
    args += ["--log-level", settings.node_log_level]
    node = kids.start(name, args, log=tmp / f"{name}.log", pipes=False)
    wait_http_ok(node, f"http://127.0.0.1:{port}/healthz", settings.start_timeout_s)
    return node, port


def engine_services(engine_port: int) -> list[dict[str, Any]]:
    """The fake engine as node A's ``llm``, ``tts`` and ``stt`` services."""
    url = f"http://127.0.0.1:{engine_port}/v1"
    return [
        {
            "name": name,
            "type": kind,
            "engine": "openai",
            "url": url,
            "models": [{"id": model}],
            "max_concurrency": ENGINE_CONCURRENCY,
        }
        for name, kind, model in (
            ("fake", "llm", MODEL),
            ("fake-tts", "tts", TTS_MODEL),
            ("fake-stt", "stt", STT_MODEL),
        )
    ]


def relay_routes(port: int) -> dict[str, list[str]] | None:
    """``/v1/models`` of the node at ``port`` by model, its holders' routes; ``None`` until
    every model of the engine has a holder reached by relay."""
    status, _, body = fetch(f"http://127.0.0.1:{port}/v1/models")
    if status != 200:
        return None
    routes = {
        m["id"]: [h["route"] for h in m.get("quorum", {}).get("holders", [])]
        for m in json.loads(body).get("data", [])
    }
    wanted = (MODEL, TTS_MODEL, STT_MODEL)
    return routes if all("relay" in routes.get(m, []) for m in wanted) else None


def route_of(port: int) -> str | None:
    """``X-Quorum-Route`` of one chat answer from the node at ``port``."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    status, headers, text = fetch(f"http://127.0.0.1:{port}/v1/chat/completions", body.encode())
    if status != 200:
        raise BenchError(f"a chat through port {port} answered {status}: {text[:300]!r}")
    return headers.get("X-Quorum-Route")


def job_for(target: str, scenario: Scenario, settings: Settings) -> dict[str, Any]:
    job: dict[str, Any] = {
        "target": target,
        "kind": scenario.kind,
        "concurrency": scenario.concurrency,
        "max_tokens": settings.stream_tokens if scenario.kind == "stream" else 16,
        "timeout_s": 60.0,
    }
    if scenario.kind == "speech":
        job.update(model=TTS_MODEL, body_bytes=settings.speech_bytes)
    elif scenario.kind == "upload":
        job.update(model=STT_MODEL, body_bytes=settings.upload_bytes)
    return job


DOWNLOAD_MIB_LIMIT = 64.0


def targets(
    scenarios: dict[str, Any], memory: dict[str, Any], download: dict[str, Any]
) -> list[dict[str, Any]]:
    out = [
        report.below(
            f"relay_added_p50_{name.split('_')[1]}",
            f"relay route adds < {ADDED_P50_LIMIT_MS:g} ms p50 over the local route "
            f"at concurrency {name.split('_c')[1]}",
            scenarios[name]["added_p50_ms"],
            ADDED_P50_LIMIT_MS,
            "ms",
        )
        for name in ("chat_c1", "chat_c16")
    ]
    for name, what in (("speech_1", "download"), ("upload_1", "upload")):
        out.append(
            report.above(
                f"relay_{what}_mb_per_s",
                f"one {what} stream through the relay > {THROUGHPUT_FLOOR_MB_S:g} MB/s",
                scenarios[name]["relay"]["mb_per_s"],
                THROUGHPUT_FLOOR_MB_S,
                "MB/s",
            )
        )
    for name, key in (
        ("stream_1", "ratio_stream_chunks_per_s"),
        ("stream_16", "ratio_aggregate_chunks_per_s"),
    ):
        value = scenarios[name].get("relay_vs_direct", {}).get(key)
        pct = None if value is None else round(value * 100, 1)
        out.append(
            report.at_least(
                f"relay_throughput_{name}",
                f"{name}: chunks/s through the relay >= {STREAM_RATIO_FLOOR * 100:g} % of direct",
                pct,
                STREAM_RATIO_FLOOR * 100,
                "% of direct",
            )
        )
    out.append(
        report.below(
            "serving_node_relayed_download",
            f"serving node memory during one relayed download < {DOWNLOAD_MIB_LIMIT:g} MiB "
            "above idle",
            download["serving_node_mib_above_idle"],
            DOWNLOAD_MIB_LIMIT,
            "MiB",
        )
    )
    out.append(
        report.below(
            "relay_rss_per_idle_connection",
            f"relay memory per idle node connection < {IDLE_CONNECTION_LIMIT_KIB:g} KiB",
            memory["idle_connections"]["kib_per_connection"],
            IDLE_CONNECTION_LIMIT_KIB,
            "KiB",
        )
    )
    return out


def run(settings: Settings, progress: Progress) -> dict[str, Any]:
    """The whole relay benchmark; the report as a JSON-ready dict."""
    began = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    raise_file_limit()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {side: [] for side in SIDES} for s in SCENARIOS
    }
    with tempfile.TemporaryDirectory(prefix="quorum-bench-relay-") as tmpdir, Children() as kids:
        tmp = Path(tmpdir)
        engine, engine_port, engine_uvloop = start_engine(kids, tmp)
        t0 = time.perf_counter()
        relay, relay_port, token = start_relay(kids, tmp, "relay", "bench")
        relay_startup = time.perf_counter() - t0
        services = engine_services(engine_port)
        node_a, port_a = start_node(kids, tmp, "node-a", relay_port, token, services, settings)
        node_b, port_b = start_node(kids, tmp, "node-b", relay_port, token, [], settings)
        t0 = time.perf_counter()
        routes = poll("relay route to node A's models at node B", lambda: relay_routes(port_b), 30)
        progress(f"node B reaches A's models by relay after {time.perf_counter() - t0:.1f} s")
        checked = {"local": route_of(port_a), "relay": route_of(port_b)}
        if checked != {"local": "local", "relay": "relay"}:
            raise BenchError(f"unexpected X-Quorum-Route answers: {checked}")
        time.sleep(0.2)
        idle = {"relay": rss_mib(relay.pid), "node_a": rss_mib(node_a.pid)}
        idle["node_b"] = rss_mib(node_b.pid)
        download = serving_node_download(port_b, node_a.pid, settings.speech_bytes, TTS_MODEL)
        progress(
            f"one relayed {settings.speech_bytes / 1e6:.0f} MB download: serving node "
            f"{download['serving_node_mib_above_idle']} MiB above idle at its peak"
        )
        load = kids.start("load", [sys.executable, "-m", "bench.load", "--serve"])
        load_uvloop = bool(json.loads(load.read_line(15))["uvloop"])
        urls = {
            "direct": f"http://127.0.0.1:{engine_port}",
            "local": f"http://127.0.0.1:{port_a}",
            "relay": f"http://127.0.0.1:{port_b}",
        }
        copy_port = copy_chain(kids, tmp, engine_port)
        if copy_port is not None:  # the copy-only floor, for one stream (bench.floor)
            urls["copy"] = f"http://127.0.0.1:{copy_port}"
            raw["stream_1"]["copy"] = []
        pids = {
            "relay": relay.pid,
            "node_a": node_a.pid,
            "node_b": node_b.pid,
            "engine": engine.pid,
            "load": load.pid,
        }
        for round_no in range(1, settings.rounds + 1):
            for scenario in SCENARIOS:
                sides = tuple(raw[scenario.name])  # SIDES, and the copy floor for one stream
                shift = (round_no - 1) % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    job = job_for(urls[side], scenario, settings)
                    result = measure(load, pids, job, settings.warmup_s, settings.duration_s)
                    raw[scenario.name][side].append(result)
                    progress(progress_line(round_no, scenario.name, scenario.kind, side, result))
        processes = {
            name: {"idle_rss_mib": rounded(idle[name], 1), **memory_of(child.pid)}
            for name, child in (("relay", relay), ("node_a", node_a), ("node_b", node_b))
        }
        processes["relay"]["startup_to_healthy_ms"] = rounded(relay_startup * 1000, 1)
        processes_report: dict[str, Any] = {**processes}
        processes_report["node_a_relayed_download"] = download
        uvloop = {
            "relay": loads_library(relay.pid, "/uvloop/loop."),
            "node_a": loads_library(node_a.pid, "/uvloop/loop."),
            "node_b": loads_library(node_b.pid, "/uvloop/loop."),
            "engine": engine_uvloop,
            "load": load_uvloop,
        }
        memory = relay_memory(kids, tmp, settings.idle_connections, settings.held_streams, progress)
    scenarios: dict[str, Any] = {}
    for s in SCENARIOS:
        info: dict[str, Any] = {"concurrency": s.concurrency}
        if s.kind == "stream":
            info["chunks_per_stream"] = settings.stream_tokens
        elif s.kind == "speech":
            info["bytes_per_answer"] = settings.speech_bytes
        elif s.kind == "upload":
            info["bytes_per_upload"] = settings.upload_bytes
        scenarios[s.name] = report.compare(
            s.report_kind,
            raw[s.name],
            "local",
            "relay",
            also=(("direct", "local"), ("direct", "relay"), ("direct", "copy"))
            if "copy" in raw[s.name]
            else (("direct", "local"), ("direct", "relay")),
            info={"load": s.kind, **info},
        )
    errors = sum(sc[side]["errors"] for sc in scenarios.values() for side in SIDES)
    return {
        "bench": "relay",
        "schema": 1,
        "started_at": started_at,
        "elapsed_s": rounded(time.perf_counter() - began, 1),
        "settings": asdict(settings),
        "machine": machine_info(uvloop),
        "paths": {
            "direct": "load -> engine",
            "local": "load -> node A -> engine",
            "relay": "load -> node B -> relay -> node A -> engine",
            "copy": f"load -> {HOPS} socat copies in a row -> engine (stream_1 only; bench.floor)"
            if "copy" in raw["stream_1"]
            else "not measured: socat is not installed",
        },
        "routes_seen": {"x_quorum_route": checked, "models_at_b": routes},
        "processes": processes_report,
        "scenarios": scenarios,
        "relay_memory": memory,
        "targets": targets(scenarios, memory, download),
        "request_errors": errors,
    }
