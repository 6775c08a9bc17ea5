"""The control plane's store: one small interface, and the values that cross it.

Everything the relay must remember lives behind ``Store``: clusters (with
their join tokens' hashes), API keys (hash and visible prefix only), the last
heartbeat of every node, and usage records. What the relay keeps in memory
(open tunnels, the models each one announced) is rebuilt by reconnecting
nodes, so a restarted relay, or a second one sharing the same store, loses
nothing. ``relay.open_store`` gives the SQLite implementation (``sqlite_store``),
the default; a PostgreSQL one can implement the same methods with the same
portable SQL.

Rules every implementation keeps:
- Secrets (join tokens, API keys) are stored only as SHA-256 hashes; a
  lookup hashes the presented secret and compares digests in constant time.
- Usage is exactly-once per (cluster, request id): ``add_usage`` ignores a
  record it already holds and returns only after the batch is committed.
- A cluster's data is only ever reached through that cluster's id.
- Users (``relay.users``): an account per ``(provider, subject)``; the first
  one made is an operator, atomically. Personal tokens, invitation codes and
  session ids are stored only as hashes. Clusters and keys made before users
  existed have no owner (the admin token's).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from quorum.protocol import ModelInfo, RequestUsage
from relay.cluster_tokens import PreviousToken
from relay.keys import KeyState, display_prefix, key_state
from relay.node_keys import Binding, NodeKey
from relay.users import (
    KeyHolder,
    Member,
    Membership,
    Pending,
    User,
    UserSession,
    UserToken,
)


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself."""

    id: str
    cluster_id: str
    name: str
    prefix: str
    models: tuple[str, ...] | None
    """The only models this key may use; None: every model."""
    expires_at: float | None
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    def state(self, now: float) -> KeyState:
        return key_state(self.revoked_at, self.expires_at, now)

    @property
    def shown(self) -> str:
        """What a listing shows of the key: ``qk_1a2b3c4d``."""
        return display_prefix(self.prefix)


@dataclass(frozen=True, slots=True)
class NodeSeen:
    """A node's last heartbeat as the store remembers it."""

    cluster_id: str
    node_id: str
    name: str
    models: tuple[ModelInfo, ...]
    last_seen: float


class UsageBy(enum.StrEnum):
    MODEL = "model"
    NODE = "node"
    KEY = "key"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Usage summed over one value of the grouping (a model, a node, a key id, a UTC day)."""

    group: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    avg_duration_ms: float | None
    avg_ttfb_ms: float | None


@dataclass(frozen=True, slots=True)
class UsagePoint:
    """Usage of one (model, node, key) in one time bucket starting at ``bucket_ms``.

    Time to first byte comes as a sum and a count (records without one are left
    out), so points add up into exact averages over any grouping.
    """

    bucket_ms: int
    model: str
    node: str
    key_id: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    ttfb_ms_sum: float
    ttfb_count: int


def by_ref(found: Sequence[Cluster], ref: str) -> Cluster | None:
    """Of the clusters whose id or name is ``ref``: the one with that id, else the only one
    with that name; None if there is none, or several owners' share the name."""
    for cluster in found:
        if cluster.id == ref:
            return cluster
    named = [c for c in found if c.name == ref]
    return named[0] if len(named) == 1 else None


