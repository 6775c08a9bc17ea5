"""``quorum-relay`` commands for users, members and personal tokens (the dashboard's buttons).

::

    quorum-relay whoami                               the account of $QUORUM_RELAY_TOKEN
    quorum-relay token create [--name N] | list | revoke ID|PREFIX
    quorum-relay cluster members NAME
    quorum-relay cluster invite NAME                  prints a one-use invitation code
    quorum-relay cluster join CODE
    quorum-relay cluster remove-member NAME USER_ID
    quorum-relay user list | disable USER_ID | enable USER_ID

With ``--relay URL`` they call the running relay's ``/api`` with a personal token
(``$QUORUM_RELAY_TOKEN``, ``qu_...``), or the admin token where an operator may act (users,
members). Without ``--relay``, the operator's commands (``user``, ``cluster members`` and
``remove-member``) work on the store directly, as the other management commands do; the
ones that act as a person (``whoami``, ``token``, ``invite``, ``join``) need ``--relay``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from quorum.errors import QuorumError
from relay.admin import ADMIN_TOKEN_ENV
from relay.open_store import open_store
from relay.user_http import HttpUsers
from relay.user_ops import ADMIN, UserOps

USER_TOKEN_ENV = "QUORUM_RELAY_TOKEN"
JSON = dict[str, Any]
AS_PERSON = {("whoami", None), ("token", "create"), ("token", "list"), ("token", "revoke")}
AS_PERSON |= {("cluster", "invite"), ("cluster", "join")}
HANDLED = AS_PERSON | {
    ("cluster", "members"),
    ("cluster", "remove-member"),
    ("user", "list"),
    ("user", "disable"),
    ("user", "enable"),
}


class Calls(Protocol):
    def me(self) -> JSON: ...
    def tokens(self) -> list[JSON]: ...
    def create_token(self, name: str = "") -> JSON: ...
    def revoke_token(self, ref: str) -> JSON: ...
    def members(self, cluster: str) -> list[JSON]: ...
    def invite(self, cluster: str) -> JSON: ...
    def accept(self, code: str) -> JSON: ...
    def remove_member(self, cluster: str, user_id: str) -> JSON: ...
    def users(self) -> list[JSON]: ...
    def set_disabled(self, user_id: str, disabled: bool) -> JSON: ...


def add_cluster_actions(csub: Any, target: Callable[[argparse.ArgumentParser], None]) -> None:
    members = csub.add_parser("members", help="the owner and members of a cluster")
    members.add_argument("name")
    target(members)
    invite = csub.add_parser("invite", help="a one-use code that makes someone a member")
    invite.add_argument("name")
    target(invite)
    join = csub.add_parser("join", help="become a member with an invitation code")
    join.add_argument("code")
    target(join)
    remove = csub.add_parser("remove-member", help="remove a member: their keys stop at once")
    remove.add_argument("name")
    remove.add_argument("user_id")
    target(remove)


def add_parsers(sub: Any, target: Callable[[argparse.ArgumentParser], None]) -> None:
    target(sub.add_parser("whoami", help="the account of the personal token ($QUORUM_RELAY_TOKEN)"))
    token = sub.add_parser("token", help="your personal API tokens (for --relay and /api)")
    tsub = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    tcreate = tsub.add_parser("create", help="a new personal token; printed once")
    tcreate.add_argument("--name", default="")
    target(tcreate)
    target(tsub.add_parser("list", help="your personal tokens (prefix only)"))
    trevoke = tsub.add_parser("revoke", help="revoke a personal token (id or qu_ prefix)")
    trevoke.add_argument("ref")
    target(trevoke)
    user = sub.add_parser("user", help="users who sign in (operators)")
    usub = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    target(usub.add_parser("list", help="every user"))
    for action, what in (
        ("disable", "their sessions, tokens and keys stop at once"),
        ("enable", ""),
    ):
        one = usub.add_parser(action, help=f"{action} a user" + (f": {what}" if what else ""))
        one.add_argument("user_id")
        target(one)


def handles(args: argparse.Namespace) -> bool:
    return (args.command, getattr(args, "action", None)) in HANDLED


def _calls(args: argparse.Namespace) -> tuple[Calls, Any]:
    person = (args.command, getattr(args, "action", None)) in AS_PERSON
    if args.relay:
        token = os.environ.get(USER_TOKEN_ENV, "").strip()
        if not token and not person:
            token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        if not token:
            raise QuorumError(f"--relay needs a personal token: set ${USER_TOKEN_ENV} (qu_...)")
        return HttpUsers(args.relay, token), None
    if person:
        raise QuorumError(
            f"'{args.command}' acts as a person: use --relay URL with ${USER_TOKEN_ENV}"
        )
    store = open_store(args.data, getattr(args, "store", None))
    return UserOps(store, time.time, ADMIN), store


def manage(args: argparse.Namespace) -> list[str]:
    calls, store = _calls(args)
    try:
        result: Any
        out: list[str] = []
        match args.command, getattr(args, "action", None):
            case "whoami", _:
                result = calls.me()
                out.append(
                    f"{result['name']}\t{result['role']}\t{result['provider']}\t{result['id']}"
                )
            case "token", "create":
                result = calls.create_token(args.name)
                out += [f"token    {result['token']}", "         (shown once)"]
            case "token", "list":
                result = calls.tokens()
                out += [
                    f"{t['prefix']}\t{t['state']}\t{t['name'] or '-'}\t{t['id']}" for t in result
                ]
            case "token", "revoke":
                result = calls.revoke_token(args.ref)
                out.append(f"revoked  {result['prefix']}")
            case "cluster", "members":
                result = calls.members(args.name)
                out += [f"{m['name']}\t{m['role']}\t{m['user_id']}" for m in result]
            case "cluster", "invite":
                result = calls.invite(args.name)
                out += [f"code     {result['code']}", "         (one use, valid 7 days)"]
            case "cluster", "join":
                result = calls.accept(args.code)
                out.append(f"joined   {result['name']} ({result['role']})")
            case "cluster", "remove-member":
                result = calls.remove_member(args.name, args.user_id)
                out.append(f"removed  {args.user_id} from {result['cluster']}: their keys stop")
            case "user", "list":
                result = calls.users()
                out += [
                    f"{u['name']}\t{u['role']}\t{'disabled' if u['disabled'] else 'active'}\t"
                    f"{u['provider']}:{u['subject']}\t{u['id']}"
                    for u in result
                ]
            case "user", "disable" | "enable":
                result = calls.set_disabled(args.user_id, args.action == "disable")
                out.append(f"{args.action}d {result['name']} ({result['id']})")
            case _:
                raise QuorumError(f"unknown command {args.command}")
        return [json.dumps(result, indent=2)] if args.json else out
    finally:
        if store is not None:
            store.close()
