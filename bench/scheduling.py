"""``python3 -m bench scheduling``: Quorum's routing against an oracle and LiteLLM's proxy.

Four simulated engines hold one model (:mod:`bench.sched_sim`); none says
what it can do. Three sit behind node A; one sits behind node B, a LAN peer
of A (both nodes in one child process, :mod:`bench.sched_nodes`). Each has
its own slots and time per request: ``fast`` 4 x 0.2 s, ``medium`` 2 x 0.4 s,
``slow`` 1 x 1.6 s (8 times slower than fast, one slot), ``peer`` 2 x 0.25 s:
about 33.6 requests a second in all.

Open-loop Poisson load at 50, 70 and 90 % of that capacity, non-streamed and
streamed (20 chunks, the first after a tenth of the time), is sent with the
same arrival times to:

- ``oracle``: a dispatcher that knows every engine's slots and speed and when
  each running request ends, and sends each request where it finishes first;
- ``quorum``: node A, with no configuration;
- ``litellm-<strategy>``: LiteLLM's proxy (``bench/.venv-litellm``) with the
  four engines as deployments of one model, for each routing strategy, at
  70 % and 90 % (non-streamed).

Each run warms up for ``--warmup`` seconds (kept out of the numbers), then
measures for ``--duration`` seconds: p50 and p99 latency (to the last byte),
p50 and p99 time to the first token, goodput (answers within 1 s, a second),
failed requests. Numbers are reported, never asserted. ``--plots DIR``
draws ``perf-scheduling.png`` and rewrites the ``bench:scheduling`` block of
``DIR/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import litellm
from bench.procs import BenchError, Children, child_env, fetch, wait_http_ok
from bench.sched_sim import MODEL, EngineSpec, Oracle, SimEngine, open_loop, summary
from bench.stats import ratio

ENGINES = (
    EngineSpec("fast", 4, 0.2),
    EngineSpec("medium", 2, 0.4),
    EngineSpec("slow", 1, 1.6),
    EngineSpec("peer", 2, 0.25, behind_peer=True),
)
LOADS = (0.5, 0.7, 0.9)
STRATEGIES = ("least-busy", "latency-based-routing", "simple-shuffle")
SLO_S = 1.0
TARGETS = {0.7: (1.5, 1.2), 0.9: (2.0, 1.2)}  # load: (p99, p50) multiples of the oracle's


def _progress(text: str) -> None:
    print(f"[scheduling] {text}", file=sys.stderr, flush=True)


def capacity() -> float:
    return sum(e.rate for e in ENGINES)


async def _drained(engines: list[SimEngine], timeout_s: float = 15.0) -> bool:
    """Wait until no request is left in any engine; after ``timeout_s``, refuse the queued
    ones (a dispatcher that piled work on the slow engine must not slow the next run)."""
    for attempt in range(2):
        try:
            async with asyncio.timeout(timeout_s):
                for e in engines:
                    await e.idle.wait()
            return attempt == 0
        except TimeoutError:
            _progress("engines still busy: refusing what is queued in them")
            for e in engines:
                e.reset()
    raise BenchError("the engines did not drain after a reset")


def _start_nodes(kids: Children, tmp: Path, engines: list[SimEngine]) -> str:
    spec = {
        "data": str(tmp),
        "a": {e.spec.name: e.url + "/v1" for e in engines if not e.spec.behind_peer},
        "b": {e.spec.name: e.url + "/v1" for e in engines if e.spec.behind_peer},
    }
    child = kids.start(
        "nodes",
        [sys.executable, "-m", "bench.sched_nodes", json.dumps(spec)],
        env=child_env(),
        log=tmp / "nodes.log",
    )
    urls = json.loads(child.read_line(120.0))
    return str(urls["a"])


def _start_litellm(kids: Children, tmp: Path, engines: list[SimEngine], strategy: str) -> str:
    port = 40000 + STRATEGIES.index(strategy)
    deployments = [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": e.url + "/v1",
                "api_key": "unused",
            },
        }
        for e in engines
    ]
    config = tmp / f"litellm-{strategy}.yaml"
    config.write_text(
        json.dumps({"model_list": deployments, "router_settings": {"routing_strategy": strategy}})
    )
    args = [str(litellm.VENV / "bin" / "litellm"), "--config", str(config)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    env.pop("PYTHONPATH", None)
    child = kids.start(f"litellm-{strategy}", args, env=env, log=tmp / f"{strategy}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(child, url + "/health/liveliness", 120.0, poll_s=0.1)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    status, _, text = fetch(url + "/v1/chat/completions", body.encode(), timeout_s=30)
    if status != 200:
        raise BenchError(f"a chat through LiteLLM answered {status}: {text[:200]!r}")
    return url


async def run(args: argparse.Namespace) -> dict[str, Any]:
    engines = [SimEngine(spec) for spec in ENGINES]
    for e in engines:
        await e.start()
    oracle = Oracle(engines)
    await oracle.start()
    results: dict[str, Any] = {}
    seed = 0

    async def measure(target: str, url: str, stream: bool, load: float) -> None:
        nonlocal seed
        seed += 1
        mode = "stream" if stream else "whole"
        rate = load * capacity()
        _progress(f"{mode} {load:.0%} ({rate:.1f}/s) -> {target}")
        got = await open_loop(
            url,
            rate,
            args.duration,
            stream=stream,
            seed=hash((mode, load)) & 0xFFFF,
            warmup_s=args.warmup,
        )
        row = summary(got, SLO_S)
        results.setdefault(mode, {}).setdefault(f"{load:.0%}", {})[target] = row
        _progress(f"  p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, failed {row['failed']}")
        row["drained"] = await _drained(engines)
        if args.json:  # kept as it goes: a run that breaks later still leaves its numbers
            args.json.write_text(json.dumps({"partial": True, "results": results}, indent=2))

    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmpdir, Children() as kids:
        tmp = Path(tmpdir)
        node_url = await asyncio.to_thread(_start_nodes, kids, tmp, engines)
        for stream in (False, True):
            if ("stream" if stream else "whole") not in args.modes:
                continue
            for load in args.loads:
                await measure("oracle", f"http://127.0.0.1:{oracle.port}", stream, load)
                await measure("quorum", node_url, stream, load)
        if not args.no_litellm:
            try:
                await asyncio.to_thread(litellm.ensure, [litellm.LITELLM], _progress)
            except litellm.Unavailable as exc:
                results["litellm"] = {"available": False, "reason": str(exc)}
            else:
                for strategy in STRATEGIES:
                    url = await asyncio.to_thread(_start_litellm, kids, tmp, engines, strategy)
                    for stream, load in ((False, 0.7), (False, 0.9)):
                        await measure(f"litellm-{strategy}", url, stream, load)
                    kids.stop_all()  # only this LiteLLM is left: the nodes are done
    await oracle.stop()
    for e in engines:
        await e.stop()
    return {
        "engines": [vars(e) for e in ENGINES],
        "capacity_rps": round(capacity(), 2),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "slo_s": SLO_S,
        "results": results,
        "vs_oracle": vs_oracle(results),
    }


def vs_oracle(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, loads in results.items():
        if not isinstance(loads, dict) or mode == "litellm":
            continue
        for load, targets in loads.items():
            base = targets.get("oracle")
            if base is None:
                continue
            for target, s in targets.items():
                if target == "oracle":
                    continue
                out.setdefault(mode, {}).setdefault(load, {})[target] = {
                    "p50_x": _r(ratio(s["p50_ms"], base["p50_ms"])),
                    "p99_x": _r(ratio(s["p99_ms"], base["p99_ms"])),
                    "failed": s["failed"],
                }
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def table_md(report: dict[str, Any]) -> str:
    rows = [
        "| mode | load | dispatcher | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms "
        "| goodput /s | failed | p50 x oracle | p99 x oracle |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, loads in report["results"].items():
        if mode == "litellm":
            continue
        for load, targets in loads.items():
            for target, s in targets.items():
                x = report["vs_oracle"].get(mode, {}).get(load, {}).get(target, {})
                rows.append(
                    f"| {mode} | {load} | {target} | {s['p50_ms']} | {s['p99_ms']} | "
                    f"{s['ttft_p50_ms']} | {s['ttft_p99_ms']} | {s['goodput_rps']} | "
                    f"{s['failed']}/{s['requests']} | {x.get('p50_x', '')} | {x.get('p99_x', '')} |"
                )
    return "\n".join(rows)


_PLOT = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
report = json.load(open(sys.argv[1]))
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
modes = ("whole", "stream")
every = sorted({t for m in modes for v in report["results"].get(m, {}).values() for t in v})
colors = {name: f"C{i}" for i, name in enumerate(every)}  # one colour a dispatcher
for ax, mode in zip(axes, modes):
    loads = report["results"].get(mode, {})
    names = sorted({t for v in loads.values() for t in v})
    for name in names:
        xs = [int(k.rstrip("%")) for k, v in loads.items() if name in v]
        ys = [v[name]["p99_ms"] for v in loads.values() if name in v]
        ax.plot(xs, ys, marker="o", label=name, color=colors[name])
    ax.set_title(f"p99 latency, {'streamed' if mode == 'stream' else 'non-streamed'}")
    ax.set_xlabel("load, % of capacity"); ax.set_ylabel("ms"); ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""


def render(report: dict[str, Any], docs: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(report, f)
        f.flush()
        python = litellm.ensure([litellm.MATPLOTLIB], _progress)
        subprocess.run(
            [str(python), "-c", _PLOT, f.name, str(docs / "perf-scheduling.png")],
            check=True,
            timeout=120,
        )
    doc = docs / "performance.md"
    text = doc.read_text()
    begin, end = "<!-- bench:scheduling -->", "<!-- /bench:scheduling -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc.write_text(f"{head}{begin}\n{table_md(report)}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench scheduling")
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("whole", "stream"),
        default=["whole", "stream"],
        help="non-streamed, streamed or both (default both)",
    )
    parser.add_argument(
        "--loads",
        nargs="+",
        type=float,
        default=list(LOADS),
        help="shares of capacity to measure Quorum and the oracle at (default 0.5 0.7 0.9)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plots", type=Path, help="docs directory to draw into")
    args = parser.parse_args(argv)
    began = time.monotonic()
    report = asyncio.run(run(args))
    report["wall_s"] = round(time.monotonic() - began, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.plots:
        render(report, args.plots)
    failed = sum(
        targets["quorum"]["failed"]
        for mode, loads in report["results"].items()
        if mode != "litellm"
        for targets in loads.values()
        if "quorum" in targets
    )
    if failed:
        _progress(f"{failed} request(s) through Quorum failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
