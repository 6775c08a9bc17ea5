"""From per-round load results to the report: medians, paired differences, targets.

Pure functions over the JSON the load generator returns. Each round measured
the direct path and the Quorum path back to back, so a difference or a ratio
is taken within a round first (both sides saw the same machine noise) and the
median over rounds is reported. Absolute values are medians over rounds too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.stats import difference, median, ratio, rounded

Result = dict[str, Any]

# The targets of the issue: the node adds under 1 ms at the median with 16 clients, and
# streams at no less than 90 % of the engine's own rate.
ADDED_P50_C16_LIMIT_MS = 1.0
STREAM_RATIO_FLOOR = 0.90


CHAT_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "rps")
STREAM_KEYS = ("ttfb_p50_ms", "ttfb_p99_ms", "stream_chunks_per_s", "aggregate_chunks_per_s")
TRANSFER_KEYS = ("mb_per_s", "mb_per_s_min", "mb_per_s_max", "p50_ms", "aggregate_mb_per_s")
# What CPU time is divided by, per kind: requests, SSE events, or megabytes moved.
CPU_PER = {"chat": "requests", "stream": "events_total", "transfer": "mb_total"}


def _values(results: Sequence[Result], key: str) -> list[float | None]:
    return [r.get(key) for r in results]


def _paired(
    direct: Sequence[Result], quorum: Sequence[Result], key: str, op: Callable[..., float | None]
) -> float | None:
    return median(op(q.get(key), d.get(key)) for d, q in zip(direct, quorum, strict=True))


def _by_round(
    base: Sequence[Result], other: Sequence[Result], key: str, op: Callable[..., float | None]
) -> list[float | None]:
    return [rounded(op(o.get(key), b.get(key))) for b, o in zip(base, other, strict=True)]


def _cpu_us(results: Sequence[Result], process: str, per: str) -> float | None:
    """Median over rounds of a process's CPU microseconds per request (or per chunk, per MB)."""
    values = []
    for r in results:
        cpu, count = r.get("cpu_s", {}).get(process), r.get(per)
        values.append(None if cpu is None or not count else cpu * 1e6 / count)
    return rounded(median(values), 1)


def side(results: Sequence[Result], keys: Sequence[str]) -> Result:
    """One target's medians over rounds, with request and error totals."""
    out: Result = {k: rounded(median(_values(results, k))) for k in keys}
    out["requests"] = sum(r.get("requests", 0) for r in results)
    out["errors"] = sum(r.get("errors", 0) for r in results)
    samples = sorted({s for r in results for s in r.get("error_samples", [])})
    if samples:
        out["error_samples"] = samples[:5]
    return out


def chat_pair(base: Sequence[Result], other: Sequence[Result]) -> Result:
    """``other`` against ``base`` for chat jobs: differences and ratios paired within rounds."""
    return {
        "added_p50_ms": rounded(_paired(base, other, "p50_ms", difference)),
        "added_p99_ms": rounded(_paired(base, other, "p99_ms", difference)),
        "ratio_p50": rounded(_paired(base, other, "p50_ms", ratio)),
        "ratio_p99": rounded(_paired(base, other, "p99_ms", ratio)),
        "ratio_rps": rounded(_paired(base, other, "rps", ratio)),
        "added_p50_ms_by_round": _by_round(base, other, "p50_ms", difference),
    }


def stream_pair(base: Sequence[Result], other: Sequence[Result]) -> Result:
    """``other`` against ``base`` for SSE jobs."""
    return {
        "added_ttfb_p50_ms": rounded(_paired(base, other, "ttfb_p50_ms", difference)),
        "ratio_stream_chunks_per_s": rounded(_paired(base, other, "stream_chunks_per_s", ratio)),
        "ratio_aggregate_chunks_per_s": rounded(
            _paired(base, other, "aggregate_chunks_per_s", ratio)
        ),
        "ratio_aggregate_chunks_per_s_by_round": _by_round(
            base, other, "aggregate_chunks_per_s", ratio
        ),
    }


def transfer_pair(base: Sequence[Result], other: Sequence[Result]) -> Result:
    """``other`` against ``base`` for large bodies (speech answers, uploads)."""
    return {
        "added_p50_ms": rounded(_paired(base, other, "p50_ms", difference)),
        "ratio_mb_per_s": rounded(_paired(base, other, "mb_per_s", ratio)),
        "ratio_mb_per_s_by_round": _by_round(base, other, "mb_per_s", ratio),
    }


Pair = Callable[[Sequence[Result], Sequence[Result]], Result]
_PAIRS: dict[str, tuple[tuple[str, ...], Pair]] = {
    "chat": (CHAT_KEYS, chat_pair),
    "stream": (STREAM_KEYS, stream_pair),
    "transfer": (TRANSFER_KEYS, transfer_pair),
}


