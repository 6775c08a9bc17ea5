"""From per-round load results to the report: medians, paired differences, targets.

Pure functions over the JSON the load generator returns. Each round measured
the direct path and the Quorum path back to back, so a difference or a ratio
is taken within a round first (both sides saw the same machine noise) and the
median over rounds is reported. Absolute values are medians over rounds too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.stats import difference, median, ratio, rounded

Result = dict[str, Any]

# The targets of the issue: the node adds under 1 ms at the median with 16 clients, and
# streams at no less than 90 % of the engine's own rate.
ADDED_P50_C16_LIMIT_MS = 1.0
STREAM_RATIO_FLOOR = 0.90


def _values(results: Sequence[Result], key: str) -> list[float | None]:
    return [r.get(key) for r in results]


def _paired(
    direct: Sequence[Result], quorum: Sequence[Result], key: str, op: Callable[..., float | None]
) -> float | None:
    return median(op(q.get(key), d.get(key)) for d, q in zip(direct, quorum, strict=True))


def _cpu_us(results: Sequence[Result], process: str, per: str) -> float | None:
    """Median over rounds of a process's CPU microseconds per request (or per chunk)."""
    values = []
    for r in results:
        cpu, count = r.get("cpu_s", {}).get(process), r.get(per)
        values.append(None if cpu is None or not count else cpu * 1e6 / count)
    return rounded(median(values), 1)


def _side(results: Sequence[Result], keys: Sequence[str]) -> Result:
    side: Result = {k: rounded(median(_values(results, k))) for k in keys}
    side["requests"] = sum(r.get("requests", 0) for r in results)
    side["errors"] = sum(r.get("errors", 0) for r in results)
    samples = sorted({s for r in results for s in r.get("error_samples", [])})
    if samples:
        side["error_samples"] = samples[:5]
    return side


def chat_scenario(concurrency: int, direct: Sequence[Result], quorum: Sequence[Result]) -> Result:
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "rps")
    return {
        "kind": "chat",
        "concurrency": concurrency,
        "rounds": len(direct),
        "direct": _side(direct, keys),
        "quorum": _side(quorum, keys),
        "added_p50_ms": rounded(_paired(direct, quorum, "p50_ms", difference)),
        "added_p99_ms": rounded(_paired(direct, quorum, "p99_ms", difference)),
        "ratio_p50": rounded(_paired(direct, quorum, "p50_ms", ratio)),
        "ratio_p99": rounded(_paired(direct, quorum, "p99_ms", ratio)),
        "ratio_rps": rounded(_paired(direct, quorum, "rps", ratio)),
        "added_p50_ms_by_round": [
            rounded(difference(q.get("p50_ms"), d.get("p50_ms")))
            for d, q in zip(direct, quorum, strict=True)
        ],
        "cpu_us_per_request": {
            "node": _cpu_us(quorum, "node", "requests"),
            "engine": _cpu_us(direct, "engine", "requests"),
            "load_direct": _cpu_us(direct, "load", "requests"),
            "load_quorum": _cpu_us(quorum, "load", "requests"),
        },
    }


def stream_scenario(
    concurrency: int, tokens: int, direct: Sequence[Result], quorum: Sequence[Result]
) -> Result:
    keys = ("ttfb_p50_ms", "ttfb_p99_ms", "stream_chunks_per_s", "aggregate_chunks_per_s")
    return {
        "kind": "stream",
        "concurrency": concurrency,
        "chunks_per_stream": tokens,
        "rounds": len(direct),
        "direct": _side(direct, keys),
        "quorum": _side(quorum, keys),
        "added_ttfb_p50_ms": rounded(_paired(direct, quorum, "ttfb_p50_ms", difference)),
        "ratio_stream_chunks_per_s": rounded(_paired(direct, quorum, "stream_chunks_per_s", ratio)),
        "ratio_aggregate_chunks_per_s": rounded(
            _paired(direct, quorum, "aggregate_chunks_per_s", ratio)
        ),
        "ratio_aggregate_chunks_per_s_by_round": [
            rounded(ratio(q.get("aggregate_chunks_per_s"), d.get("aggregate_chunks_per_s")))
            for d, q in zip(direct, quorum, strict=True)
        ],
        "cpu_us_per_chunk": {
            "node": _cpu_us(quorum, "node", "events_total"),
            "engine": _cpu_us(direct, "engine", "events_total"),
            "load_direct": _cpu_us(direct, "load", "events_total"),
            "load_quorum": _cpu_us(quorum, "load", "events_total"),
        },
    }


def _target(
    name: str, goal: str, value: float | None, unit: str, ok: bool | None, missed: str | None
) -> Result:
    return {
        "name": name,
        "goal": goal,
        "value": value,
        "unit": unit,
        "pass": ok,
        "missed_by": None if ok else missed,
    }


def targets(scenarios: dict[str, Result]) -> list[Result]:
    """The issue's targets with pass/fail and, when missed, by how much."""
    out: list[Result] = []
    added = scenarios.get("chat_c16", {}).get("added_p50_ms")
    limit = ADDED_P50_C16_LIMIT_MS
    out.append(
        _target(
            "added_p50_c16",
            f"added p50 latency at concurrency 16 < {limit:g} ms",
            added,
            "ms",
            None if added is None else added < limit,
            None if added is None else f"{added - limit:.3f} ms over ({added / limit:.1f}x)",
        )
    )
    for name, key in (
        ("stream_1", "ratio_stream_chunks_per_s"),
        ("stream_16", "ratio_aggregate_chunks_per_s"),
    ):
        value = scenarios.get(name, {}).get(key)
        pct = None if value is None else round(value * 100, 1)
        floor = STREAM_RATIO_FLOOR * 100
        out.append(
            _target(
                f"throughput_{name}",
                f"{name}: chunks/s through Quorum >= {floor:g} % of direct",
                pct,
                "% of direct",
                None if pct is None else pct >= floor,
                None if pct is None else f"{floor - pct:.1f} percentage points short",
            )
        )
    return out
