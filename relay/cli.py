"""``quorum-relay``: run the relay, and manage its clusters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from quorum.errors import QuorumError
from relay import systemd
from relay.hub import Hub
from relay.server import build_app, ssl_context
from relay.store import Store

log = logging.getLogger("relay")

DEFAULT_DATA = Path("/var/lib/quorum-relay")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorum-relay", description=__doc__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the relay")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--data", type=Path, default=DEFAULT_DATA, help="state directory")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--drain-timeout", type=float, default=30.0)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    cluster = sub.add_parser("cluster", help="clusters and their join tokens")
    csub = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = csub.add_parser("create", help="create a cluster; prints its id and join token once")
    create.add_argument("name")
    create.add_argument(
        "--token", help="adopt the token a LAN cluster already uses (from 'quorum token new')"
    )
    create.add_argument("--data", type=Path, default=DEFAULT_DATA)
    listing = csub.add_parser("list", help="list clusters")
    listing.add_argument("--data", type=Path, default=DEFAULT_DATA)
    return p


async def serve(args: argparse.Namespace) -> None:
    store = Store(args.data)
    hub = Hub()
    app = build_app(store, hub)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(
        runner, args.host, args.port, ssl_context=ssl_context(args.tls_cert, args.tls_key)
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise QuorumError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(systemd.watchdog(), name="systemd-watchdog")
    log.info("relay listening on %s:%s (data in %s)", args.host, port, args.data)
    systemd.notify("READY=1")
    try:
        await stop.wait()
        log.info("draining: refusing new streams, waiting up to %.0f s", args.drain_timeout)
        systemd.notify("STOPPING=1")
        await hub.drain(args.drain_timeout)
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        await runner.cleanup()
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    try:
        if args.command == "serve":
            logging.basicConfig(
                level=getattr(logging, args.log_level.upper()),
                format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            )
            asyncio.run(serve(args))
            return 0
        store = Store(args.data)
        try:
            if args.action == "create":
                cluster, token = store.create_cluster(args.name, args.token)
                print(f"cluster  {cluster.name}")
                print(f"id       {cluster.id}")
                if args.token:
                    print("token    (adopted: the token the nodes already use)")
                else:
                    print(f"token    {token}")
                    print("         (shown once: give it to each node as cluster.token)")
            else:
                for c in store.clusters():
                    print(f"{c.name}\t{c.id}")
        finally:
            store.close()
        return 0
    except (QuorumError, ValueError) as exc:
        print(f"quorum-relay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
