"""``python3 -m bench.sched_nodes SPEC_JSON``: two Quorum nodes in one process for
``bench scheduling``.

Node A fronts the engines in ``spec["a"]``, node B those in ``spec["b"]``;
neither is told anything about capacity (no engine kind, no
``max_concurrency``). mDNS is off (loopback has no multicast), so the
process does what LAN discovery does: it reads B's ``/quorum/v1/local``
listing (:func:`quorum.server.status.local_models`, the same presence and
health snapshot) and hands A the peer's holders every ``HEARTBEAT_S``, the
presence period. Between heartbeats A learns B's load from the
``X-Quorum-Load`` header of each answer B serves it. Prints one JSON line
with both nodes' URLs once both are ready, then runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from quorum.app import Node
from quorum.cli import new_token
from quorum.config.load import validate
from quorum.fleet import PeerHoldersChanged, Route
from quorum.fleet.remote import peer_holders
from quorum.server.status import local_models

HEARTBEAT_S = 30.0


def _config(name: str, data: Path, services: dict[str, str], token: str) -> Any:
    return validate(
        {
            "node": {"name": name, "port": 0, "data_dir": str(data / name)},
            "cluster": {"token": token},
            "autodetect": {"enabled": False},
            "embedded": {"mode": "off"},
            "discovery": {"enabled": False},
            "log_level": "warning",
            "services": [{"name": n, "url": u} for n, u in services.items()],
        }
    )


async def _ready(node: Node, services: int) -> None:
    # A node announces no readiness event: poll, bounded.
    async with asyncio.timeout(60):
        while not (  # noqa: ASYNC110
            node.ctx.ready and len([h for h in node.ctx.snapshot.local() if h.online]) >= services
        ):
            await asyncio.sleep(0.05)


async def main(spec: dict[str, Any]) -> None:
    data = Path(spec["data"])
    token = new_token()  # one cluster: A reaches B over mutual TLS, as LAN peers do
    a = Node(_config("node-a", data, spec["a"], token))
    b = Node(_config("node-b", data, spec["b"], token))
    await a.start()
    await b.start()
    await _ready(a, len(spec["a"]))
    await _ready(b, len(spec["b"]))

    def heartbeat() -> None:
        url = f"https://127.0.0.1:{b.port}"
        holders = peer_holders(b.ctx.node_id, "node-b", Route.LAN, url, local_models(b.ctx))
        a._on_fleet(PeerHoldersChanged(b.ctx.node_id, holders))

    heartbeat()
    print(json.dumps({"a": a.url, "b": b.url}), flush=True)
    try:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            heartbeat()
    finally:
        await a.stop()
        await b.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
