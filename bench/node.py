"""``python3 -m bench node``: one node in front of one fake engine, against the engine alone
and against LiteLLM's proxy in front of the same engine.

Processes, all on 127.0.0.1 and all killed at the end: the fake engine
(:mod:`bench.engine`), a node (``python3 -m quorum.cli up`` with only that
engine as a service, no autodetect, no embedded engine, no mDNS), LiteLLM's
proxy (:mod:`bench.litellm`, from the bench's own environment, installed on
first use; reported as unavailable, with the reason, when it cannot be) and
the load generator (:mod:`bench.load`). The node's start-up time (process
start to ``/healthz`` 200) and idle memory are read first, then every scenario
runs in each round against every target (``direct``, ``quorum``, ``litellm``),
the order rotating between rounds, each measured job preceded by a short
warm-up on the same connections.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import litellm, report
from bench.engine import MODEL
from bench.procs import (
    BenchError,
    Child,
    Children,
    child_env,
    cpu_seconds,
    loads_library,
    rss_mib,
    wait_http_ok,
)
from bench.stats import difference, rounded

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    # Many short rounds rather than a few long ones: a pair (direct, quorum) measured a
    # second apart sees the same machine, and the median over rounds drops the outliers.
    rounds: int = 9
    warmup_s: float = 0.2
    duration_s: float = 1.0
    stream_tokens: int = 1024
    node_log_level: str = "info"  # the node's default: one log line per request
    start_timeout_s: float = 60.0
    litellm: bool = True  # LiteLLM's proxy as a third target (installed on first use)
    litellm_start_timeout_s: float = 120.0


FULL = Settings()
QUICK = Settings(rounds=3, warmup_s=0.1, duration_s=0.3)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: str  # chat | stream
    concurrency: int


SCENARIOS = (
    Scenario("chat_c1", "chat", 1),
    Scenario("chat_c16", "chat", 16),
    Scenario("chat_c64", "chat", 64),
    Scenario("stream_1", "stream", 1),
    Scenario("stream_16", "stream", 16),
)
TARGETS = ("direct", "quorum")
LITELLM = "litellm"

# The targets for one node (ratios and limits against the direct path, same run).
ADDED_P99_C16_LIMIT_MS = 3.0
LITELLM_FACTOR = 10.0
IDLE_RSS_LIMIT_MIB = 60.0
STARTUP_LIMIT_MS = 1500.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(uvloop: Mapping[str, bool | None]) -> dict[str, Any]:
    """The machine and software a report was measured on; ``uvloop``: which process runs it."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop_version": _version("uvloop"),
        "uvloop": dict(uvloop),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def start_engine(
    kids: Children, tmp: Path, wrap: Sequence[str] = (), name: str = "engine"
) -> tuple[Child, int, bool]:
    """The fake engine on a free port (``wrap``: a command prefix, e.g. ``ip netns exec NS``)."""
    args = [*wrap, sys.executable, "-m", "bench.engine", "--port", "0"]
    engine = kids.start(name, args, log=tmp / f"{name}.log")
    hello = json.loads(engine.read_line(15))
    return engine, int(hello["port"]), bool(hello["uvloop"])


def start_node(
    kids: Children, tmp: Path, engine_port: int, settings: Settings
) -> tuple[Child, int, float]:
    port = free_port()
    config = tmp / "config.yaml"
    # The fake engine answers as fast as the machine allows: lift the node's default
    # per-service limit so the bench measures the proxy, not the node's queue.
    config.write_text(
        "# python3 -m bench node\n"
        "services:\n"
        f"  - {{name: bench, url: 'http://127.0.0.1:{engine_port}/v1', max_concurrency: 1024}}\n"
    )
    env = child_env({"QUORUM_CONFIG": str(config), "QUORUM_AUTODETECT__ENABLED": "false"})
    args = [
        sys.executable,
        "-m",
        "quorum.cli",
        "up",
        "--port",
        str(port),
        "--name",
        "bench",
        "--embedded",
        "off",
        "--no-mdns",
        "--data-dir",
        str(tmp / "node-data"),
        "--log-level",
        settings.node_log_level,
    ]
    node = kids.start("node", args, env=env, log=tmp / "node.log", pipes=False)
    startup = wait_http_ok(node, f"http://127.0.0.1:{port}/healthz", settings.start_timeout_s)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
        models = [m.get("id") for m in json.load(resp).get("data", [])]
    if MODEL not in models:
        raise BenchError(f"the node lists {models}, not {MODEL}{node.log_tail()}")
    return node, port, startup


