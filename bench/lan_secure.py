"""What ``bench lan`` needs to reach node A from B as the LAN allows it: TLS, as a member or
with an API key.

Nodes answer other machines over TLS only: members with their cluster certificate
(mutual TLS), apps with an API key (TLS, or plain HTTP where the owner turned
``node.allow_plain_lan`` on). The benchmark's load generator in B is given:

- a member's TLS material (``member_tls``): an identity key and the certificate
  the cluster CA derived from the token signs for it, as a node makes its own,
  and the CA to check node A's certificate against;
- an API key of a relay on A's loopback (``start_relay``), which node A asks
  about keys (and caches the answer), so the same request can cross the veth in
  TLS and in clear: the difference is what encryption costs one LAN crossing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.procs import BENCH_ROOT, BenchError, Child, Children, child_env, wait_http_ok

RELAY_PORT = 18443  # in A's namespace, on its loopback


def member_tls(tmp: Path, token: str, node_id: str) -> dict[str, str]:
    """The load generator's ``tls`` job field for a member: CA, certificate and key files."""
    from quorum.secure import ClusterTLS, Identity  # the node's own code makes them

    where = tmp / node_id
    tls = ClusterTLS(Identity.load_or_create(where), node_id, token, where)
    ca = tmp / "cluster-ca.pem"
    ca.write_text(tls.ca.cert_pem)
    return {"ca": str(ca), "cert": str(tls.cert_path), "key": str(tls.key_path)}


def _relay_cli(data: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *args, "--data", str(data)],
        cwd=BENCH_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise BenchError(f"quorum-relay {args[0]} {args[1]} failed: {done.stderr.strip()}")
    return done.stdout


def start_relay(
    kids: Children,
    tmp: Path,
    netns: str,
    token: str,
    timeout_s: float,
    status: Callable[[str, float], int | None],
) -> tuple[Child, str, str]:
    """A relay in ``netns`` that knows the cluster of ``token`` and one API key of it:
    (its process, its tunnel URL there, the key)."""
    data = tmp / "relay"
    _relay_cli(data, "cluster", "create", "bench", "--token", token)
    key = json.loads(_relay_cli(data, "key", "create", "--cluster", "bench", "--json"))["key"]
    args = ["ip", "netns", "exec", netns, sys.executable, "-m", "relay.cli", "serve"]
    args += ["--host", "127.0.0.1", "--port", str(RELAY_PORT), "--data", str(data)]
    relay = kids.start("relay", args, log=tmp / "relay.log", pipes=False)
    wait_http_ok(relay, f"http://127.0.0.1:{RELAY_PORT}/healthz", timeout_s, status=status)
    return relay, f"ws://127.0.0.1:{RELAY_PORT}/tunnel", str(key)
