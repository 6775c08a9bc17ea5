"""``python3 -m bench plots REPORT.json [--docs DIR]``: a report's plots and tables.

Draws, from a ``bench all`` report (or a single suite's):

- ``perf-latency.png``: p50 and p99 latency of non-streaming chat against the
  number of concurrent clients, for the engine called directly, Quorum's local
  route, the LAN route, the relay route and LiteLLM's proxy;
- ``perf-added.png``: the same as latency added over the direct path, each
  path against the direct path measured in the same rounds of its own suite;
- ``perf-streaming.png``: streamed chunks per second, one stream and 16 at
  once, as a share of the direct path.

and rewrites the generated parts of ``performance.md`` in the same directory:
everything between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
(``machine``, ``table``, ``targets``); the prose around them is kept.

matplotlib is not a dependency of Quorum: when this interpreter lacks it, it
is installed into the bench's own environment (``bench/.venv-litellm``) and
the drawing runs there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import litellm
from bench.procs import BENCH_ROOT, BenchError, child_env

Report = dict[str, Any]
Progress = Callable[[str], None]
CONCURRENCY = (1, 16, 64)
# (label, suite, scenario side, the same suite's direct side)
PATHS = (
    ("direct", "node", "direct", "direct"),
    ("Quorum local", "node", "quorum", "direct"),
    ("Quorum LAN", "lan", "lan", "direct_in_a"),
    ("Quorum relay", "relay", "relay", "direct"),
    ("LiteLLM proxy", "node", "litellm", "direct"),
)
STYLE = {
    "direct": ("black", "o"),
    "Quorum local": ("tab:blue", "s"),
    "Quorum LAN": ("tab:green", "^"),
    "Quorum relay": ("tab:purple", "D"),
    "LiteLLM proxy": ("tab:red", "v"),
}


def suites(report: Report) -> dict[str, Report]:
    if report.get("bench") == "all":
        return {k: v for k, v in report.get("suites", {}).items() if "error" not in v}
    return {str(report.get("bench")): report}


def _scenario(suite: Report | None, name: str) -> Report:
    return {} if suite is None else suite.get("scenarios", {}).get(name, {})


def latency_series(report: Report) -> dict[str, dict[str, list[float | None]]]:
    """``{label: {"p50": [...], "p99": [...], "added_p50": [...], "added_p99": [...]}}``,
    one value per concurrency in ``CONCURRENCY`` (``None`` where not measured)."""
    by_suite = suites(report)
    out: dict[str, dict[str, list[float | None]]] = {}
    for label, suite_name, side, base in PATHS:
        suite = by_suite.get(suite_name)
        series: dict[str, list[float | None]] = {
            k: [] for k in ("p50", "p99", "added_p50", "added_p99")
        }
        for c in CONCURRENCY:
            sc = _scenario(suite, f"chat_c{c}")
            got = sc.get(side, {})
            series["p50"].append(got.get("p50_ms"))
            series["p99"].append(got.get("p99_ms"))
            pair = _pair(sc, side, base)
            series["added_p50"].append(pair.get("added_p50_ms"))
            series["added_p99"].append(pair.get("added_p99_ms"))
        if any(v is not None for v in series["p50"]):
            out[label] = series
    return out


def _pair(sc: Report, side: str, base: str) -> Report:
    """The pair ``side`` against ``base`` wherever the suite put it."""
    if side == base:
        return {"added_p50_ms": 0.0, "added_p99_ms": 0.0}
    if side == "quorum":
        return sc
    if side == "litellm":
        got: Report = sc.get("litellm_vs_direct", {})
        return got
    nested: Report = sc.get(f"{side}_vs_{base}", {})
    return nested


def stream_series(report: Report) -> dict[str, dict[str, float | None]]:
    """Per path: ``stream_1`` chunks/s per stream and ``stream_16`` aggregate chunks/s, as a
    share of the direct path (paired within rounds of the path's own suite)."""
    by_suite = suites(report)
    out: dict[str, dict[str, float | None]] = {}
    for label, suite_name, side, base in PATHS:
        suite = by_suite.get(suite_name)
        if suite is None:
            continue
        row: dict[str, float | None] = {}
        for name, key in (
            ("stream_1", "ratio_stream_chunks_per_s"),
            ("stream_16", "ratio_aggregate_chunks_per_s"),
        ):
            sc = _scenario(suite, name)
            if side not in sc:
                row[name] = None
            elif side == base:
                row[name] = 1.0
            else:
                row[name] = _pair(sc, side, base).get(key)
        if any(v is not None for v in row.values()):
            out[label] = row
    return out


def draw(report: Report, docs: Path) -> list[Path]:
    """The PNGs (needs matplotlib in this interpreter)."""
    mpl = importlib.import_module("matplotlib")
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    docs.mkdir(parents=True, exist_ok=True)
    lat = latency_series(report)
    note = _note(report)
    written = []
    for name, keys, ylabel, log in (
        ("perf-latency.png", ("p50", "p99"), "latency (ms, log scale)", True),
        ("perf-added.png", ("added_p50", "added_p99"), "added over direct (ms, log scale)", True),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
        for ax, key in zip(axes, keys, strict=True):
            for label, series in lat.items():
                if key.startswith("added") and label == "direct":
                    continue
                xs = [c for c, v in zip(CONCURRENCY, series[key], strict=True) if v is not None]
                ys = [max(v, 1e-3) for v in series[key] if v is not None]
                color, marker = STYLE[label]
                ax.plot(xs, ys, marker=marker, color=color, label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("concurrent clients (non-streaming chat)")
            ax.set_title(key.replace("added_", "added ").replace("p", "p", 1))
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(ylabel)
        axes[1].legend(loc="upper left", fontsize=8)
        fig.suptitle(note, fontsize=8)
        fig.tight_layout()
        path = docs / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    streams = stream_series(report)
    if streams:
        fig, ax = plt.subplots(figsize=(9, 4))
        labels = list(streams)
        width = 0.38
        for i, (name, title) in enumerate(
            (("stream_1", "one stream (chunks/s)"), ("stream_16", "16 streams (total chunks/s)"))
        ):
            values = [(streams[label][name] or 0.0) * 100 for label in labels]
            positions = [j + (i - 0.5) * width for j in range(len(labels))]
            bars = ax.bar(
                positions, values, width, label=title, color=("tab:blue", "tab:orange")[i]
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.axhline(90, color="tab:green", ls="--", lw=1, label="target, one node: 90 %")
        ax.axhline(70, color="tab:purple", ls=":", lw=1, label="target, relay: 70 %")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("% of the direct path (same rounds)")
        ax.set_title("streaming, 1024 chunks per stream")
        ax.legend(fontsize=7, loc="upper right")
        fig.suptitle(note, fontsize=8)
        fig.tight_layout()
        path = docs / "perf-streaming.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _note(report: Report) -> str:
    node = suites(report).get("node", {})
    m = node.get("machine", {})
    return (
        f"{m.get('cpus_usable')} CPUs ({m.get('cpu_model')}), Python {m.get('python')}, "
        f"{node.get('started_at', '')}; medians over {node.get('settings', {}).get('rounds')} "
        "rounds"
    )


# --- performance.md ---------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine_md(report: Report) -> str:
    by_suite = suites(report)
    node = by_suite.get("node", {})
    m = node.get("machine", {})
    ll = node.get("litellm", {})
    lines = [
        f"- Run: {node.get('started_at', '?')}, {node.get('elapsed_s', '?')} s for the node "
        f"suite; settings {json.dumps(node.get('settings', {}))}",
        f"- CPU: {m.get('cpu_model')}, {m.get('cpus_usable')} usable of {m.get('cpu_count')}; "
        f"load average at the start {m.get('loadavg_at_start')}",
        f"- {m.get('platform')}; Python {m.get('python')}, aiohttp {m.get('aiohttp')}, "
        f"uvloop {m.get('uvloop_version')} (in use: {m.get('uvloop')})",
        "- LiteLLM: "
        + (
            f"{ll.get('package')} ({ll.get('version')}), {ll.get('workers')} worker, "
            f"ready after {ll.get('startup_to_healthy_ms')} ms, idle RSS "
            f"{ll.get('idle_rss_mib')} MiB"
            if ll.get("available")
            else f"unavailable: {ll.get('reason', 'not in this report')}"
        ),
    ]
    for name in ("lan", "relay"):
        suite = by_suite.get(name)
        if suite is not None:
            lines.append(
                f"- {name} suite: {suite.get('started_at')}, load average at its start "
                f"{suite.get('machine', {}).get('loadavg_at_start')}"
            )
    return "\n".join(lines)


def table_md(report: Report) -> str:
    lat = latency_series(report)
    streams = stream_series(report)
    head = (
        "| path | p50 ms c1 / c16 / c64 | p99 ms c1 / c16 / c64 | added p50 ms c1 / c16 / c64 "
        "| added p99 ms c1 / c16 / c64 | stream_1 | stream_16 |"
    )
    rows = [head, "|---|---|---|---|---|---|---|"]
    for label, series in lat.items():
        s = streams.get(label, {})
        cells = [
            " / ".join(_fmt(v) for v in series[k]) for k in ("p50", "p99", "added_p50", "added_p99")
        ]
        pct = [
            "-" if s.get(n) is None else f"{(s[n] or 0) * 100:.0f} %"
            for n in ("stream_1", "stream_16")
        ]
        rows.append(f"| {label} | " + " | ".join(cells + pct) + " |")
    node = suites(report).get("node", {})
    rows.append("")
    rows.append(
        "stream_1: chunks/s of one stream; stream_16: total chunks/s of 16 streams; both as "
        "a share of the direct path in the same rounds. Added latency: each path minus the "
        "direct path measured in the same rounds of its own suite."
    )
    sc = node.get("scenarios", {})
    if sc:
        rows += ["", "| node suite | c1 | c16 | c64 |", "|---|---|---|---|"]
        for title, keys in NODE_ROWS:
            cells = [_fmt(_dig(sc.get(f"chat_c{c}", {}), keys), 1) for c in CONCURRENCY]
            rows.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


NODE_ROWS = (
    ("requests/s, direct", ("direct", "rps")),
    ("requests/s, Quorum", ("quorum", "rps")),
    ("requests/s, LiteLLM", ("litellm", "rps")),
    ("node CPU µs per request", ("cpu_us_per_request", "node")),
    ("LiteLLM CPU µs per request", ("cpu_us_per_request", "litellm")),
    ("LiteLLM added p50 / Quorum added p50", ("litellm_vs_quorum", "added_p50_factor")),
)


def _dig(data: Report, keys: tuple[str, ...]) -> Any:
    value: Any = data
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else None
    return None if value == {} else value


def targets_md(report: Report) -> str:
    rows = ["| suite | target | goal | value | met | missed by |", "|---|---|---|---|---|---|"]
    for name, suite in suites(report).items():
        for t in suite.get("targets", []):
            met = {True: "yes", False: "**no**", None: "-"}[t.get("pass")]
            rows.append(
                f"| {name} | `{t['name']}` | {t['goal']} | {_fmt(t.get('value'))} "
                f"{t.get('unit', '')} | {met} | {t.get('missed_by') or ''} |"
            )
    return "\n".join(rows)


SKELETON = """# Performance

<!-- bench:machine -->
<!-- /bench:machine -->

<!-- bench:table -->
<!-- /bench:table -->

<!-- bench:targets -->
<!-- /bench:targets -->
"""


def _fill(block: str, match: re.Match[str]) -> str:
    return match.group(1) + block + match.group(2)


def update_doc(path: Path, sections: dict[str, str]) -> None:
    """Replace each ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->`` block of ``path``."""
    text = path.read_text() if path.exists() else SKELETON
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            text += f"\n<!-- bench:{name} -->\n<!-- /bench:{name} -->\n"
        block = body.rstrip() + "\n"
        text = pattern.sub(partial(_fill, block), text)
    path.write_text(text)


def render(report: Report, docs: Path, progress: Progress) -> None:
    """The PNGs (here, or in the bench's environment) and ``performance.md``'s tables."""
    docs.mkdir(parents=True, exist_ok=True)
    try:
        importlib.import_module("matplotlib")
        here = True
    except ImportError:
        here = False
    if here:
        written = draw(report, docs)
    else:
        python = litellm.ensure([litellm.MATPLOTLIB], progress)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(report, f)
        try:
            done = subprocess.run(
                [str(python), "-m", "bench.plots", "--draw-only", f.name, "--docs", str(docs)],
                cwd=BENCH_ROOT,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            Path(f.name).unlink(missing_ok=True)
        if done.returncode != 0:
            raise BenchError(f"drawing failed: {done.stderr.strip()[-500:]}")
        written = [Path(p) for p in done.stdout.split()]
    for path in written:
        progress(f"wrote {path}")
    doc = docs / "performance.md"
    update_doc(
        doc,
        {"machine": machine_md(report), "table": table_md(report), "targets": targets_md(report)},
    )
    progress(f"updated the generated parts of {doc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench plots", description=__doc__.split("\n")[0])
    p.add_argument("report", type=Path, help="a JSON report of python3 -m bench")
    p.add_argument("--docs", type=Path, default=BENCH_ROOT / "docs", help="where to write")
    p.add_argument("--draw-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text())
    if args.draw_only:
        print("\n".join(str(path) for path in draw(report, args.docs)))
        return 0
    try:
        render(report, args.docs, lambda text: print(f"[bench plots] {text}", file=sys.stderr))
    except BenchError as exc:
        print(f"bench plots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
