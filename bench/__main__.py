"""``python3 -m bench SUITE [--json FILE] [--quick]``: run a suite, print its JSON report.

``python3 -m bench profile [...]`` samples the node under load instead (see
:mod:`bench.profile`).

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

from bench import lan, node, relay
from bench.procs import BenchError

# Each suite module has Settings (with rounds, duration_s, node_log_level), FULL, QUICK and
# run(settings, progress) -> report.
MODULES: dict[str, ModuleType] = {"node": node, "relay": relay, "lan": lan}
SUITES = (*MODULES, "all")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "suite",
        choices=SUITES,
        help="node: one node against its engine alone; relay: a peer reached by relay against "
        "the local route; lan: a LAN peer over veth against the local route (needs root); "
        "all: every suite (or 'profile': sample the node under load)",
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
    return settings


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind through every ``finally`` so the children are killed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    if argv[:1] == ["profile"]:
        from bench import profile

        return profile.main(argv[1:])
    args = parser().parse_args(argv)
    names = list(MODULES) if args.suite == "all" else [args.suite]
    status = 0
    results: dict[str, Any] = {}
    for name in names:
        try:
            result: dict[str, Any] = MODULES[name].run(_settings(args, MODULES[name]), _progress)
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
    return status


if __name__ == "__main__":
    sys.exit(main())