def cpu_by_side(sides: Mapping[str, Sequence[Result]], per: str) -> Result:
    """Each process's CPU µs per unit of work, for each target measured."""
    out: Result = {}
    for name, results in sides.items():
        processes = sorted({p for r in results for p in r.get("cpu_s", {})})
        out[name] = {p: _cpu_us(results, p, per) for p in processes}
    return out


def compare(
    kind: str,
    sides: Mapping[str, Sequence[Result]],
    base: str,
    other: str,
    *,
    also: Sequence[tuple[str, str]] = (),
    info: Result | None = None,
) -> Result:
    """A scenario measured on several targets: each side's medians, ``other`` against
    ``base`` at the top level, every pair of ``also`` under ``"<other>_vs_<base>"``, and
    each process's CPU per unit of work (``kind``: chat, stream or transfer)."""
    keys, pair = _PAIRS[kind]
    out: Result = {"kind": kind, **(info or {}), "rounds": len(sides[base])}
    for name, results in sides.items():
        out[name] = side(results, keys)
    out.update(pair(sides[base], sides[other]))
    for b, o in also:
        out[f"{o}_vs_{b}"] = pair(sides[b], sides[o])
    per = CPU_PER[kind]
    out["cpu_us_per_" + {"requests": "request", "events_total": "chunk"}.get(per, "mb")] = (
        cpu_by_side(sides, per)
    )
    return out


def chat_scenario(concurrency: int, direct: Sequence[Result], quorum: Sequence[Result]) -> Result:
    return {
        "kind": "chat",
        "concurrency": concurrency,
        "rounds": len(direct),
        "direct": side(direct, CHAT_KEYS),
        "quorum": side(quorum, CHAT_KEYS),
        **chat_pair(direct, quorum),
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
    return {
        "kind": "stream",
        "concurrency": concurrency,
        "chunks_per_stream": tokens,
        "rounds": len(direct),
        "direct": side(direct, STREAM_KEYS),
        "quorum": side(quorum, STREAM_KEYS),
        **stream_pair(direct, quorum),
        "cpu_us_per_chunk": {
            "node": _cpu_us(quorum, "node", "events_total"),
            "engine": _cpu_us(direct, "engine", "events_total"),
            "load_direct": _cpu_us(direct, "load", "events_total"),
            "load_quorum": _cpu_us(quorum, "load", "events_total"),
        },
    }


def with_litellm(
    kind: str, direct: Sequence[Result], quorum: Sequence[Result], litellm: Sequence[Result]
) -> Result:
    """LiteLLM's side of a node scenario: its medians, against direct (paired within rounds)
    and against Quorum: how many times Quorum's added latency LiteLLM adds (a ratio of the
    medians over rounds, so one round where Quorum added ~0 cannot blow it up)."""
    if kind == "chat":
        out: Result = {"litellm": side(litellm, CHAT_KEYS), "litellm_vs_direct": {}}
        out["litellm_vs_direct"] = chat_pair(direct, litellm)
        q_p50 = _paired(direct, quorum, "p50_ms", difference)
        q_p99 = _paired(direct, quorum, "p99_ms", difference)
        out["litellm_vs_quorum"] = {
            "added_p50_factor": rounded(ratio(out["litellm_vs_direct"]["added_p50_ms"], q_p50), 1),
            "added_p99_factor": rounded(ratio(out["litellm_vs_direct"]["added_p99_ms"], q_p99), 1),
            "quorum_rps_over_litellm": rounded(_paired(litellm, quorum, "rps", ratio)),
        }
        per = "requests"
    else:
        out = {"litellm": side(litellm, STREAM_KEYS), "litellm_vs_direct": {}}
        out["litellm_vs_direct"] = stream_pair(direct, litellm)
        per = "events_total"
    out["cpu_us_litellm"] = _cpu_us(litellm, "litellm", per)
    out["cpu_us_load_litellm"] = _cpu_us(litellm, "load", per)
    return out


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


def below(name: str, goal: str, value: float | None, limit: float, unit: str) -> Result:
    """A target met when ``value < limit``; missed by how much (and how many times) if not."""
    ok = None if value is None else value < limit
    missed = None if value is None else f"{value - limit:.3f} {unit} over ({value / limit:.1f}x)"
    return _target(name, goal, value, unit, ok, missed)


def above(name: str, goal: str, value: float | None, floor: float, unit: str) -> Result:
    """A target met when ``value > floor``; missed by how much (and what share) if not."""
    ok = None if value is None else value > floor
    missed = (
        None
        if value is None
        else f"{floor - value:.1f} {unit} short ({value / floor * 100:.0f} % of the goal)"
    )
    return _target(name, goal, value, unit, ok, missed)


def at_least(name: str, goal: str, value: float | None, floor: float, unit: str) -> Result:
    """A target met when ``value >= floor``; missed by how much if not."""
    ok = None if value is None else value >= floor
    missed = None if value is None else f"{floor - value:.2f} {unit} short ({value:g} {unit})"
    return _target(name, goal, value, unit, ok, missed)


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
