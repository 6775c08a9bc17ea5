"""``python3 -m bench.relays [--quick]``: what a second relay costs, with relays as processes.

Three ``quorum-relay serve`` processes on 127.0.0.1 sharing a fresh PostgreSQL schema
(``--store``, default the machine's ``test`` database) and a fresh NATS subject prefix
(``--nats``, default 127.0.0.1:4222), as the tests run them. In one run:

- **latency** (``bench.relays_stream``): a small request and answer at concurrency 1
  between fake nodes on real tunnels, B-near to A both on relay 1 (the single-relay
  route) against B-far on relay 2 to A on relay 1 (one hop through NATS); rounds
  alternate; p50 and p99 of each; target: at most 2 ms added at p50;
- **throughput**: one large answer in 64 KiB chunks, chunks/s across two relays against
  one; target: at least 70 % kept; with each process's CPU time per chunk (relays,
  this process's fake nodes, NATS), since on a machine of few cores the rates follow
  the sums of those;
- **memory**: ``idle_nodes`` fake nodes (``bench.tunnels``: real WebSocket tunnels that
  say HELLO and their presence, one process per relay) in clusters of ``cluster_size``
  spread over the three relays, so every relay holds its own tunnels and the other
  relays' nodes in its mesh directory; the relays' resident memory before and after,
  per node (target: under 50 KiB);
- **presence**: every idle node heartbeats once; the relays' CPU time for that round
  (less what they spend idle over as long), per update, and what 30 s heartbeats of
  all of them would take of one core. Each update is one NATS message and reaches the
  cluster's other nodes, here and through the other relays.

The relays, NATS, PostgreSQL and this process share the machine's cores: numbers are
what this machine gives, reported, never asserted. Exit 1 if something fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench.node import free_port, machine_info
from bench.procs import (
    BenchError,
    Child,
    Children,
    cpu_seconds,
    fetch,
    loads_library,
    poll,
    rss_mib,
    wait_http_ok,
)
from bench.relay_memory import raise_file_limit
from bench.relays_stream import measure
from bench.stats import rounded

Progress = Callable[[str], None]
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
NATS = "nats://127.0.0.1:4222"
MODEL = "llama3.1:8b"
HEARTBEAT_S = 30.0  # a node's presence, DESIGN.md
FILES = 16384


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int = 10
    requests: int = 200  # per round and route
    stream_chunks: int = 1024  # 64 MiB
    stream_repeats: int = 3
    idle_nodes: int = 10_000
    cluster_size: int = 10
    idle_window_s: float = 3.0


FULL = Settings()
QUICK = Settings(rounds=3, requests=100, stream_chunks=256, stream_repeats=3, idle_nodes=1500)


@contextlib.contextmanager
def fresh_schema(server: str) -> Iterator[str]:
    """The URL of an empty schema of the bench's own, dropped at the end."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {server.split('@')[-1]}: {exc}") from None
    try:
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def make_clusters(store_url: str, count: int) -> list[str]:
    """``count`` clusters in the shared store; their join tokens."""
    from relay.pg_store import PostgresStore

    store = PostgresStore(store_url)
    try:
        now = time.time()
        return [store.create_cluster(f"bench-{i}", now=now)[1] for i in range(count)]
    finally:
        store.close()


def _settled_rss(pid: int) -> float:
    time.sleep(1.0)  # what the last step freed is given back, what it holds stays
    value = rss_mib(pid)
    if value is None:
        raise BenchError(f"cannot read the memory of process {pid}")
    return value


