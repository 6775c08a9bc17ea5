"""Who may see and do what (``relay.user_ops``), on a real SQLite store, without sockets:
owners, members, strangers and operators, for clusters, keys, nodes, usage and members."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorum.errors import Forbidden, NotFound
from quorum.protocol import ModelInfo, RequestUsage
from relay.open_store import open_store
from relay.store import NodeSeen, Store
from relay.user_ops import UserOps
from relay.users import User

T0 = 1_700_000_000.0


def ops(store: Store, user: User) -> UserOps:
    return UserOps(store, lambda: T0, user)


@pytest.fixture
def people(tmp_path: Path) -> tuple[Store, UserOps, UserOps, UserOps, UserOps]:
    store = open_store(tmp_path)
    op = store.sign_up("id", "op", name="Op", email=None, operator=False, now=T0)
    made = [
        store.sign_up("id", n, name=n, email=None, operator=False, now=T0)
        for n in ("owner", "member", "stranger")
    ]
    return store, ops(store, op), *(ops(store, u) for u in made)  # type: ignore[return-value]


def test_each_role_sees_what_it_may(
    people: tuple[Store, UserOps, UserOps, UserOps, UserOps],
) -> None:
    store, operator, owner, member, stranger = people
    home = owner.create_cluster("home")
    assert home["role"] == "owner" and home["token"].startswith("qc_")
    store.create_cluster("legacy", now=T0)  # made before users: no owner
    member.accept(owner.invite("home")["code"])
    mine = owner.create_key("home", "owner's")
    theirs = member.create_key("home", "member's")
    store.record_presence([NodeSeen(home["id"], "n1", "gpu", (ModelInfo("m", "llm"),), T0)])
    store.add_usage(
        home["id"],
        [
            RequestUsage(rid, int(T0 * 1000), "m", "chat", "relay", "gpu", 200, 5.0, key_id=key)
            for rid, key in (("1", mine["id"]), ("2", theirs["id"]), ("3", None))
        ],
    )

    assert [c["name"] for c in owner.clusters()] == ["home"]
    assert [(c["name"], c["role"]) for c in member.clusters()] == [("home", "member")]
    assert stranger.clusters() == []
    assert sorted(c["name"] for c in operator.clusters()) == ["home", "legacy"]

    assert {k["name"] for k in owner.keys("home")} == {"owner's", "member's"}
    assert [k["name"] for k in member.keys(None)] == ["member's"]
    assert stranger.keys() == []
    assert [n["name"] for n in member.nodes("home")] == ["gpu"]  # the cluster's nodes
    assert stranger.nodes() == []
    assert len(owner.usage_records("home")) == 3
    assert [r["request_id"] for r in member.usage_records("home")] == ["2"]
    assert [r["requests"] for r in member.usage("home", "model")["data"]] == [1]

    for attempt in (
        lambda: stranger.keys("home"),
        lambda: stranger.nodes("home"),
        lambda: stranger.usage("home", "model"),
        lambda: stranger.create_key("home"),
        lambda: stranger.key(mine["id"]),
        lambda: stranger.revoke_key(mine["prefix"]),
        lambda: stranger.members("home"),
        lambda: stranger.invite("home"),
        lambda: member.revoke_key(mine["id"]),  # a member: only their own keys
        lambda: owner.keys("legacy"),  # an ownerless cluster is the operator's
    ):
        with pytest.raises(NotFound):
            attempt()
    for attempt in (
        lambda: member.invite("home"),
        lambda: member.remove_node("home", "n1"),
        lambda: member.remove_member("home", owner.user.id),
        lambda: member.users(),
        lambda: owner.set_disabled(member.user.id, True),
    ):
        with pytest.raises(Forbidden):
            attempt()

    # The owner may revoke a member's key; a rotation keeps the key's owner.
    rotated = member.rotate_key(theirs["id"])
    assert store.key_owner(rotated["id"]) == member.user.id
    assert owner.revoke_key(rotated["id"])["state"] == "revoked"
    # An operator's key in a cluster not theirs works (and stops if they are disabled).
    ops_key = operator.create_key("home", "support")
    held = store.key_holder(ops_key["id"])
    assert held is not None and held.allowed and held.membership is None
    # A member leaves on their own; the operator disables anyone but themself.
    member.remove_member("home", member.user.id)
    assert member.clusters() == []
    assert operator.set_disabled(stranger.user.id, True)["disabled"] is True
    assert [m["name"] for m in owner.members("home")] == ["owner"]
