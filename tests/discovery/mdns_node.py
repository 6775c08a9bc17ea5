"""A discovery-only node for multi-host tests: ``python3 -m tests.discovery.mdns_node``.

Runs :class:`quorum.discovery.Discovery` and prints one JSON object per line
on stdout: ``{"event": "ready", "service": ..., "addresses": [...]}`` once
advertising, then ``found`` / ``updated`` / ``removed`` as peers come and go,
``paused`` / ``resumed`` / ``updated-self`` in answer to commands, and
``closed`` last. Logs go to stderr.

Commands, one per line on stdin: ``pause``, ``resume``, ``models a,b,c``
(publish a new models digest), ``quit``. End of input or SIGTERM also quit.
Exits 0 after a clean close.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from typing import Any

from quorum.discovery import (
    PROTOCOL_VERSION,
    Advert,
    Discovery,
    DiscoveryEvent,
    PeerFound,
    PeerRemoved,
    PeerUpdated,
    cluster_discriminator,
    models_digest,
)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def on_event(event: DiscoveryEvent) -> None:
    if isinstance(event, PeerRemoved):
        emit("removed", node_id=event.node_id, instance=event.instance)
        return
    kind = "found" if isinstance(event, PeerFound) else "updated"
    assert isinstance(event, PeerFound | PeerUpdated)
    emit(kind, addresses=list(event.addresses), **dataclasses.asdict(event.advert))


async def commands(discovery: Discovery, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := (await reader.readline()).decode():
            verb, _, arg = line.strip().partition(" ")
            if verb == "pause":
                await discovery.pause()
                emit("paused")
            elif verb == "resume":
                await discovery.resume()
                emit("resumed", service=discovery.service_name)
            elif verb == "models":
                digest = models_digest(m for m in arg.split(",") if m)
                await discovery.update(dataclasses.replace(discovery.advert, models_digest=digest))
                emit("updated-self", models_digest=digest)
            elif verb == "quit":
                break
    finally:
        transport.close()
        stop.set()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--port", type=int, default=32768)
    parser.add_argument("--models", default="")
    parser.add_argument("--interface", action="append", dest="interfaces")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("zeroconf").setLevel(logging.INFO)

    advert = Advert(
        version=PROTOCOL_VERSION,
        node_id=args.node_id,
        node_name=args.name,
        port=args.port,
        cluster=cluster_discriminator(args.token),
        identity="0123456789abcdef",
        models_digest=models_digest(m for m in args.models.split(",") if m),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    discovery = Discovery(advert, on_event, interfaces=args.interfaces)
    await discovery.start()
    emit("ready", service=discovery.service_name, addresses=list(discovery.addresses))
    reader = asyncio.create_task(commands(discovery, stop), name="mdns_node.commands")
    try:
        await stop.wait()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await discovery.close()
        left = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        emit("closed", tasks_left=left)


if __name__ == "__main__":
    asyncio.run(main())