class Store(Protocol):
    def close(self) -> None: ...

    def check(self) -> None:
        """Raise ``StoreError`` (saying how to restore it) if the store cannot be read."""
        ...

    # -- clusters --
    def create_cluster(
        self, name: str, token: str | None = None, *, now: float, owner_id: str | None = None
    ) -> tuple[Cluster, str]:
        """A new cluster and its join token (returned once). ``token`` adopts an existing one.
        Names are unique per owner (``owner_id``, a user), and among the clusters nobody
        owns; ``StoreError`` for a name taken there."""
        ...

    def clusters(self) -> list[Cluster]: ...

    def cluster(self, ref: str) -> Cluster | None:
        """The cluster with this id, else the one cluster with this name (None when several
        owners named theirs so: ``by_ref``)."""
        ...

    def cluster_for_token(self, token: str) -> Cluster | None: ...

    # -- API keys --
    def create_key(
        self,
        cluster_id: str,
        *,
        name: str,
        models: tuple[str, ...] | None,
        expires_at: float | None,
        now: float,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret form (returned once, never stored)."""
        ...

    def keys(self, cluster_id: str | None = None) -> list[ApiKey]: ...

    def key(self, ref: str) -> ApiKey | None:
        """The key with this id or visible prefix (``1a2b3c4d`` or ``qk_1a2b3c4d``)."""
        ...

    def key_for_secret(self, key: str) -> ApiKey | None:
        """The stored key this secret is, whatever its state, or None."""
        ...

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey: ...

    def rotate_key(
        self, key_id: str, *, now: float, expires_at: float | None
    ) -> tuple[ApiKey, str]:
        """Revoke ``key_id`` and create its replacement (same cluster, name and models)."""
        ...

    def touch_key(self, key_id: str, *, now: float) -> None:
        """Note a use of the key (written at most once a minute per key)."""
        ...

    # -- presence --
    def record_presence(self, seen: Sequence[NodeSeen]) -> None: ...

    def nodes(self, cluster_id: str | None = None) -> list[NodeSeen]: ...

    # Node identity keys (relay/node_keys.py): the first key a node id joins with is its own.
    def bind_node_key(
        self, cluster_id: str, node_id: str, fingerprint: str, *, now: float
    ) -> Binding: ...

    def remove_node(self, cluster_id: str, node_id: str, *, now: float) -> bool: ...

    def node_keys(self, cluster_id: str | None = None) -> list[NodeKey]: ...

    # The public key of each cluster's CA (relay/node_keys.py): members join without the token.
    def set_cluster_ca(self, cluster_id: str, ca_id: str, ca_key_pem: str) -> None: ...

    def cluster_ca(self, cluster_id: str) -> str | None: ...

    def cluster_for_ca(self, ca_id: str) -> tuple[str, str, float, str] | None: ...

    # Token rotation (relay/cluster_tokens.py, migration 5): the previous token and its CA
    # stay accepted until the grace ends (or ``finish_rotation``), then are refused.
    def rotate_cluster_token(
        self, cluster_id: str, token: str | None = None, *, grace_s: float, now: float
    ) -> str:
        """Give the cluster a new token (returned once) and its CA; keep the old as previous."""
        ...

    def finish_rotation(self, cluster_id: str, *, now: float) -> int:
        """End every previous token's grace now; how many were still accepted."""
        ...

    def previous_tokens(self, cluster_id: str) -> list[PreviousToken]: ...

    def cluster_for_previous_token(self, token: str, *, now: float) -> str | None:
        """The id of the cluster whose previous ``token`` is still accepted at ``now``."""
        ...

    def previous_ca(self, ca: str, *, now: float) -> tuple[str, str] | None:
        """(cluster id, CA public key PEM) of a previous CA still accepted at ``now``."""
        ...

    def accepted_cas(self, *, now: float) -> set[tuple[str, str]]:
        """Every (cluster id, CA id) a node may join with at ``now``."""
        ...

    # -- usage --
    def add_usage(self, cluster_id: str, records: Sequence[RequestUsage]) -> tuple[int, int]:
        """Store what is new; ``(accepted, duplicates)`` once committed."""
        ...

    def usage(
        self,
        cluster_id: str,
        by: UsageBy,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[UsageGroup]: ...

    def usage_records(self, cluster_id: str, *, limit: int = 100) -> list[RequestUsage]:
        """The newest records, newest first."""
        ...

    def usage_series(self, cluster_id: str, *, since_ms: int, bucket_ms: int) -> list[UsagePoint]:
        """Usage since ``since_ms`` in buckets of ``bucket_ms`` (aligned to the epoch), one
        point per bucket and (model, node, key), oldest first."""
        ...

    # -- users (relay/users.py) --
    def sign_up(
        self,
        provider: str,
        subject: str,
        *,
        name: str,
        email: str | None,
        operator: bool,
        now: float,
    ) -> User:
        """The account of ``(provider, subject)``, made on its first sign-in: an operator when
        it is the first account or ``operator``; later sign-ins refresh name and email (and
        ``operator`` promotes)."""
        ...

    def user(self, user_id: str) -> User | None: ...

    def users(self) -> list[User]: ...

    def set_user_disabled(self, user_id: str, disabled: bool, *, now: float) -> User | None:
        """Disabling also ends every session of the user; None for an unknown user."""
        ...

    def add_member(self, cluster_id: str, user_id: str, role: Membership, *, now: float) -> None:
        """Make the user the cluster's owner or a member; an owner stays owner."""
        ...

    def remove_member(self, cluster_id: str, user_id: str) -> bool:
        """Remove a member (never the owner); False if the user was none."""
        ...

    def members(self, cluster_id: str) -> list[Member]: ...

    def memberships(self, user_id: str) -> list[Member]: ...

    def membership(self, cluster_id: str, user_id: str) -> Membership | None: ...

    def owned(self) -> dict[str, str]:
        """Each cluster that has an owner: cluster id -> owner's user id."""
        ...

    def add_pending_signin(
        self, cookie_hash: str, pending: Pending, *, now: float, ttl_s: float, max_rows: int
    ) -> None:
        """Keep a sign-in waiting for its callback, found by its cookie's hash; rows older
        than ``ttl_s`` go, and the oldest beyond ``max_rows``."""
        ...

    def take_pending_signin(self, cookie_hash: str) -> Pending | None:
        """That sign-in, gone from the store as it is read: one caller gets it, once."""
        ...

    def suspended_clusters(self, cluster_id: str | None = None) -> set[str]:
        """The clusters whose owner is disabled (of ``cluster_id`` alone, if given): the relay
        serves them nothing until the owner is enabled again."""
        ...

    def create_invitation(
        self, cluster_id: str, user_id: str, *, now: float, ttl_s: float = ...
    ) -> str:
        """A one-use invitation code to the cluster (returned once, stored hashed)."""
        ...

    def accept_invitation(self, code: str, user_id: str, *, now: float) -> str | None:
        """Redeem an unused, unexpired code: the cluster id the user is now a member of."""
        ...

    def set_key_owner(self, key_id: str, user_id: str) -> None: ...

    def key_owner(self, key_id: str) -> str | None: ...

    def key_owners(self, cluster_id: str | None = None) -> dict[str, str]:
        """Keys that have an owner: key id -> user id."""
        ...

    def create_user_token(self, user_id: str, name: str, *, now: float) -> tuple[UserToken, str]:
        """A personal API token (``qu_...``) and its secret (returned once)."""
        ...

    def user_tokens(self, user_id: str) -> list[UserToken]: ...

    def user_for_token(self, secret: str) -> tuple[UserToken, User] | None:
        """The personal token this secret is (whatever its state) and its user."""
        ...

    def revoke_user_token(self, user_id: str, ref: str, *, now: float) -> UserToken | None:
        """Revoke one of the user's tokens by id or prefix; None if they have no such one."""
        ...

    def add_session(self, session: UserSession) -> None: ...

    def session(self, id_hash: str) -> UserSession | None: ...

    def touch_session(self, id_hash: str, *, now: float) -> None:
        """Note a use (written at most once a minute per session)."""
        ...

    def end_session(self, id_hash: str) -> None: ...

    def end_sessions(self, user_id: str) -> int:
        """End every session of the user (sign out everywhere); how many ended."""
        ...

    def key_holder(self, key_id: str) -> KeyHolder | None:
        """Who owns an owned key: enabled or not, and their place in its cluster now; None
        for a key without an owner (made with the admin token)."""
        ...

    def user_usage(
        self,
        cluster_id: str,
        user_id: str,
        by: UsageBy,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[UsageGroup]:
        """``usage`` of the cluster counting only requests made with the user's keys."""
        ...

    def user_usage_records(
        self, cluster_id: str, user_id: str, *, limit: int = 100
    ) -> list[RequestUsage]:
        """``usage_records`` of the cluster made with the user's keys, newest first."""
        ...