def run_job(load: Child, job: dict[str, Any]) -> dict[str, Any]:
    load.write_line(json.dumps(job))
    result: dict[str, Any] = json.loads(load.read_line(job["duration_s"] + job["timeout_s"] + 30))
    if "error" in result:
        raise BenchError(f"the load generator refused a job: {result['error']}")
    return result


def measure(
    load: Child, pids: Mapping[str, int], job: dict[str, Any], warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """``job`` for ``warmup_s`` (dropped), then for ``duration_s`` with each process's CPU time."""
    run_job(load, {**job, "duration_s": warmup_s})  # same connections, results dropped
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = run_job(load, {**job, "duration_s": duration_s})
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result["cpu_s"] = {name: difference(after[name], before[name]) for name in pids}
    return result


def _measure(
    load: Child, pids: dict[str, int], target: str, scenario: Scenario, settings: Settings
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "target": target,
        "kind": scenario.kind,
        "concurrency": scenario.concurrency,
        "max_tokens": settings.stream_tokens if scenario.kind == "stream" else 16,
        "timeout_s": 30.0,
    }
    return measure(load, pids, job, settings.warmup_s, settings.duration_s)


def progress_line(round_no: int, name: str, kind: str, side: str, r: dict[str, Any]) -> str:
    """One measured job, for stderr."""
    if kind == "chat":
        detail = f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  {r['rps']} req/s"
    elif kind == "stream":
        detail = (
            f"ttfb p50 {r['ttfb_p50_ms']} ms  {r['stream_chunks_per_s']} chunks/s per stream  "
            f"{r['aggregate_chunks_per_s']} chunks/s total"
        )
    else:
        detail = f"{r['mb_per_s']} MB/s per request  p50 {r['p50_ms']} ms  x{r['requests']}"
    errors = f"  ERRORS {r['errors']}" if r["errors"] else ""
    return f"round {round_no} {name:<9} {side:<12} {detail}{errors}"


def start_litellm(
    kids: Children, tmp: Path, engine_port: int, settings: Settings, progress: Progress
) -> tuple[Child | None, int, dict[str, Any]]:
    """LiteLLM's proxy in front of the engine, or ``None`` and why it is unavailable."""
    if not settings.litellm:
        return None, 0, {"available": False, "reason": "not asked for (--no-litellm)"}
    try:
        litellm.ensure([litellm.LITELLM], progress)
        port = free_port()
        child, ready_s = litellm.start(
            kids, tmp, engine_port, port, settings.litellm_start_timeout_s
        )
    except BenchError as exc:
        progress(f"LiteLLM unavailable: {exc}")
        return None, 0, {"available": False, "reason": str(exc)}
    progress(f"LiteLLM {litellm.version()} healthy after {ready_s * 1000:.0f} ms")
    return (
        child,
        port,
        {
            "available": True,
            "version": litellm.version(),
            "package": litellm.LITELLM,
            "workers": 1,
            "startup_to_healthy_ms": rounded(ready_s * 1000, 1),
        },
    )


def run(settings: Settings, progress: Progress) -> dict[str, Any]:
    """The whole node benchmark; the report as a JSON-ready dict."""
    began = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmpdir, Children() as kids:
        tmp = Path(tmpdir)
        engine, engine_port, engine_uvloop = start_engine(kids, tmp)
        node, node_port, startup_s = start_node(kids, tmp, engine_port, settings)
        progress(f"node healthy after {startup_s * 1000:.0f} ms")
        time.sleep(0.2)  # let start-up work settle before reading idle memory
        idle_rss = rss_mib(node.pid)
        node_uvloop = loads_library(node.pid, "/uvloop/loop.")
        proxy, proxy_port, litellm_info = start_litellm(kids, tmp, engine_port, settings, progress)
        load = kids.start("load", [sys.executable, "-m", "bench.load", "--serve"])
        load_uvloop = bool(json.loads(load.read_line(15))["uvloop"])
        urls = {
            "direct": f"http://127.0.0.1:{engine_port}",
            "quorum": f"http://127.0.0.1:{node_port}",
        }
        pids = {"node": node.pid, "engine": engine.pid, "load": load.pid}
        uvloop = {"node": node_uvloop, "engine": engine_uvloop, "load": load_uvloop}
        sides: tuple[str, ...] = TARGETS
        if proxy is not None:
            time.sleep(0.2)
            litellm_info["idle_rss_mib"] = rounded(rss_mib(proxy.pid), 1)
            urls[LITELLM] = f"http://127.0.0.1:{proxy_port}"
            pids[LITELLM] = proxy.pid
            uvloop[LITELLM] = loads_library(proxy.pid, "/uvloop/loop.")
            sides = (*TARGETS, LITELLM)
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            s.name: {t: [] for t in sides} for s in SCENARIOS
        }
        for round_no in range(1, settings.rounds + 1):
            # Every target in every position: direct first in round 1, then rotated.
            shift = (round_no - 1) % len(sides)
            order = sides[shift:] + sides[:shift]
            for scenario in SCENARIOS:
                for side in order:
                    result = _measure(load, pids, urls[side], scenario, settings)
                    raw[scenario.name][side].append(result)
                    progress(progress_line(round_no, scenario.name, scenario.kind, side, result))
        node_info = {
            "startup_to_healthy_ms": rounded(startup_s * 1000, 1),
            "idle_rss_mib": rounded(idle_rss, 1),
            "rss_after_load_mib": rounded(rss_mib(node.pid), 1),
            "peak_rss_mib": rounded(rss_mib(node.pid, "VmHWM"), 1),
            "log_level": settings.node_log_level,
        }
        if proxy is not None:
            litellm_info["rss_after_load_mib"] = rounded(rss_mib(proxy.pid), 1)
            litellm_info["peak_rss_mib"] = rounded(rss_mib(proxy.pid, "VmHWM"), 1)
    scenarios: dict[str, Any] = {}
    for s in SCENARIOS:
        direct, quorum = raw[s.name]["direct"], raw[s.name]["quorum"]
        scenarios[s.name] = (
            report.chat_scenario(s.concurrency, direct, quorum)
            if s.kind == "chat"
            else report.stream_scenario(s.concurrency, settings.stream_tokens, direct, quorum)
        )
        if LITELLM in raw[s.name]:
            extra = report.with_litellm(s.kind, direct, quorum, raw[s.name][LITELLM])
            cpu_key = "cpu_us_per_request" if s.kind == "chat" else "cpu_us_per_chunk"
            scenarios[s.name][cpu_key]["litellm"] = extra.pop("cpu_us_litellm")
            scenarios[s.name][cpu_key]["load_litellm"] = extra.pop("cpu_us_load_litellm")
            scenarios[s.name].update(extra)
    errors = sum(sc[side]["errors"] for sc in scenarios.values() for side in sides if side in sc)
    return {
        "bench": "node",
        "schema": 1,
        "started_at": started_at,
        "elapsed_s": rounded(time.perf_counter() - began, 1),
        "settings": asdict(settings),
        # The node's is seen in its memory map: quorum.cli runs on uvloop when importable.
        "machine": machine_info(uvloop),
        "node": node_info,
        "litellm": litellm_info,
        "scenarios": scenarios,
        "targets": [*report.targets(scenarios), *node_targets(scenarios, node_info)],
        "request_errors": errors,
    }


