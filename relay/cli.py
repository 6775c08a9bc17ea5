"""``quorum-relay``: run the relay, and manage its clusters, API keys, nodes and usage.

Management commands work directly on the store (``--data DIR``, safe while
the relay runs: SQLite WAL; or ``--store postgresql://...``, the store several
relays share) or against a running relay (``--relay URL``, with the admin
token from ``$QUORUM_RELAY_ADMIN_TOKEN`` or ``--admin-token-file``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from quorum.errors import ApiError, QuorumError
from quorum.memory import return_large_blocks
from quorum.netguard import GuardedSite
from relay import signin, systemd, user_cli
from relay.admin import ADMIN_TOKEN_ENV, DEFAULT_GRACE, load_admin_token
from relay.admin_cli import manage
from relay.hub import Hub
from relay.mesh import service as mesh_service
from relay.open_store import STORE_ENV, open_store
from relay.server import build_app, ssl_context
from relay.users_config import CONFIG_ENV, load_config

log = logging.getLogger("relay")

DEFAULT_DATA = Path("/var/lib/quorum-relay")


def _store(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_ENV) or None,
        help=f"postgresql://... for a store several relays share (default: ${STORE_ENV}, "
        "else SQLite in --data)",
    )


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the relay's state directory")
    _store(p)
    p.add_argument("--relay", metavar="URL", help="manage a running relay over its /api instead")
    p.add_argument("--admin-token-file", type=Path, help=f"(with --relay) else ${ADMIN_TOKEN_ENV}")
    p.add_argument("--json", action="store_true", help="print JSON")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorum-relay", description=__doc__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the relay")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--data", type=Path, default=DEFAULT_DATA, help="state directory")
    _store(serve)
    serve.add_argument(
        "--nats",
        metavar="URL",
        default=os.environ.get(mesh_service.NATS_ENV) or None,
        help="nats://... shared with the other relays of the same store (docs/relay.md; "
        f"default: ${mesh_service.NATS_ENV}, else this relay alone)",
    )
    serve.add_argument(
        "--nats-prefix",
        default=mesh_service.DEFAULT_PREFIX,
        help="the NATS subjects' prefix: relays sharing one is one mesh",
    )
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--drain-timeout", type=float, default=30.0)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the /api admin token (default: ${ADMIN_TOKEN_ENV}, else "
        "DATA/admin_token, created on first start)",
    )
    serve.add_argument(
        "--trust-forwarded",
        action="store_true",
        help="behind a reverse proxy: rate-limit by the address it appends to X-Forwarded-For",
    )
    serve.add_argument("--max-body-mb", type=float, default=100.0, help="largest /v1 request body")
    serve.add_argument(
        "--protect-metrics",
        action="store_true",
        help="/metrics needs the admin token (Authorization: Bearer ...), for a relay on the "
        "internet without a reverse proxy guarding it",
    )
    serve.add_argument(
        "--config",
        type=Path,
        help=f"the relay's YAML config: sign-in providers and operators (default ${CONFIG_ENV}; "
        "none: the admin token alone)",
    )

    cluster = sub.add_parser("cluster", help="clusters and their join tokens")
    csub = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = csub.add_parser("create", help="create a cluster; prints its id and join token once")
    create.add_argument("name")
    create.add_argument(
        "--token",
        help="adopt the token a LAN cluster already uses (from 'quorum token new'); '-' reads "
        "it from standard input, out of the process list",
    )
    _target(create)
    _target(csub.add_parser("list", help="list clusters"))
    user_cli.add_cluster_actions(csub, _target)
    rotate = csub.add_parser(
        "rotate",
        help="give a cluster a new join token (printed once); the previous one still works "
        "for --grace, or until --finish",
    )
    rotate.add_argument("cluster")
    rotate.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        help=f"how long nodes may still join with the previous token, e.g. 2h, 7d, 0 "
        f"(default {DEFAULT_GRACE})",
    )
    rotate.add_argument(
        "--token",
        help="the new token, when the LAN already moved to it (from 'quorum token new'; '-' "
        "reads it from standard input); else the relay makes one",
    )
    rotate.add_argument(
        "--finish",
        action="store_true",
        help="no new token: refuse the previous one now (through --relay, its tunnels close "
        "at once; else within 30 s)",
    )
    _target(rotate)

    key = sub.add_parser("key", help="API keys for apps outside the cluster")
    ksub = key.add_subparsers(dest="action", metavar="ACTION", required=True)
    kcreate = ksub.add_parser("create", help="create a key; prints it once")
    kcreate.add_argument("--cluster", required=True)
    kcreate.add_argument("--name", default="", help="a label, e.g. who uses the key")
    kcreate.add_argument("--models", help="comma-separated models the key may use (default: all)")
    kcreate.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: never)")
    _target(kcreate)
    klist = ksub.add_parser("list", help="list keys (prefix, never the key)")
    klist.add_argument("--cluster")
    klist.add_argument("--all", action="store_true", help="include revoked keys")
    _target(klist)
    krevoke = ksub.add_parser("revoke", help="revoke a key (by id or prefix qk_xxxxxxxx)")
    krevoke.add_argument("key")
    _target(krevoke)
    krotate = ksub.add_parser("rotate", help="replace a key: revoke it, print its successor once")
    krotate.add_argument("key")
    krotate.add_argument("--expires", help="lifetime of the new key (default: the old expiry)")
    _target(krotate)

    node = sub.add_parser("node", help="nodes and their presence")
    nsub = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    nlist = nsub.add_parser("list", help="nodes with last heartbeat and online state")
    nlist.add_argument("--cluster")
    _target(nlist)
    nremove = nsub.add_parser(
        "remove", help="refuse a node's key from now on (through --url: its tunnel closes too)"
    )
    nremove.add_argument("--cluster", required=True)
    nremove.add_argument("node_id")
    _target(nremove)

    usage = sub.add_parser("usage", help="usage of a cluster, summed by model, node, key or day")
    usage.add_argument("--cluster", required=True)
    usage.add_argument("--by", default="model", choices=["model", "node", "key", "day"])
    usage.add_argument("--since", help="e.g. 7d, or epoch milliseconds")
    usage.add_argument("--until")
    _target(usage)

    user_cli.add_parsers(sub, _target)
    token = sub.add_parser("admin-token", help="print the admin token (created if absent)")
    token.add_argument("--data", type=Path, default=DEFAULT_DATA)
    return p


async def serve(args: argparse.Namespace) -> None:
    admin_token = load_admin_token(args.data, file=args.admin_token_file, create=True)
    config = load_config(args.config)
    store = open_store(args.data, args.store)
    hub = Hub()
    app = build_app(
        store,
        hub,
        admin_token=admin_token,
        trust_forwarded=args.trust_forwarded,
        max_body=int(args.max_body_mb * 1024 * 1024),
        protect_metrics=args.protect_metrics,
    )
    signin.install(app, config.users)
    try:
        mesh = await mesh_service.join(
            hub, args.nats, args.nats_prefix, name=f"quorum-relay {args.host}:{args.port}"
        )
    except BaseException:
        store.close()
        raise
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, auto_decompress=False)
    await runner.setup()
    # Heads must arrive whole in time and one address holds a bounded number of
    # connections; behind a trusted reverse proxy, every client shares its address.
    site = GuardedSite(
        runner,
        args.host,
        args.port,
        ssl_context=ssl_context(args.tls_cert, args.tls_key),
        per_address=4096 if args.trust_forwarded else 256,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await mesh_service.leave(mesh)
        store.close()
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
        await mesh_service.leave(mesh)
        store.close()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the relay on uvloop where it is installed (it forwards every byte of every relayed
    stream, and asyncio's own loop spent a third more CPU per stream), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


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
            return_large_blocks()  # memory returns to its baseline after large bodies
            run_loop(serve(args))
            return 0
        if args.command == "admin-token":
            print(load_admin_token(args.data, create=True))
            return 0
        if not hasattr(args, "action"):
            args.action = None
        for line in manage(args):
            print(line)
        return 0
    except ApiError as exc:
        print(f"quorum-relay: {exc.message}", file=sys.stderr)
        return 1
    except (QuorumError, ValueError) as exc:
        print(f"quorum-relay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
