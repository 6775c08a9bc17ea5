"""The management commands of ``quorum-relay`` (clusters, API keys, nodes, usage): run one
and return the lines to print.

A command works directly on the store (``--data DIR``, safe while the relay runs: SQLite
WAL; or ``--store postgresql://...``, the store several relays share) or against a running
relay (``--relay URL``, with a personal token from ``$QUORUM_RELAY_TOKEN``, else the admin
token from ``$QUORUM_RELAY_ADMIN_TOKEN`` or ``--admin-token-file``). The users' commands
are ``relay.user_cli``'s; the parser and the server are ``relay.cli``'s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any, Protocol

from quorum.errors import QuorumError
from relay import user_cli
from relay.admin import ADMIN_TOKEN_ENV, DEFAULT_GRACE, AdminOps, load_admin_token
from relay.admin_http import HttpAdmin
from relay.keys import parse_models
from relay.open_store import open_store
from relay.user_cli import USER_TOKEN_ENV

JSON = dict[str, Any]


class Ops(Protocol):
    def clusters(self) -> list[JSON]: ...
    def create_cluster(self, name: str, token: str | None = None) -> JSON: ...
    def rotate_cluster(
        self, cluster: str, grace: object = DEFAULT_GRACE, token: str | None = None
    ) -> JSON: ...
    def finish_rotation(self, cluster: str) -> JSON: ...
    def keys(self, cluster: str | None = None, include_revoked: bool = False) -> list[JSON]: ...
    def create_key(
        self,
        cluster: str | None,
        name: str = "",
        models: tuple[str, ...] | None = None,
        expires: object = None,
    ) -> JSON: ...
    def revoke_key(self, ref: str) -> JSON: ...
    def rotate_key(self, ref: str, expires: object = "keep") -> JSON: ...
    def nodes(self, cluster: str | None = None) -> list[JSON]: ...
    def remove_node(self, cluster: str, node_id: str) -> JSON: ...
    def usage(
        self, cluster: str | None, by: str, since: str | None = None, until: str | None = None
    ) -> JSON: ...


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_key(k: JSON, out: list[str]) -> None:
    models = "all" if k["models"] is None else ", ".join(k["models"])
    if "key" in k:
        out.append(f"key      {k['key']}")
    out += [
        f"id       {k['id']}",
        f"prefix   {k['prefix']}",
        f"cluster  {k['cluster']}",
        f"name     {k['name'] or '-'}",
        f"models   {models}",
        f"expires  {_when(k['expires_at'])}",
    ]
    if "key" in k:
        out.append("         (shown once: the relay keeps only a hash of it)")


def _ops(args: argparse.Namespace) -> tuple[Ops, Any]:
    if args.relay:
        # A user's personal token (qu_...) does what that user may; else the admin token.
        token = os.environ.get(USER_TOKEN_ENV, "").strip()
        token = token or os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        if args.admin_token_file is not None:
            token = load_admin_token(args.data, env={}, file=args.admin_token_file) or ""
        if not token:
            raise QuorumError(f"--relay needs the admin token: set ${ADMIN_TOKEN_ENV}")
        return HttpAdmin(args.relay, token), None
    store = open_store(args.data, args.store)
    return AdminOps(store, time.time), store


def given_token(value: str | None) -> str | None:
    """A ``--token`` value: ``-`` reads it from standard input (first line), out of the
    process list; a token on the command line works, with a warning, since every user of
    the machine can read it there (``ps``)."""
    if value is None:
        return None
    if value == "-":
        token = sys.stdin.readline().strip()
        if not token:
            raise QuorumError("--token -: no token on standard input")
        return token
    print(
        "quorum-relay: --token puts the cluster token on the command line, where every user "
        "of this machine can read it (ps); pass '--token -' and give it on standard input",
        file=sys.stderr,
    )
    return value


def manage(args: argparse.Namespace) -> list[str]:
    """Run one management command; the lines to print."""
    if user_cli.handles(args):
        return user_cli.manage(args)
    if getattr(args, "token", None) is not None:
        args.token = given_token(args.token)
    ops, store = _ops(args)
    try:
        result: Any
        out: list[str] = []
        match args.command, args.action:
            case "cluster", "create":
                result = ops.create_cluster(args.name, args.token)
                out += [f"cluster  {result['name']}", f"id       {result['id']}"]
                if result["token"] is None:
                    out.append("token    (adopted: the token the nodes already use)")
                else:
                    out.append(f"token    {result['token']}")
                    out.append("         (shown once: give it to each node as cluster.token)")
            case "cluster", "rotate" if args.finish:
                result = ops.finish_rotation(args.cluster)
                out.append(
                    f"cluster  {result['name']}: previous join tokens refused from now on"
                    if result["ended"]
                    else f"cluster  {result['name']}: no previous join token was still accepted"
                )
            case "cluster", "rotate":
                result = ops.rotate_cluster(args.cluster, args.grace, args.token)
                until = _when(result["previous_accepted_until"])
                out.append(f"cluster  {result['name']}")
                if result["token"] is not None:
                    out += [
                        f"token    {result['token']}",
                        "         (shown once: give it to each node as cluster.token, with the old",
                        "         one in cluster.previous_tokens until every node has moved)",
                    ]
                else:
                    out.append("token    the one given (--token); the previous one still works")
                out += [
                    f"previous accepted until {until}; end it sooner with: quorum-relay cluster "
                    f"rotate {result['name']} --finish",
                ]
            case "cluster", "list":
                result = ops.clusters()
                out += [f"{c['name']}\t{c['id']}" for c in result]
            case "key", "create":
                result = ops.create_key(
                    args.cluster, args.name, parse_models(args.models), args.expires
                )
                _print_key(result, out)
            case "key", "list":
                result = ops.keys(args.cluster, args.all)
                for k in result:
                    models = "all" if k["models"] is None else ",".join(k["models"])
                    out.append(
                        f"{k['prefix']}\t{k['state']}\t{k['cluster']}\t{k['name'] or '-'}\t"
                        f"models={models}\texpires={_when(k['expires_at'])}\t"
                        f"last_used={_when(k['last_used_at'])}\t{k['id']}"
                    )
            case "key", "revoke":
                result = ops.revoke_key(args.key)
                out.append(f"revoked  {result['prefix']} ({result['cluster']}, {result['id']})")
            case "key", "rotate":
                result = ops.rotate_key(args.key, args.expires or "keep")
                out.append(f"replaces {result['replaces']} (revoked)")
                _print_key(result, out)
            case "node", "list":
                result = ops.nodes(args.cluster)
                for n in result:
                    state = "online" if n["online"] else "offline"
                    models = ",".join(m["id"] for m in n["models"]) or "-"
                    out.append(
                        f"{n['name'] or '-'}\t{state}\t{n['cluster']}\t"
                        f"seen {n['seen_s_ago']:.0f}s ago\t{models}\t{n['node_id']}"
                    )
            case "node", "remove":
                result = ops.remove_node(args.cluster, args.node_id)
                where = result["cluster"]
                out.append(
                    f"removed  {args.node_id} ({where}): its key is refused from now on"
                    if result["removed"]
                    else f"{args.node_id} never joined {where} with a key: nothing removed"
                )
            case "usage", _:
                result = ops.usage(args.cluster, args.by, args.since, args.until)
                out.append(f"{args.by}\trequests\terrors\tprompt\tcompletion")
                for row in result["data"]:
                    label = row.get("prefix") or row[args.by] or "-"
                    out.append(
                        f"{label}\t{row['requests']}\t{row['errors']}\t"
                        f"{row['prompt_tokens']}\t{row['completion_tokens']}"
                    )
            case _:
                raise QuorumError(f"unknown command {args.command} {args.action}")
        return [json.dumps(result, indent=2)] if args.json else out
    finally:
        if store is not None:
            store.close()
