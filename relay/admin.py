"""Control-plane operations as JSON values, shared by ``/api`` and the CLI; the admin token.

``AdminOps`` turns store calls into the JSON the API answers and the CLI
prints, so both say the same thing. Its methods are synchronous (the API
calls them in a worker thread) and raise ``quorum.errors`` API errors.

The admin token (``/api`` credential) comes from, in order:
``$QUORUM_RELAY_ADMIN_TOKEN``; ``--admin-token-file FILE``; the file
``admin_token`` in the data directory, which ``serve`` creates (mode 0600)
with a fresh random token when none exists. It is never taken from the
command line, where every local user could read it in the process list.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quorum.errors import InvalidRequest, NotFound, QuorumError, StoreError
from relay.keys import parse_duration
from relay.presence import is_online
from relay.store import ApiKey, Cluster, NodeSeen, Store, UsageBy, UsageGroup

ADMIN_TOKEN_ENV = "QUORUM_RELAY_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin_token"
DEFAULT_GRACE = "24h"
"""How long a cluster's previous token is still accepted after a rotation, by default."""

JSON = dict[str, Any]


def load_admin_token(
    data_dir: Path,
    *,
    env: Mapping[str, str] = os.environ,
    file: Path | None = None,
    create: bool = False,
) -> str | None:
    """The admin token from the environment or its file (made when ``create``), or None."""
    value = env.get(ADMIN_TOKEN_ENV, "").strip()
    if not value:
        path = file or data_dir / ADMIN_TOKEN_FILE
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            if not create or file is not None:
                return None
            value = "qa_" + secrets.token_urlsafe(32)
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(value + "\n")
        except OSError as exc:
            raise QuorumError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    if len(value) < 16:
        raise QuorumError("the admin token must have at least 16 characters")
    return value


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def usage_row(grouping: UsageBy, g: UsageGroup) -> JSON:
    """One group of a usage summary as the API and the CLI show it."""
    return {
        grouping.value: g.group,
        "requests": g.requests,
        "errors": g.errors,
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "total_tokens": g.prompt_tokens + g.completion_tokens,
        "avg_duration_ms": None if g.avg_duration_ms is None else round(g.avg_duration_ms, 2),
        "avg_ttfb_ms": None if g.avg_ttfb_ms is None else round(g.avg_ttfb_ms, 2),
    }


def cluster_json(cluster: Cluster) -> JSON:
    return {"id": cluster.id, "name": cluster.name, "created_at": cluster.created_at}


def key_json(key: ApiKey, cluster_name: str, now: float) -> JSON:
    return {
        "id": key.id,
        "prefix": key.shown,
        "name": key.name,
        "cluster": cluster_name,
        "cluster_id": key.cluster_id,
        "models": None if key.models is None else list(key.models),
        "state": key.state(now).value,
        "expires_at": key.expires_at,
        "expires": _iso(key.expires_at),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


def node_json(node: NodeSeen, cluster_name: str, now: float, connected: bool | None) -> JSON:
    return {
        "node_id": node.node_id,
        "name": node.name,
        "cluster": cluster_name,
        "models": [{"id": m.id, "type": m.type, "service": m.service} for m in node.models],
        "last_seen": node.last_seen,
        "seen_s_ago": round(max(0.0, now - node.last_seen), 1),
        "online": is_online(node.last_seen, now),
        "connected": connected,
    }


def parse_expiry(value: object, now: float) -> float | None:
    """``"30d"`` (from now), seconds from now as a number, or None/"never"."""
    if value is None or value == "never":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return now + float(value)
    if isinstance(value, str):
        try:
            return now + parse_duration(value)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="expires") from None
    raise InvalidRequest("expires is a duration such as '30d', or seconds", param="expires")


def parse_grace(value: object) -> float:
    """A rotation's grace: ``"24h"``, seconds as a number, or ``0``/``"0"`` (none)."""
    if value in (0, "0"):
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 10**9:
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="grace") from None
    raise InvalidRequest("grace is a duration such as '24h', or seconds", param="grace")


def parse_since(value: str | None, now: float) -> int | None:
    """A usage window bound: epoch milliseconds, or a duration back from now (``7d``)."""
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
    try:
        return int((now - parse_duration(value)) * 1000)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None


