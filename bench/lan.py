"""``python3 -m bench lan``: a request forwarded to a LAN peer against the same request served
locally, over a veth link between two network namespaces (needs root and iproute2).

Two hosts of a :class:`tests.netns.Lan` (each a namespace with one veth end on
a bridge in a third): A runs the fake engine on its own loopback and node A
fronting it; B runs node B with no engine. Both nodes have the same cluster
token (``quorum token new``) and mDNS on, so B finds A over multicast and
forwards to it over mutual TLS, as members do. A relay on A's loopback knows the
cluster and one API key, which node A checks keys with; A also answers plain
HTTP from the LAN to a key (``node.allow_plain_lan``). A load generator runs in
each namespace. Once B lists A's model with route ``lan``, every scenario runs
in each round against these targets, the order rotating between rounds:

- ``lan``: from B, at node B (B -> veth in TLS -> A -> engine);
- ``local_from_b``: from B, at node A's LAN address over mutual TLS with a
  member's certificate (``bench.lan_secure``), as node B itself connects
  (veth in TLS -> A -> engine): the local route, reached over the same link;
- ``key_tls_from_b`` / ``key_plain_from_b``: from B, at node A's LAN address
  with the API key, in TLS / in clear: the same request, encrypted or not;
- ``local_in_a``: from A, at node A on A's loopback (A -> engine);
- ``direct_in_a``: from A, at the engine itself on A's loopback.

``lan`` against ``local_from_b`` is what B's hop adds (both cross the veth
once in TLS, from the same load generator); against ``local_in_a``, what a
client on B pays over a client on A; ``key_tls_from_b`` against
``key_plain_from_b``, what encryption adds to one LAN crossing (the issue's
target: at most 0.1 ms p50 at concurrency 1). Every process runs through ``ip netns exec``
(same PID, so ``/proc`` readers work); the benchmark's own HTTP checks run in
a thread that joined the namespace. The namespaces are deleted at the end,
whatever happened (unless the benchmark itself is SIGKILLed).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from bench import report
from bench.engine import MODEL
from bench.lan_secure import member_tls, start_relay
from bench.node import machine_info, measure, progress_line, start_engine
from bench.procs import (
    BENCH_ROOT,
    BenchError,
    Child,
    Children,
    child_env,
    fetch,
    http_status,
    loads_library,
    poll,
    rss_mib,
    wait_http_ok,
)
from bench.relay import ENGINE_CONCURRENCY
from bench.stats import rounded

if TYPE_CHECKING:
    from tests.netns import Lan

T = TypeVar("T")
Progress = Callable[[str], None]
NODE_PORT = 32768  # each namespace has its own ports: the default one, as a user runs it
SUBNET = "10.219.0"
_CLONE_NEWNET = 0x40000000
ADDED_P50_LIMIT_MS = 1.0  # the target for the LAN hop
TLS_ADDED_P50_LIMIT_MS = 0.1  # what encryption may add to a LAN crossing (issue 15)


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int = 7
    warmup_s: float = 0.2
    duration_s: float = 1.0
    stream_tokens: int = 1024
    node_log_level: str = "info"
    start_timeout_s: float = 60.0
    discovery_timeout_s: float = 30.0


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
SIDES = ("lan", "local_from_b", "key_tls_from_b", "key_plain_from_b", "local_in_a", "direct_in_a")


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread that joined network namespace ``netns``: the sockets it
    opens live there. Only that thread moves; it ends with ``fn``."""
    out: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


