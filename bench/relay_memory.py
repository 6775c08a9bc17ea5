"""The relay's own processes for ``bench relay``, and its memory per idle tunnel and per
open stream.

:func:`start_relay` makes a cluster with ``relay.cli cluster create`` (its
token is printed once) and serves it on a free port of 127.0.0.1.
:func:`relay_memory` starts a relay of its own, drives :mod:`bench.tunnels`
(fake nodes on real WebSockets) against it and reads its ``VmRSS`` before and
after each step: idle tunnels that said HELLO, then streams held open.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.node import free_port
from bench.procs import (
    BENCH_ROOT,
    BenchError,
    Child,
    Children,
    child_env,
    fetch,
    poll,
    rss_mib,
    wait_http_ok,
)
from bench.stats import rounded

Progress = Callable[[str], None]
FILES_NEEDED = 8192  # the idle tunnels, their relay ends and everything else
WARM_TUNNELS = 8  # opened before the baseline: what the first connection costs once
OPENERS = 4  # the relay lets one connection open 512 streams


def raise_file_limit(needed: int = FILES_NEEDED) -> None:
    """Let this process and its children hold ``needed`` descriptors, as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def create_cluster(data: Path, name: str) -> str:
    """``relay.cli cluster create``; the join token it prints once."""
    args = [sys.executable, "-m", "relay.cli", "cluster", "create", name, "--data", str(data)]
    done = subprocess.run(
        args, cwd=BENCH_ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "token" and value.strip().startswith("qc_"):
            return value.strip()
    raise BenchError(f"cluster create printed no token: {done.stdout}{done.stderr}")


def start_relay(kids: Children, tmp: Path, name: str, cluster: str) -> tuple[Child, int, str]:
    """A relay with one cluster; its port and that cluster's token."""
    data = tmp / f"{name}-data"
    token = create_cluster(data, cluster)
    port = free_port()
    args = [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    relay = kids.start(name, [*args, "--data", str(data)], log=tmp / f"{name}.log", pipes=False)
    wait_http_ok(relay, f"http://127.0.0.1:{port}/healthz", 30)
    return relay, port, token


def memory_of(pid: int) -> dict[str, float | None]:
    return {"rss_mib": rounded(rss_mib(pid), 1), "peak_rss_mib": rounded(rss_mib(pid, "VmHWM"), 1)}


def _settled_rss(pid: int, settle_s: float = 0.5) -> float:
    time.sleep(settle_s)
    value = rss_mib(pid)
    if value is None:
        raise BenchError(f"cannot read the memory of process {pid}")
    return value


def relay_nodes(port: int) -> int:
    _, _, body = fetch(f"http://127.0.0.1:{port}/healthz")
    return int(json.loads(body).get("nodes", -1))


def command(tunnels: Child, cmd: dict[str, Any], timeout_s: float = 90) -> dict[str, Any]:
    tunnels.write_line(json.dumps(cmd))
    result: dict[str, Any] = json.loads(tunnels.read_line(timeout_s))
    if "error" in result:
        raise BenchError(f"bench.tunnels: {result['error']}")
    return result


def relay_memory(
    kids: Children, tmp: Path, idle_connections: int, held_streams: int, progress: Progress
) -> dict[str, Any]:
    """Idle tunnels and held streams on a relay of their own; its memory before and after."""
    relay, port, token = start_relay(kids, tmp, "relay-mem", "bench-mem")
    url = f"ws://127.0.0.1:{port}/tunnel"
    tunnels = kids.start("tunnels", [sys.executable, "-m", "bench.tunnels", "--url", url])
    tunnels.read_line(15)
    # A few first: what the first connection costs once (imports, the store's thread).
    command(tunnels, {"op": "connect", "group": "warm", "count": WARM_TUNNELS, "token": token})
    expected = WARM_TUNNELS

    def registered() -> bool | None:
        return True if relay_nodes(port) == expected else None

    poll("warm-up tunnels registered", registered, 15)
    before = _settled_rss(relay.pid)
    n = idle_connections
    opened = command(tunnels, {"op": "connect", "group": "idle", "count": n, "token": token})
    expected += opened["open"]
    poll(f"{n} idle tunnels registered", registered, 30)
    after = _settled_rss(relay.pid)
    per_conn = (after - before) * 1024 / max(1, opened["open"])
    progress(f"relay: {opened['open']} idle tunnels, {per_conn:.1f} KiB each")
    idle = {
        "count": n,
        "open": opened["open"],
        "errors": opened["errors"],
        "connect_s": opened["elapsed_s"],
        "rss_before_mib": rounded(before, 1),
        "rss_after_mib": rounded(after, 1),
        "kib_per_connection": rounded(per_conn, 2),
    }
    # Streams: a few openers to one fake node that accepts them all.
    command(tunnels, {"op": "connect", "group": "opener", "count": OPENERS, "token": token})
    command(tunnels, {"op": "connect", "group": "holder", "count": 1, "token": token})
    expected += OPENERS + 1
    poll("stream nodes registered", registered, 15)
    before = _settled_rss(relay.pid)
    s = held_streams
    held = command(tunnels, {"op": "streams", "group": "opener", "to": "holder", "count": s})
    after = _settled_rss(relay.pid)
    per_stream = (after - before) * 1024 / max(1, held["held"])
    progress(f"relay: {held['held']} streams held open, {per_stream:.2f} KiB each")
    _, _, metrics = fetch(f"http://127.0.0.1:{port}/metrics")
    piped = [
        float(line.split()[1])
        for line in metrics.decode().splitlines()
        if line.startswith("quorum_relay_streams ")
    ]
    streams = {
        "count": s,
        "held": held["held"],
        "failed": held["failed"],
        "relay_reports_open": piped[0] if piped else None,
        "open_s": held["elapsed_s"],
        "rss_before_mib": rounded(before, 1),
        "rss_after_mib": rounded(after, 1),
        "kib_per_stream": rounded(per_stream, 3),
        "mib_per_1000_streams": rounded(per_stream * 1000 / 1024, 2),
    }
    memory = {"idle_connections": idle, "open_streams": streams, "relay": memory_of(relay.pid)}
    # Killed at once: a graceful relay would wait for the held streams to drain.
    kids.stop(tunnels, grace_s=0)
    kids.stop(relay, grace_s=0)
    return memory


def serving_node_download(port_b: int, pid_a: int, size: int, model: str) -> dict[str, Any]:
    """One download through the relay (client at node B, served by node A's engine), with
    node A's resident memory sampled every few milliseconds: what a large relayed answer
    costs the serving node (bounded by the flow-control windows, not by the answer)."""
    import threading
    import urllib.request

    before = rss_mib(pid_a) or 0.0
    peak = before
    got = 0
    done = threading.Event()

    def fetch_all() -> None:
        nonlocal got
        body = json.dumps({"model": model, "input": "x", "bench_bytes": size}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port_b}/v1/audio/speech",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                while chunk := resp.read(1 << 20):
                    got += len(chunk)
        finally:
            done.set()

    thread = threading.Thread(target=fetch_all, daemon=True)
    thread.start()
    while not done.is_set():
        peak = max(peak, rss_mib(pid_a) or 0.0)
        done.wait(0.005)
    thread.join(5)
    return {
        "bytes": got,
        "idle_rss_mib": rounded(before, 1),
        "peak_rss_mib": rounded(peak, 1),
        "serving_node_mib_above_idle": rounded(peak - before, 1),
    }
