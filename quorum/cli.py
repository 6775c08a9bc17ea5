"""``quorum`` commands: ``up`` runs a node; ``status``, ``models``, ``peers`` ask it.

``tray`` runs the node with a tray icon (:mod:`quorum.tray`), ``autostart`` starts
the tray at login (:mod:`quorum.autostart`), ``doctor`` checks this machine
(:mod:`quorum.doctor`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import secrets
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from quorum import __version__
from quorum.config.load import load_config, set_path
from quorum.config.models import DEFAULT_PORT, Config
from quorum.errors import QuorumError
from quorum.memory import return_large_blocks

log = logging.getLogger("quorum.cli")


class RedactSecrets(logging.Filter):
    """Blanks credentials in any record a library formats with headers (defence in depth:
    our own code never logs them, but a library's debug lines may show request heads)."""

    _PATTERN = re.compile(
        r"(?i)(authorization|x-api-key|x-quorum-proof|cookie)(['\"]?\s*[:=,]\s*['\"]?)"
        r"([^'\"\r\n,)]+)"
    )
    _TOKENS = re.compile(r"\b(qc|qk)_[A-Za-z0-9_\-]{8,}")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._TOKENS.sub(r"\1_[redacted]", self._PATTERN.sub(r"\1\2[redacted]", message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    # aiohttp's access log is replaced by our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # websockets logs every handshake head at DEBUG, Authorization included: the filter
    # above blanks it (tests/relay/test_node_log_secrets.py reads such a log).


def _service_flag(value: str) -> dict[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=URL (http://...), got {value!r}")
    return {"name": name, "url": url}


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys that ``quorum up``'s flags set."""
    out: dict[str, Any] = {}
    for flag, path in (
        ("port", ("node", "port")),
        ("bind", ("node", "bind")),
        ("name", ("node", "name")),
        ("relay", ("relay", "url")),
        ("token", ("cluster", "token")),
        ("data_dir", ("node", "data_dir")),
        ("ollama_port", ("node", "ollama_port")),
        ("log_level", ("log_level",)),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            set_path(out, path, value)
    if getattr(args, "no_mdns", False):
        set_path(out, ("discovery", "enabled"), False)
    if getattr(args, "embedded", None):
        set_path(out, ("embedded", "mode"), args.embedded)
    if getattr(args, "service", None):
        out["services"] = args.service
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quorum",
        description="One OpenAI-compatible endpoint for every model on every machine you run.",
    )
    p.add_argument("--version", action="version", version=f"quorum {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    for name, text in (
        ("up", "run a node in the foreground"),
        ("tray", "run a node with a tray icon (needs a desktop: pip install 'quorum[tray]')"),
    ):
        node_cmd = sub.add_parser(name, help=text)
        node_cmd.add_argument("--config", help="config file (default: the user config dir)")
        node_cmd.add_argument("--port", type=int, help=f"port to serve on (default {DEFAULT_PORT})")
        node_cmd.add_argument(
            "--bind", help="address to listen on (default 127.0.0.1; 0.0.0.0 with a cluster token)"
        )
        node_cmd.add_argument("--name", help="this node's name (default: the host name)")
        node_cmd.add_argument("--relay", help="relay URL, wss://host/tunnel")
        node_cmd.add_argument("--token", help="cluster join token")
        node_cmd.add_argument("--no-mdns", action="store_true", help="do not use LAN discovery")
        node_cmd.add_argument(
            "--ollama-port",
            type=int,
            help="also answer on Ollama's port (11434) when no Ollama is there",
        )
        node_cmd.add_argument(
            "--service",
            action="append",
            type=_service_flag,
            metavar="NAME=URL",
            help="an engine to front (repeatable); replaces the config's services",
        )
        node_cmd.add_argument(
            "--embedded", choices=["auto", "on", "off"], help="embedded engine mode"
        )
        node_cmd.add_argument(
            "--data-dir", help="where the node keeps its id and the embedded model"
        )
        node_cmd.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    token = sub.add_parser("token", help="cluster tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    token_sub.add_parser("new", help="print a new cluster join token")

    autostart = sub.add_parser("autostart", help="start the tray at login: on, off or status")
    autostart.add_argument("action", choices=["on", "off", "status"])
    autostart.add_argument("--config", help="config file the tray should use")

    doctor = sub.add_parser("doctor", help="check engines, LAN discovery, port, relay and clock")
    doctor.add_argument("--config", help="config file (default: the user config dir)")
    doctor.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (
        ("status", "show the running node's status"),
        ("models", "list the models the running node can route to"),
        ("peers", "list the running node's peers"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true", help="print JSON")
        cmd.add_argument("--port", type=int, help="the node's port")
        cmd.add_argument("--config", help="config file (to find the port)")
    return p


def run_node(config: Config) -> int:
    from quorum.app import Node  # imported here: `quorum status` should start fast

    return_large_blocks()  # memory returns to its baseline after large request bodies
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main() -> None:
        node = Node(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await node.start()
        # Everything allocated so far lives as long as the node: keep the collector off it.
        gc.freeze()
        try:
            await stop.wait()
            log.info("stopping")
        finally:
            await node.stop()

    asyncio.run(main())
    return 0


def _port(args: argparse.Namespace) -> int:
    if args.port:
        return int(args.port)
    return load_config(args.config).node.port


def fetch_status(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/quorum/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
            return data
    except (urllib.error.URLError, OSError) as exc:
        raise QuorumError(
            f"no node answers on 127.0.0.1:{port} ({getattr(exc, 'reason', exc)}); "
            "start one with 'quorum up'"
        ) from None


def print_status(data: dict[str, Any]) -> None:
    node = data["node"]
    print(f"node      {node['name']}  (quorum {node['version']}, {node['url']})")
    relay = data["relay"]
    relay_text = (
        "none"
        if not relay["url"]
        else (f"{relay['url']} ({'connected' if relay['connected'] else 'not connected'})")
    )
    cluster = data["cluster"]
    joined = f"joined ({cluster['fingerprint']})" if cluster["joined"] else "none (local only)"
    print(f"cluster   {joined}")
    identity = node.get("identity")
    if identity:
        print(f"identity  {identity['short']}  (TLS key, SHA-256 {identity['fingerprint']})")
    print(f"relay     {relay_text}")
    print(f"services  {len(data['services'])}")
    for s in data["services"]:
        state = "up" if s["up"] else f"DOWN ({s['error']})"
        print(f"  {s['name']:<16} {s['engine']:<9} {s['type']:<9} {s['url']}  {state}")
    print(f"models    {len(data['models'])}")
    for q in data.get("queues", ()):
        wait = q["estimated_wait_s"]
        print(f"  {q['model']:<24} {q['depth']} waiting, about {wait:.1f} s to wait")
    print(f"peers     {len(data['peers'])}")


def print_models(data: dict[str, Any]) -> None:
    if not data["models"]:
        print("no models: start an engine (Ollama, LM Studio, ...) or add a service")
        return
    width = max(len(m["id"]) for m in data["models"])
    for m in data["models"]:
        holders = ", ".join(f"{h['node']} ({h['route']})" for h in m["quorum"]["holders"])
        print(f"{m['id']:<{width}}  {m['quorum']['type']:<9}  {holders}")


def print_peers(data: dict[str, Any]) -> None:
    if not data["peers"]:
        print("no peers (LAN peers appear when nodes share a cluster token: quorum token new)")
        return
    for p in data["peers"]:
        age = p.get("last_answer_age_s")
        fresh = "never answered" if age is None else f"answered {age:.0f} s ago"
        state = "online" if p["online"] else "offline"
        where = ",".join(p["addresses"]) + f":{p['port']}"
        print(f"{p['name']:<20} lan  {where:<24} {state:<8} {fresh}  {len(p['models'])} model(s)")


def new_token() -> str:
    """A cluster join token: 256 random bits, URL-safe, prefixed so it is recognisable."""
    return "qc_" + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    try:
        if args.command == "token":
            print(new_token())
            return 0
        if args.command in ("up", "tray"):
            config = load_config(args.config, overrides=flag_overrides(args))
            setup_logging(os.environ.get("QUORUM_LOG_LEVEL") or config.log_level)
            if getattr(args, "token", None):
                log.warning(
                    "--token puts the cluster token on the command line, where every user of "
                    "this machine can read it (ps); set QUORUM_TOKEN or cluster.token in the "
                    "config file instead"
                )
            if args.command == "tray":
                from quorum.tray.ui import TrayApp  # imported here: it needs pystray

                return TrayApp(config).run()
            return run_node(config)
        if args.command == "autostart":
            from quorum.autostart import cli as autostart

            return autostart(args.action, config=args.config)
        if args.command == "doctor":
            from quorum.doctor import cli as doctor

            return doctor(load_config(args.config), as_json=args.json)
        data = fetch_status(_port(args))
        if args.command == "models":
            data = {"models": data["models"]} if args.json else data
            if not args.json:
                print_models(data)
        elif args.command == "peers":
            data = {"peers": data["peers"]} if args.json else data
            if not args.json:
                print_peers(data)
        elif not args.json:
            print_status(data)
        if args.json:
            json.dump(data, sys.stdout, indent=2)
            print()
        return 0
    except QuorumError as exc:
        print(f"quorum: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