def new_token() -> str:
    args = [sys.executable, "-m", "quorum.cli", "token", "new"]
    done = subprocess.run(
        args, cwd=BENCH_ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        raise BenchError(f"quorum token new failed: {done.stderr.strip()}")
    return token


def start_node(
    kids: Children,
    tmp: Path,
    netns: str,
    name: str,
    token: str,
    services: list[dict[str, Any]],
    settings: Settings,
    relay_url: str | None = None,
) -> Child:
    config = tmp / f"{name}.yaml"
    # One load generator in B holds a connection per worker for each of its sides (3 x 64)
    # besides node B's own: lift the per-address cap so that none of them is refused.
    section: dict[str, Any] = {"port": NODE_PORT, "data_dir": str(tmp / f"{name}-data")}
    section["max_connections_per_address"] = 1024
    body: dict[str, Any] = {
        "node": section,
        "autodetect": {"enabled": False},
        "embedded": {"mode": "off"},
        "services": services,
    }
    if relay_url is not None:  # to check API keys with; plain HTTP from the LAN to a key
        body["relay"] = {"url": relay_url}
        body["node"]["allow_plain_lan"] = True
    config.write_text(f"# python3 -m bench lan: node {name}\n" + yaml.safe_dump(body))
    args = ["ip", "netns", "exec", netns, sys.executable, "-m", "quorum.cli", "up"]
    args += ["--config", str(config), "--name", name, "--token", token]
    args += ["--log-level", settings.node_log_level]
    node = kids.start(name, args, log=tmp / f"{name}.log", pipes=False)
    url = f"http://127.0.0.1:{NODE_PORT}/healthz"
    wait_http_ok(
        node,
        url,
        settings.start_timeout_s,
        status=lambda u, t: in_netns(netns, lambda: http_status(u, t)),
    )
    return node


def _status_in(netns: str) -> Callable[[str, float], int | None]:
    return lambda url, t: in_netns(netns, lambda: http_status(url, t))


def lan_routes(netns: str) -> dict[str, list[str]] | None:
    """Node B's ``/v1/models``: each model's holders' routes; ``None`` until the engine's
    model has a holder reached over the LAN."""
    url = f"http://127.0.0.1:{NODE_PORT}/v1/models"
    status, _, body = in_netns(netns, lambda: fetch(url))
    if status != 200:
        return None
    routes = {
        m["id"]: [h["route"] for h in m.get("quorum", {}).get("holders", [])]
        for m in json.loads(body).get("data", [])
    }
    return routes if "lan" in routes.get(MODEL, []) else None


def route_of(netns: str, address: str, token: str | None) -> str | None:
    """``X-Quorum-Route`` of one chat answered by the node at ``address``, asked from ``netns``."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    url = f"http://{address}:{NODE_PORT}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, got, text = in_netns(netns, lambda: fetch(url, body, headers=headers))
    if status != 200:
        raise BenchError(f"a chat to {address} from {netns} answered {status}: {text[:300]!r}")
    return got.get("X-Quorum-Route")


def start_load(kids: Children, netns: str, name: str) -> tuple[Child, bool]:
    load = kids.start(
        name, ["ip", "netns", "exec", netns, sys.executable, "-m", "bench.load", "--serve"]
    )
    return load, bool(json.loads(load.read_line(15))["uvloop"])


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        report.below(
            "lan_tls_added_p50_c1",
            f"encryption adds < {TLS_ADDED_P50_LIMIT_MS:g} ms p50 to a LAN crossing (the same "
            "request to node A with an API key, TLS against plain HTTP), at concurrency 1",
            scenarios["chat_c1"]["key_tls_from_b_vs_key_plain_from_b"]["added_p50_ms"],
            TLS_ADDED_P50_LIMIT_MS,
            "ms",
        )
    ]
    for name in ("chat_c1", "chat_c16"):
        conc = name.split("_c")[1]
        sc = scenarios[name]
        out.append(
            report.below(
                f"lan_added_p50_c{conc}",
                f"LAN hop adds < {ADDED_P50_LIMIT_MS:g} ms p50 over the local route reached "
                f"from B, at concurrency {conc}",
                sc["added_p50_ms"],
                ADDED_P50_LIMIT_MS,
                "ms",
            )
        )
        out.append(
            report.below(
                f"lan_added_p50_c{conc}_vs_local_in_a",
                f"a client on B pays < {ADDED_P50_LIMIT_MS:g} ms p50 more than a client on A, "
                f"at concurrency {conc}",
                sc["lan_vs_local_in_a"]["added_p50_ms"],
                ADDED_P50_LIMIT_MS,
                "ms",
            )
        )
    return out


def _lan() -> Lan:
    """``tests.netns.Lan`` (imported late: it needs pytest, which ``bench node`` does not)."""
    try:
        from tests.netns import Lan, netns_unavailable
    except ImportError as exc:
        raise BenchError(f"the lan suite needs tests/netns.py and pytest: {exc}") from None
    reason = "the 'ip' command (iproute2) is missing" if shutil.which("ip") is None else None
    reason = reason or netns_unavailable()
    if reason is not None:
        raise BenchError(f"the lan suite needs network namespaces: {reason}")
    return Lan(2, subnet=SUBNET)


def run(settings: Settings, progress: Progress) -> dict[str, Any]:
    """The whole LAN benchmark; the report as a JSON-ready dict."""
    began = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {side: [] for side in SIDES} for s in SCENARIOS
    }
    token = new_token()
    with (
        tempfile.TemporaryDirectory(prefix="quorum-bench-lan-") as tmpdir,
        _lan() as lan,
        Children() as kids,
    ):
        tmp = Path(tmpdir)
        host_a, host_b = lan.hosts
        ns_a, ns_b = host_a.netns, host_b.netns
        progress(f"namespaces {ns_a} ({host_a.address}) and {ns_b} ({host_b.address})")
        engine, engine_port, engine_uvloop = start_engine(kids, tmp, ["ip", "netns", "exec", ns_a])
        service = {
            "name": "fake",
            "engine": "openai",
            "url": f"http://127.0.0.1:{engine_port}/v1",
            "models": [{"id": MODEL}],
            "max_concurrency": ENGINE_CONCURRENCY,
        }
        _, relay_url, key = start_relay(
            kids, tmp, ns_a, token, settings.start_timeout_s, _status_in(ns_a)
        )
        node_a = start_node(kids, tmp, ns_a, "bench-a", token, [service], settings, relay_url)
        node_b = start_node(kids, tmp, ns_b, "bench-b", token, [], settings)
        t0 = time.perf_counter()
        routes = poll(
            "LAN route to node A's model at node B",
            lambda: lan_routes(ns_b),
            settings.discovery_timeout_s,
        )
        found_s = time.perf_counter() - t0
        progress(f"node B reaches A's model over the LAN after {found_s:.1f} s")
        checked = {
            "lan": route_of(ns_b, "127.0.0.1", None),
            "key_plain_from_b": route_of(ns_b, host_a.address, key),
            "local_in_a": route_of(ns_a, "127.0.0.1", None),
        }
        if checked != {"lan": "lan", "key_plain_from_b": "local", "local_in_a": "local"}:
            raise BenchError(f"unexpected X-Quorum-Route answers: {checked}")
        time.sleep(0.2)
        idle = {"node_a": rss_mib(node_a.pid), "node_b": rss_mib(node_b.pid)}
        load_a, load_a_uvloop = start_load(kids, ns_a, "load-a")
        load_b, load_b_uvloop = start_load(kids, ns_b, "load-b")
        loads = {side: load_a if side.endswith("_in_a") else load_b for side in SIDES}
        across = f"http://{host_a.address}:{NODE_PORT}"
        urls = {
            "lan": f"http://127.0.0.1:{NODE_PORT}",
            "local_from_b": across,
            "key_tls_from_b": across,
            "key_plain_from_b": across,
            "local_in_a": f"http://127.0.0.1:{NODE_PORT}",
            "direct_in_a": f"http://127.0.0.1:{engine_port}",
        }
        member = member_tls(tmp, token, "bench-load-b")
        tls = {"local_from_b": member, "key_tls_from_b": {"ca": member["ca"]}}
        keys = {"key_tls_from_b": key, "key_plain_from_b": key}
        pids = {
            "node_a": node_a.pid,
            "node_b": node_b.pid,
            "engine": engine.pid,
            "load_a": load_a.pid,
            "load_b": load_b.pid,
        }
        for round_no in range(1, settings.rounds + 1):
            shift = (round_no - 1) % len(SIDES)
            order = SIDES[shift:] + SIDES[:shift]
            for scenario in SCENARIOS:
                for side in order:
                    job: dict[str, Any] = {
                        "target": urls[side],
                        "kind": scenario.kind,
                        "concurrency": scenario.concurrency,
                        "max_tokens": settings.stream_tokens if scenario.kind == "stream" else 16,
                        "timeout_s": 30.0,
                        "token": keys.get(side),
                        "tls": tls.get(side),
                    }
                    result = measure(loads[side], pids, job, settings.warmup_s, settings.duration_s)
                    raw[scenario.name][side].append(result)
                    progress(progress_line(round_no, scenario.name, scenario.kind, side, result))
        processes = {
            name: {
                "idle_rss_mib": rounded(idle[name], 1),
                "rss_after_load_mib": rounded(rss_mib(child.pid), 1),
                "peak_rss_mib": rounded(rss_mib(child.pid, "VmHWM"), 1),
            }
            for name, child in (("node_a", node_a), ("node_b", node_b))
        }
        uvloop = {
            "node_a": loads_library(node_a.pid, "/uvloop/loop."),
            "node_b": loads_library(node_b.pid, "/uvloop/loop."),
            "engine": engine_uvloop,
            "load_a": load_a_uvloop,
            "load_b": load_b_uvloop,
        }
        link = {"subnet": f"{SUBNET}.0/24", "a": host_a.address, "b": host_b.address}
    scenarios: dict[str, Any] = {}
    for s in SCENARIOS:
        info: dict[str, Any] = {"concurrency": s.concurrency}
        if s.kind == "stream":
            info["chunks_per_stream"] = settings.stream_tokens
        scenarios[s.name] = report.compare(
            s.kind,
            raw[s.name],
            "local_from_b",
            "lan",
            also=(
                ("key_plain_from_b", "key_tls_from_b"),
                ("local_in_a", "local_from_b"),
                ("local_in_a", "lan"),
                ("local_in_a", "local_from_b"),
                ("direct_in_a", "lan"),
                ("direct_in_a", "local_in_a"),
            ),
            info=info,
        )
    errors = sum(sc[side]["errors"] for sc in scenarios.values() for side in SIDES)
    return {
        "bench": "lan",
        "schema": 2,
        "started_at": started_at,
        "elapsed_s": rounded(time.perf_counter() - began, 1),
        "settings": asdict(settings),
        "machine": machine_info(uvloop),
        "paths": {
            "lan": "load in B -> node B -> veth (mutual TLS) -> node A -> engine",
            "local_from_b": "load in B -> veth (mutual TLS, a member's certificate) -> node A "
            "-> engine",
            "key_tls_from_b": "load in B -> veth (TLS, API key) -> node A -> engine",
            "key_plain_from_b": "load in B -> veth (plain HTTP, API key) -> node A -> engine",
            "local_in_a": "load in A -> node A -> engine",
            "direct_in_a": "load in A -> engine",
        },
        "link": link,
        "discovery_s": rounded(found_s, 2),
        "routes_seen": {"x_quorum_route": checked, "models_at_b": routes},
        "processes": processes,
        "scenarios": scenarios,
        "targets": targets(scenarios),
        "request_errors": errors,
    }