def _metric(port: int, name: str) -> float:
    _, _, body = fetch(f"http://127.0.0.1:{port}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise BenchError(f"no {name} in relay {port}'s /metrics")


def _command(child: Child, cmds: list[dict[str, Any]], timeout_s: float = 120) -> list[Any]:
    """Send ``cmds`` to a ``bench.tunnels`` process at once; its answers, in order."""
    for cmd in cmds:
        child.write_line(json.dumps(cmd))
    answers = [json.loads(child.read_line(timeout_s)) for _ in cmds]
    for answer in answers:
        if "error" in answer:
            raise BenchError(f"bench.tunnels: {answer['error']}")
    return answers


def idle_nodes(
    kids: Children,
    relays: list[Child],
    ports: list[int],
    tokens: list[str],
    settings: Settings,
    progress: Progress,
) -> dict[str, Any]:
    """Idle nodes over the three relays: the relays' memory per node, and a heartbeat round."""
    tunnels = []
    for n, port in enumerate(ports):
        url = f"ws://127.0.0.1:{port}/tunnel"
        tunnels.append(
            kids.start(f"tunnels-{n + 1}", [sys.executable, "-m", "bench.tunnels", "--url", url])
        )
    for child in tunnels:
        child.read_line(15)
    # A cluster's nodes go round the relays: each relay holds some and hears of the rest.
    plan: list[list[dict[str, Any]]] = [[], [], []]
    for c, token in enumerate(tokens):
        for r in range(3):
            count = len(range(r, settings.cluster_size, 3))
            if count:
                group = {"group": f"c{c}-r{r}", "count": count, "token": token}
                plan[(c + r) % 3].append({"op": "connect", **group, "models": [MODEL]})
    total = sum(cmd["count"] for cmds in plan for cmd in cmds)
    warm, rest = [cmds[:1] for cmds in plan], [cmds[1:] for cmds in plan]
    for child, cmds in zip(tunnels, warm, strict=True):  # what a first one costs, once
        _command(child, cmds)
    warmed = sum(cmd["count"] for cmds in warm for cmd in cmds)
    poll("warm nodes announced", lambda: _mesh_settled(ports, warmed), 30)
    before = [_settled_rss(relay.pid) for relay in relays]

    progress(f"memory: {total - warmed} idle nodes in clusters of {settings.cluster_size}")
    started = time.perf_counter()
    opened = [_command(child, cmds, 300) for child, cmds in zip(tunnels, rest, strict=True)]
    errors = sum(a["errors"] for answers in opened for a in answers)
    poll("idle nodes announced", lambda: _mesh_settled(ports, total), 120, 0.5)
    connect_s = time.perf_counter() - started
    after = [_settled_rss(relay.pid) for relay in relays]
    added_mib = sum(after) - sum(before)
    per_node = added_mib * 1024 / (total - warmed)
    progress(f"memory: {per_node:.1f} KiB per idle node over the three relays")

    progress("presence: one heartbeat from every idle node")
    cpu = [cpu_seconds(relay.pid) or 0.0 for relay in relays]
    time.sleep(settings.idle_window_s)
    idle_rate = (sum(cpu_seconds(r.pid) or 0.0 for r in relays) - sum(cpu)) / (
        settings.idle_window_s
    )
    announced = sum(_metric(port, "quorum_relay_mesh_announcements") for port in ports)
    cpu0, t0 = sum(cpu_seconds(r.pid) or 0.0 for r in relays), time.perf_counter()
    beats = [
        _command(child, [{"op": "beat", "group": cmd["group"]} for cmd in cmds], 300)
        for child, cmds in zip(tunnels, plan, strict=True)
    ]
    sent = sum(a["sent"] for answers in beats for a in answers)

    def all_announced() -> bool | None:
        now = sum(_metric(port, "quorum_relay_mesh_announcements") for port in ports)
        return True if now - announced >= sent else None

    poll("the heartbeats announced", all_announced, 300, 0.2)
    time.sleep(1.0)  # the other relays tell their nodes of what they heard
    window = time.perf_counter() - t0
    spent = sum(cpu_seconds(r.pid) or 0.0 for r in relays) - cpu0 - idle_rate * window
    per_update = max(spent, 0.0) / sent
    for child in tunnels:
        kids.stop(child, grace_s=0)
    return {
        "memory": {
            "idle_nodes": total - warmed,
            "cluster_size": settings.cluster_size,
            "connect_errors": errors,
            "connect_and_announce_s": round(connect_s, 1),
            "rss_before_mib": [rounded(v, 1) for v in before],
            "rss_after_mib": [rounded(v, 1) for v in after],
            "kib_per_idle_node": round(per_node, 2),
            "target_kib": 50.0,
            "met": per_node < 50.0,
            "note": "the three relays' resident memory added, over the nodes: each node's "
            "tunnel at its relay and its entry in the other two relays' directories",
        },
        "presence": {
            "updates": sent,
            "nats_messages_per_update": 1,
            "nodes_told_per_update": settings.cluster_size - 1,
            "relay_cpu_ms_idle_per_s": round(idle_rate * 1000, 2),
            "relay_cpu_us_per_update": round(per_update * 1e6, 1),
            "updates_per_cpu_second": round(1 / per_update) if per_update else None,
            "core_share_for_all_every_30s": round(total / HEARTBEAT_S * per_update, 4),
        },
    }


def _nats_pid(url: str) -> dict[str, int]:
    """The local nats-server's process, when NATS runs on this machine (for its CPU time):
    the one listening on the URL's port (several may run: the machine's and one of a test's
    own), else the first found."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return {}
    sockets = _listening(parts.port or 4222)
    first = None
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() != "nats-server":
                    continue
                first = first or int(proc.name)
                if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                    return {"nats": int(proc.name)}
    return {} if first is None else {"nats": first}


def _listening(port: int) -> set[str]:
    """The sockets (as ``/proc/PID/fd`` links name them) listening on TCP ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{fields[9]}]")
    return found