class AdminOps:
    """The control plane's operations over a store; ``connected`` says who is on this relay."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        connected: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._connected = connected

    def _cluster(self, ref: str | None) -> Cluster:
        if not ref:
            raise InvalidRequest("Name the cluster ('cluster').", param="cluster")
        cluster = self.store.cluster(ref)
        if cluster is None:
            if sum(c.name == ref for c in self.store.clusters()) > 1:
                raise InvalidRequest(
                    f"Several clusters are named '{ref}' (each owner names theirs): "
                    "name it by its id.",
                    param="cluster",
                    code="cluster_ambiguous",
                )
            raise NotFound(f"No cluster '{ref}'.", code="cluster_not_found")
        return cluster

    def _key(self, ref: str) -> ApiKey:
        key = self.store.key(ref) if ref else None
        if key is None:
            raise NotFound(f"No API key '{ref}'.", code="key_not_found")
        return key

    def _names(self) -> dict[str, str]:
        return {c.id: c.name for c in self.store.clusters()}

    # -- clusters --

    def clusters(self) -> list[JSON]:
        """Every cluster; ``suspended``: its owner is disabled (``relay.revocation``)."""
        suspended = self.store.suspended_clusters()
        return [{**cluster_json(c), "suspended": c.id in suspended} for c in self.store.clusters()]

    def create_cluster(self, name: str, token: str | None = None) -> JSON:
        """A cluster nobody owns (its name unique among those)."""
        return self._create_cluster(name, token, None)

    def _create_cluster(self, name: str, token: str | None, owner_id: str | None) -> JSON:
        """A cluster of ``owner_id`` (a user; names are unique per owner), or of nobody."""
        try:
            cluster, secret = self.store.create_cluster(
                name, token, now=self.clock(), owner_id=owner_id
            )
        except StoreError as exc:
            raise InvalidRequest(str(exc), param="name") from None
        return {**cluster_json(cluster), "token": None if token else secret}

    def rotate_cluster(
        self, cluster: str, grace: object = DEFAULT_GRACE, token: str | None = None
    ) -> JSON:
        """A new join token for ``cluster``: ``token`` (a LAN cluster's, from ``quorum token
        new``), or a fresh one (in the answer once); the previous one is still accepted for
        ``grace`` (``"24h"``, seconds, or ``0``), or until ``finish_rotation``."""
        target, now = self._cluster(cluster), self.clock()
        grace_s = parse_grace(grace)
        try:
            made = self.store.rotate_cluster_token(target.id, token, grace_s=grace_s, now=now)
        except StoreError as exc:
            raise InvalidRequest(str(exc), param="token" if token else None) from None
        return {
            **cluster_json(target),
            "token": None if token else made,
            "previous_accepted_until": now + grace_s,
            "previous_accepted_until_iso": _iso(now + grace_s),
        }

    def finish_rotation(self, cluster: str) -> JSON:
        """Refuse the cluster's previous tokens (and their certificates) from now on."""
        target = self._cluster(cluster)
        ended = self.store.finish_rotation(target.id, now=self.clock())
        return {**cluster_json(target), "ended": ended}

    # -- keys --

    def keys(self, cluster: str | None = None, include_revoked: bool = False) -> list[JSON]:
        cluster_id = self._cluster(cluster).id if cluster else None
        names, now = self._names(), self.clock()
        return [
            key_json(k, names.get(k.cluster_id, "?"), now)
            for k in self.store.keys(cluster_id)
            if include_revoked or k.revoked_at is None
        ]

    def key(self, ref: str) -> JSON:
        key = self._key(ref)
        return key_json(key, self._names().get(key.cluster_id, "?"), self.clock())

    def create_key(
        self,
        cluster: str | None,
        name: str = "",
        models: tuple[str, ...] | None = None,
        expires: object = None,
    ) -> JSON:
        target, now = self._cluster(cluster), self.clock()
        if models is not None and (not models or not all(isinstance(m, str) and m for m in models)):
            raise InvalidRequest("models is a list of model names, or null for all", param="models")
        key, secret = self.store.create_key(
            target.id,
            name=name.strip(),
            models=models,
            expires_at=parse_expiry(expires, now),
            now=now,
        )
        return {**key_json(key, target.name, now), "key": secret}

    def revoke_key(self, ref: str) -> JSON:
        key = self.store.revoke_key(self._key(ref).id, now=self.clock())
        return key_json(key, self._names().get(key.cluster_id, "?"), self.clock())

    def rotate_key(self, ref: str, expires: object = "keep") -> JSON:
        old, now = self._key(ref), self.clock()
        expires_at = old.expires_at if expires == "keep" else parse_expiry(expires, now)
        try:
            key, secret = self.store.rotate_key(old.id, now=now, expires_at=expires_at)
        except StoreError as exc:
            raise InvalidRequest(str(exc)) from None
        return {
            **key_json(key, self._names().get(key.cluster_id, "?"), now),
            "key": secret,
            "replaces": old.id,
        }

    # -- nodes and usage --

    def nodes(self, cluster: str | None = None) -> list[JSON]:
        cluster_id = self._cluster(cluster).id if cluster else None
        names, now = self._names(), self.clock()
        return [
            node_json(
                n,
                names.get(n.cluster_id, "?"),
                now,
                None if self._connected is None else self._connected(n.cluster_id, n.node_id),
            )
            for n in self.store.nodes(cluster_id)
        ]

    def remove_node(self, cluster: str, node_id: str) -> JSON:
        """Refuse ``node_id``'s key from now on (and any connection under that id without
        a new key); ``removed`` is False for a node id that never joined with a key."""
        target = self._cluster(cluster)
        removed = self.store.remove_node(target.id, node_id, now=self.clock())
        return {
            "cluster": target.name,
            "cluster_id": target.id,
            "node_id": node_id,
            "removed": removed,
        }

    def usage(
        self, cluster: str | None, by: str, since: str | None = None, until: str | None = None
    ) -> JSON:
        target, now = self._cluster(cluster), self.clock()
        try:
            grouping = UsageBy(by)
        except ValueError:
            raise InvalidRequest(
                f"'by' is one of {', '.join(b.value for b in UsageBy)}", param="by"
            ) from None
        since_ms, until_ms = parse_since(since, now), parse_since(until, now)
        groups = self.store.usage(target.id, grouping, since_ms=since_ms, until_ms=until_ms)
        key_names = (
            {k.id: (k.shown, k.name) for k in self.store.keys(target.id)}
            if grouping is UsageBy.KEY
            else {}
        )
        rows = []
        for g in groups:
            row = usage_row(grouping, g)
            if grouping is UsageBy.KEY and g.group in key_names:
                row["prefix"], row["name"] = key_names[g.group]
            rows.append(row)
        return {
            "cluster": target.name,
            "by": grouping.value,
            "since_ms": since_ms,
            "until_ms": until_ms,
            "data": rows,
        }

    def usage_records(self, cluster: str | None, limit: int = 100) -> list[JSON]:
        target = self._cluster(cluster)
        records = self.store.usage_records(target.id, limit=max(1, min(limit, 1000)))
        return [dataclasses.asdict(r) for r in records]