def node_targets(scenarios: dict[str, Any], node_info: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's other targets for one node: p99 at 16 clients, against LiteLLM, memory,
    start-up."""
    c16 = scenarios.get("chat_c16", {})
    out = [
        report.below(
            "added_p99_c16",
            f"added p99 latency at concurrency 16 < {ADDED_P99_C16_LIMIT_MS:g} ms",
            c16.get("added_p99_ms"),
            ADDED_P99_C16_LIMIT_MS,
            "ms",
        )
    ]
    for name in ("chat_c1", "chat_c16", "chat_c64"):
        factor = scenarios.get(name, {}).get("litellm_vs_quorum", {}).get("added_p50_factor")
        out.append(
            report.at_least(
                f"litellm_factor_{name.split('_')[1]}",
                f"{name}: LiteLLM adds >= {LITELLM_FACTOR:g}x the p50 latency Quorum adds",
                factor,
                LITELLM_FACTOR,
                "x",
            )
        )
    out.append(
        report.below(
            "idle_rss",
            f"idle node RSS < {IDLE_RSS_LIMIT_MIB:g} MiB",
            node_info.get("idle_rss_mib"),
            IDLE_RSS_LIMIT_MIB,
            "MiB",
        )
    )
    out.append(
        report.below(
            "startup_to_ready",
            f"node start-up to ready < {STARTUP_LIMIT_MS:g} ms",
            node_info.get("startup_to_healthy_ms"),
            STARTUP_LIMIT_MS,
            "ms",
        )
    )
    return out