def _mesh_settled(ports: list[int], total: int) -> bool | None:
    """Every node registered at its relay and known to the others' directories."""
    here = [int(json.loads(fetch(f"http://127.0.0.1:{p}/healthz")[2])["nodes"]) for p in ports]
    if sum(here) < total:
        return None
    for port, mine in zip(ports, here, strict=True):
        if _metric(port, "quorum_relay_mesh_nodes") < total - mine:
            return None
    return True


def run(settings: Settings, nats: str, postgres: str, progress: Progress) -> dict[str, Any]:
    raise_file_limit(FILES)
    with (
        tempfile.TemporaryDirectory(prefix="bench-relays-") as tmp,
        fresh_schema(postgres) as store,
        Children() as kids,  # stopped first: the relays leave the schema before it goes
    ):
        clusters = -(-settings.idle_nodes // settings.cluster_size)
        progress(f"store: {clusters + 1} clusters in a fresh schema")
        tokens = make_clusters(store, clusters + 1)
        prefix = f"bench{uuid.uuid4().hex[:10]}"
        relays, ports = [], []
        for n in range(3):
            port = free_port()
            data = Path(tmp) / f"relay{n + 1}"
            args = [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1"]
            args += ["--port", str(port), "--data", str(data), "--store", store]
            args += ["--nats", nats, "--nats-prefix", prefix, "--log-level", "warning"]
            data.mkdir()
            log = Path(tmp) / f"relay{n + 1}.log"
            relay = kids.start(f"relay-{n + 1}", args, log=log, pipes=False)
            wait_http_ok(relay, f"http://127.0.0.1:{port}/healthz", 30)
            relays.append(relay)
            ports.append(port)
        urls = [f"ws://127.0.0.1:{port}/tunnel" for port in ports]
        pids = {f"relay{n + 1}": relay.pid for n, relay in enumerate(relays)}
        pids["bench"] = os.getpid()
        pids.update(_nats_pid(nats))

        def cpu() -> dict[str, float]:
            return {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}

        streams = asyncio.run(
            measure(
                urls,
                tokens[0],
                rounds=settings.rounds,
                requests=settings.requests,
                stream_chunks=settings.stream_chunks,
                stream_repeats=settings.stream_repeats,
                progress=progress,
                cpu=cpu,
            )
        )
        idle = idle_nodes(kids, relays, ports, tokens[1:], settings, progress)
        uvloop = {
            f"relay{n + 1}": loads_library(relay.pid, "/uvloop/loop.")
            for n, relay in enumerate(relays)
        }
    return {
        "suite": "relays",
        "machine": machine_info(uvloop),
        "settings": asdict(settings),
        "relays": "three processes, PostgreSQL store, NATS mesh",
        **streams,
        **idle,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.relays", description=__doc__.split("\n")[0])
    p.add_argument("--nats", default=NATS)
    p.add_argument("--store", default=POSTGRES, help="a PostgreSQL database (a schema is made)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about 30 s)")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = run(QUICK if args.quick else FULL, args.nats, args.store, progress)
    except BenchError as exc:
        print(f"bench.relays: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
