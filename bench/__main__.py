"""``python3 -m bench SUITE [--json FILE] [--quick]``: run a suite, print its JSON report.

``python3 -m bench profile [...]`` samples the node under load instead (see
:mod:`bench.profile`); ``python3 -m bench scheduling [...]`` runs Quorum's
routing across unequal holders against an oracle and LiteLLM's proxy (see
:mod:`bench.scheduling`, about 9 minutes; not part of ``all``);
``python3 -m bench plots REPORT.json`` draws a report's plots and tables into
``docs/`` (see :mod:`bench.plots`).

The report goes to stdout (and to ``--json FILE``); progress goes to stderr.
Exit status: 0 when the suite ran and every request succeeded (targets missed
or not: they are reported, not asserted), 1 when it could not run or requests
failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import lan, node, plots, relay, routing
from bench.procs import BenchError

# Each suite module has Settings (with rounds, duration_s, node_log_level), FULL, QUICK and
# run(settings, progress) -> report. ``routing`` (no processes, no load) is run apart.
MODULES: dict[str, ModuleType] = {"node": node, "lan": lan, "relay": relay}
SUITES = (*MODULES, "routing", "all")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "suite",
        choices=SUITES,
        help="node: one node (and LiteLLM's proxy) against the engine alone; relay: a peer "
        "reached by relay against the local route; lan: a LAN peer over veth against the local "
        "route (needs root); routing: the cost of one routing decision; all: every suite "
        "above (or, each with its own --help: 'profile': sample the node under load; "
        "'scheduling': routing across unequal holders against an oracle and LiteLLM; "
        "'plots REPORT.json': draw a report)",
    )
    p.add_argument("--json", metavar="FILE", type=Path, help="also write the report here")
    p.add_argument("--quick", action="store_true", help="a smoke run (well under a minute)")
    p.add_argument("--rounds", type=int, help="alternating direct/quorum rounds")
    p.add_argument("--duration", type=float, help="seconds per measured job")
    p.add_argument(
        "--node-log-level",
        choices=["debug", "info", "warning", "error"],
        help="the node's log level (default info, as a user runs it)",
    )
    p.add_argument(
        "--no-litellm", action="store_true", help="node suite: leave LiteLLM's proxy out"
    )
    p.add_argument(
        "--plots",
        metavar="DIR",
        type=Path,
        help="then draw the report's plots and tables into DIR (e.g. docs)",
    )
    return p


def _progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, module: ModuleType) -> Any:
    settings = module.QUICK if args.quick else module.FULL
    if args.rounds is not None:
        settings = replace(settings, rounds=max(1, args.rounds))
    if args.duration is not None:
        settings = replace(settings, duration_s=max(0.05, args.duration))
    if args.node_log_level is not None:
        settings = replace(settings, node_log_level=args.node_log_level)
    if args.no_litellm and hasattr(settings, "litellm"):
        settings = replace(settings, litellm=False)
    return settings


def _routing(args: argparse.Namespace) -> dict[str, Any]:
    _progress("routing: the cost of choose() over 100 nodes and 1000 models")
    rounds = 3 if args.quick else max(5, args.rounds or 5)
    result = routing.run(calls=5_000 if args.quick else 20_000, rounds=rounds)
    result["request_errors"] = 0
    return result


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind through every ``finally`` so the children are killed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    if argv[:1] == ["profile"]:
        from bench import profile

        return profile.main(argv[1:])
    if argv[:1] == ["scheduling"]:
        from bench import scheduling

        return scheduling.main(argv[1:])
    if argv[:1] == ["plots"]:
        return plots.main(argv[1:])
    args = parser().parse_args(argv)
    names = [*MODULES, "routing"] if args.suite == "all" else [args.suite]
    status = 0
    results: dict[str, Any] = {}
    for name in names:
        try:
            result: dict[str, Any] = (
                _routing(args)
                if name == "routing"
                else MODULES[name].run(_settings(args, MODULES[name]), _progress)
            )
            if result["request_errors"]:
                _progress(f"{result['request_errors']} request(s) failed: the numbers are suspect")
                status = 1
        except BenchError as exc:
            _progress(f"{name}: could not run: {exc}")
            result = {"bench": name, "error": str(exc)}
            status = 1
        except KeyboardInterrupt:
            _progress("interrupted; every child process was stopped")
            return 130
        results[name] = result
    result = {"bench": "all", "suites": results} if args.suite == "all" else results[args.suite]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    if args.plots is not None:
        try:
            plots.render(result, args.plots, _progress)
        except BenchError as exc:
            _progress(f"plots: could not draw: {exc}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
