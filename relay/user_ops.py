"""The control plane's operations as one signed-in user may do them (``relay.users`` rules).

``UserOps`` is ``AdminOps`` seen through one user: the same JSON answers, but
only the clusters the user owns or was invited to exist for them; anything
else is the same 404 an unknown name gets, so nothing is learnt by asking.
An operator sees every cluster, as the admin token does. Owners invite and
remove members; members use the cluster with their own keys and see their own
requests only. The account operations (personal tokens, invitations, users)
live here too, so the dashboard, ``/api`` and the CLI say the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from quorum.errors import Forbidden, InvalidRequest, NotFound, StoreError
from relay.admin import (
    DEFAULT_GRACE,
    JSON,
    AdminOps,
    cluster_json,
    node_json,
    parse_since,
    usage_row,
)
from relay.store import ApiKey, Cluster, Store, UsageBy, by_ref
from relay.users import Membership, Role, User, UserToken, can_see_key

ADMIN = User("", "admin", "", "admin token", None, Role.OPERATOR, 0.0)
"""Who the admin token is to the users' operations: an operator without an account (it may
list, disable and enable users, and see or remove members; nothing that needs an account)."""


def user_json(user: User) -> JSON:
    return {
        "id": user.id,
        "provider": user.provider,
        "subject": user.subject,
        "name": user.name,
        "email": user.email,
        "role": user.role.value,
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def token_json(token: UserToken) -> JSON:
    return {
        "id": token.id,
        "prefix": token.shown,
        "name": token.name,
        "created_at": token.created_at,
        "revoked_at": token.revoked_at,
        "state": "revoked" if token.revoked_at is not None else "active",
    }


class UserOps(AdminOps):
    """``AdminOps`` scoped to ``user`` (an operator sees everything)."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        user: User,
        connected: Callable[[str, str], bool] | None = None,
    ) -> None:
        super().__init__(store, clock, connected)
        self.user = user

    # -- what this user may see ------------------------------------------------------

    def places(self) -> dict[str, Membership]:
        """Cluster id -> the user's place in it (an operator owns them all, as it were)."""
        if self.user.operator:
            return {c.id: Membership.OWNER for c in self.store.clusters()}
        return {m.cluster_id: m.role for m in self.store.memberships(self.user.id)}

    def _cluster(self, ref: str | None) -> Cluster:
        """The user's cluster with this id, else the one of theirs with this name: names are
        unique per owner, so one a member was invited to may share a name with their own."""
        if not ref:
            raise InvalidRequest("Name the cluster ('cluster').", param="cluster")
        places = self.places()
        mine = [c for c in self.store.clusters() if c.id in places and ref in (c.id, c.name)]
        cluster = by_ref(mine, ref)
        if cluster is None and mine:
            raise InvalidRequest(
                f"Several of your clusters are named '{ref}': name it by its id.",
                param="cluster",
                code="cluster_ambiguous",
            )
        if cluster is None:
            raise NotFound(f"No cluster '{ref}'.", code="cluster_not_found")
        return cluster

    def _owned(self, ref: str | None) -> Cluster:
        cluster = self._cluster(ref)
        if self.places()[cluster.id] is not Membership.OWNER:
            raise Forbidden(
                f"Only the owner of the cluster '{cluster.name}' may do this.", code="not_owner"
            )
        return cluster

    def _sees(self, key: ApiKey, places: dict[str, Membership]) -> bool:
        if self.user.operator:
            return True
        owner = self.store.key_owner(key.id)
        return can_see_key(self.user.id, owner, places.get(key.cluster_id))

    def _key(self, ref: str) -> ApiKey:
        key = self.store.key(ref) if ref else None
        if key is None or not self._sees(key, self.places()):
            raise NotFound(f"No API key '{ref}'.", code="key_not_found")
        return key

    def _names(self) -> dict[str, str]:
        places = self.places()
        return {c.id: c.name for c in self.store.clusters() if c.id in places}

    # -- clusters --------------------------------------------------------------------

    def clusters(self) -> list[JSON]:
        places, suspended = self.places(), self.store.suspended_clusters()
        return [
            {**cluster_json(c), "role": places[c.id].value, "suspended": c.id in suspended}
            for c in self.store.clusters()
            if c.id in places
        ]

    def create_cluster(self, name: str, token: str | None = None) -> JSON:
        made = self._create_cluster(name, token, self.user.id)
        self.store.add_member(made["id"], self.user.id, Membership.OWNER, now=self.clock())
        return {**made, "role": Membership.OWNER.value}

    def rotate_cluster(
        self, cluster: str, grace: object = DEFAULT_GRACE, token: str | None = None
    ) -> JSON:
        self._owned(cluster)
        return super().rotate_cluster(cluster, grace, token)

    def finish_rotation(self, cluster: str) -> JSON:
        self._owned(cluster)
        return super().finish_rotation(cluster)

    def members(self, cluster: str) -> list[JSON]:
        target = self._cluster(cluster)
        places = self.places()
        listed = []
        for m in self.store.members(target.id):
            user = self.store.user(m.user_id)
            if user is None:
                continue
            if places[target.id] is Membership.OWNER or m.role is Membership.OWNER:
                listed.append(
                    {
                        "user_id": user.id,
                        "name": user.name,
                        "role": m.role.value,
                        "added_at": m.added_at,
                    }
                )
        return listed

    def invite(self, cluster: str) -> JSON:
        target = self._owned(cluster)
        code = self.store.create_invitation(target.id, self.user.id, now=self.clock())
        return {"cluster": target.name, "cluster_id": target.id, "code": code}

    def accept(self, code: str) -> JSON:
        if not isinstance(code, str) or not code.startswith("qi_"):
            raise InvalidRequest("An invitation code looks like qi_...", param="code")
        cluster_id = self.store.accept_invitation(code, self.user.id, now=self.clock())
        cluster = None if cluster_id is None else self.store.cluster(cluster_id)
        if cluster is None:
            raise NotFound(
                "This invitation is unknown, used or expired.", code="invitation_not_found"
            )
        return {**cluster_json(cluster), "role": self.places()[cluster.id].value}

    def remove_member(self, cluster: str, user_id: str) -> JSON:
        """The owner removes a member, or a member leaves; their keys stop at once."""
        target = self._cluster(cluster)
        if user_id != self.user.id:
            target = self._owned(cluster)
        removed = self.store.remove_member(target.id, user_id)
        if not removed:
            raise NotFound("No such member of this cluster.", code="member_not_found")
        return {"cluster": target.name, "cluster_id": target.id, "user_id": user_id}

    # -- keys ------------------------------------------------------------------------

    def keys(self, cluster: str | None = None, include_revoked: bool = False) -> list[JSON]:
        listed = super().keys(cluster, include_revoked)
        places = self.places()
        owners = self.store.key_owners()
        return [
            k
            for k in listed
            if k["cluster_id"] in places
            and (
                self.user.operator
                or can_see_key(self.user.id, owners.get(k["id"]), places[k["cluster_id"]])
            )
        ]

    def create_key(
        self,
        cluster: str | None,
        name: str = "",
        models: tuple[str, ...] | None = None,
        expires: object = None,
    ) -> JSON:
        made = super().create_key(cluster, name, models, expires)
        self.store.set_key_owner(made["id"], self.user.id)
        return made

    def rotate_key(self, ref: str, expires: object = "keep") -> JSON:
        old = self._key(ref)
        owner = self.store.key_owner(old.id)
        made = super().rotate_key(ref, expires)
        if owner is not None:
            self.store.set_key_owner(made["id"], owner)
        return made

    # -- nodes and usage ---------------------------------------------------------------

    def nodes(self, cluster: str | None = None) -> list[JSON]:
        if cluster:
            return super().nodes(cluster)
        places, names, now = self.places(), self._names(), self.clock()
        return [
            node_json(
                n,
                names.get(n.cluster_id, "?"),
                now,
                None if self._connected is None else self._connected(n.cluster_id, n.node_id),
            )
            for n in self.store.nodes()
            if n.cluster_id in places
        ]

    def remove_node(self, cluster: str, node_id: str) -> JSON:
        self._owned(cluster)
        return super().remove_node(cluster, node_id)

    def _member_only(self, cluster: str | None) -> Cluster | None:
        """The cluster when the user is only a member of it (sees their own usage only)."""
        target = self._cluster(cluster)
        return target if self.places()[target.id] is Membership.MEMBER else None

    def usage(
        self, cluster: str | None, by: str, since: str | None = None, until: str | None = None
    ) -> JSON:
        target = self._member_only(cluster)
        if target is None:
            return super().usage(cluster, by, since, until)
        now = self.clock()
        try:
            grouping = UsageBy(by)
        except ValueError:
            raise InvalidRequest(
                f"'by' is one of {', '.join(b.value for b in UsageBy)}", param="by"
            ) from None
        since_ms, until_ms = parse_since(since, now), parse_since(until, now)
        groups = self.store.user_usage(
            target.id, self.user.id, grouping, since_ms=since_ms, until_ms=until_ms
        )
        return {
            "cluster": target.name,
            "by": grouping.value,
            "since_ms": since_ms,
            "until_ms": until_ms,
            "data": [usage_row(grouping, g) for g in groups],
        }

    def usage_records(self, cluster: str | None, limit: int = 100) -> list[JSON]:
        target = self._member_only(cluster)
        if target is None:
            return super().usage_records(cluster, limit)
        records = self.store.user_usage_records(
            target.id, self.user.id, limit=max(1, min(limit, 1000))
        )
        return [dataclasses.asdict(r) for r in records]

    # -- the account -------------------------------------------------------------------

    def me(self) -> JSON:
        return user_json(self.user)

    def tokens(self) -> list[JSON]:
        return [token_json(t) for t in self.store.user_tokens(self.user.id)]

    def create_token(self, name: str = "") -> JSON:
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidRequest("A token's name is text of at most 200 characters.", param="name")
        token, secret = self.store.create_user_token(self.user.id, name.strip(), now=self.clock())
        return {**token_json(token), "token": secret}

    def revoke_token(self, ref: str) -> JSON:
        token = self.store.revoke_user_token(self.user.id, ref, now=self.clock())
        if token is None:
            raise NotFound(f"No personal token '{ref}'.", code="token_not_found")
        return token_json(token)

    # -- operators ---------------------------------------------------------------------

    def _operator(self) -> None:
        if not self.user.operator:
            raise Forbidden("Only an operator may manage users.", code="not_operator")

    def users(self) -> list[JSON]:
        self._operator()
        return [user_json(u) for u in self.store.users()]

    def set_disabled(self, user_id: str, disabled: bool) -> JSON:
        self._operator()
        if user_id == self.user.id and disabled:
            raise InvalidRequest("An operator cannot disable their own account.")
        try:
            user = self.store.set_user_disabled(user_id, disabled, now=self.clock())
        except StoreError as exc:
            raise InvalidRequest(str(exc)) from None
        if user is None:
            raise NotFound(f"No user '{user_id}'.", code="user_not_found")
        return user_json(user)
