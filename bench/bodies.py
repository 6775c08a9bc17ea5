"""``python3 -m bench.bodies``: what large request bodies cost in memory, against the engine.

Four uploads of 95 MB at once (the transcription endpoint, multipart, as the SDK sends
them) go, in one run:

- **direct**: straight to the fake engine, which holds each body whole once (the
  baseline: what any server that takes a body costs);
- **local**: to node A, which routes them to that engine;
- **relay**: to node B, which has no engine: B -> relay -> A -> engine.

Each process's resident memory is sampled every few milliseconds; the report gives each
one's peak above its idle, in MiB and as "copies" of the bytes in flight (4 x 95 MB), and
what each holds a few seconds after the uploads (it should be back near idle). The engine
is :mod:`bench.engine`; the nodes and the relay are started as :mod:`bench.relay` starts
them. Prints one JSON report; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.load import upload_request
from bench.node import start_engine
from bench.procs import Children, poll, rss_mib
from bench.relay import STT_MODEL, Settings, engine_services, relay_routes, start_node
from bench.relay_memory import raise_file_limit, start_relay
from bench.stats import rounded

BODY_BYTES = 95_000_000
UPLOADS = 4
SAMPLE_S = 0.005
SETTLE_S = 3.0


def upload(port: int, size: int, results: list[int]) -> None:
    """One transcription upload of ``size`` bytes to ``127.0.0.1:port``; its status."""
    request = upload_request(f"127.0.0.1:{port}", model=STT_MODEL, size=size)
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.sendall(request)
        del request
        head = b""
        while b"\r\n" not in head:
            piece = sock.recv(65536)
            if not piece:
                break
            head += piece
    results.append(int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0)


def scenario(port: int, watched: dict[str, int], size: int) -> dict[str, Any]:
    """``UPLOADS`` uploads at once to ``port``, with the ``watched`` processes sampled."""
    idle = {name: rss_mib(pid) or 0.0 for name, pid in watched.items()}
    peak = dict(idle)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=upload, args=(port, size, statuses), daemon=True)
        for _ in range(UPLOADS)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for name, pid in watched.items():
            peak[name] = max(peak[name], rss_mib(pid) or 0.0)
        time.sleep(SAMPLE_S)
    elapsed = time.perf_counter() - started
    time.sleep(SETTLE_S)
    in_flight_mib = UPLOADS * size / 2**20
    return {
        "statuses": sorted(statuses),
        "elapsed_s": rounded(elapsed, 2),
        "in_flight_mib": rounded(in_flight_mib, 1),
        "processes": {
            name: {
                "idle_mib": rounded(idle[name], 1),
                "peak_above_idle_mib": rounded(peak[name] - idle[name], 1),
                "copies": rounded((peak[name] - idle[name]) / in_flight_mib, 2),
                "after_mib_above_idle": rounded((rss_mib(pid) or 0.0) - idle[name], 1),
            }
            for name, pid in watched.items()
        },
    }


def run(size: int) -> dict[str, Any]:
    raise_file_limit()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="quorum-bench-bodies-") as tmpdir, Children() as kids:
        tmp = Path(tmpdir)
        engine, engine_port, _ = start_engine(kids, tmp)
        relay, relay_port, token = start_relay(kids, tmp, "relay", "bench")
        services = engine_services(engine_port)
        node_a, port_a = start_node(kids, tmp, "node-a", relay_port, token, services, settings)
        node_b, port_b = start_node(kids, tmp, "node-b", relay_port, token, [], settings)
        poll("relay route to node A's models at node B", lambda: relay_routes(port_b), 30)
        pids = {"engine": engine.pid, "node_a": node_a.pid}
        report: dict[str, Any] = {"bench": "bodies", "body_bytes": size, "uploads": UPLOADS}
        print("direct ...", file=sys.stderr)
        report["direct"] = scenario(engine_port, {"engine": engine.pid}, size)
        print("local ...", file=sys.stderr)
        report["local"] = scenario(port_a, pids, size)
        print("relay ...", file=sys.stderr)
        report["relay"] = scenario(port_b, {**pids, "relay": relay.pid, "node_b": node_b.pid}, size)
    baseline = report["direct"]["processes"]["engine"]["copies"]
    report["summary"] = {
        "engine_copies_baseline": baseline,
        **{
            f"{where}_{name}_copies": report[where]["processes"][name]["copies"]
            for where, names in (("local", ("node_a",)), ("relay", ("node_b", "relay", "node_a")))
            for name in names
        },
    }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.bodies", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=BODY_BYTES, help="bytes per upload")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    report = run(args.size)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    failed = any(
        s != 200 for where in ("direct", "local", "relay") for s in report[where]["statuses"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
