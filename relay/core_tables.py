"""The store's core tables (clusters, API keys, presence, usage) as portable mixins.

Both stores run this SQL through ``self._db`` under ``self._lock``
(``relay.sqlite_tables``): a SQLite connection in ``SqliteStore``, a
``relay.pg_compat`` pool in ``PostgresStore``. The SQL is what both accept:
``ON CONFLICT ... DO NOTHING``/``DO UPDATE``, ``NULLS FIRST`` (SQLite 3.30),
``CAST(? AS BIGINT)``. Writes that read first run in one ``BEGIN IMMEDIATE``
transaction, which on PostgreSQL also takes the writers' advisory lock, so
relays sharing a store take turns as SQLite's writers do. Rules kept:

- Usage is exactly-once per (cluster, request id): the primary key and ``ON
  CONFLICT DO NOTHING``; the count accepted is the rows the statement inserted
  (its row count, on both), so a record two relays store at once counts once.
- A clash of API key prefixes draws again (the store turns a violated constraint
  into ``sqlite3.IntegrityError``, which undoes that statement alone).
- Sums come back as numbers of Python's own (``int``, ``float``, or None).
"""

from __future__ import annotations

import datetime
import hmac
import json
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from quorum.errors import RemoteProtocolError, StoreError
from quorum.protocol import ModelInfo, RequestUsage
from quorum.secure.cluster import ClusterCA, ca_id
from relay.cluster_tokens import new_token
from relay.keys import new_key, secret_hash
from relay.sqlite_tables import Tables
from relay.store import ApiKey, Cluster, NodeSeen, UsageBy, UsageGroup, UsagePoint, by_ref

_KEY_COLUMNS = (
    "id, cluster_id, name, prefix, models, expires_at, created_at, last_used_at, revoked_at"
)
_USAGE_COLUMNS = (
    "request_id, time_ms, model, endpoint, route, node, status, duration_ms, ttfb_ms, "
    "prompt_tokens, completion_tokens, key_id, error"
)
_USAGE_INSERT = (
    "INSERT INTO usage_records (cluster_id, request_id, time_ms, day, key_id, model, "
    "endpoint, route, node, status, prompt_tokens, completion_tokens, ttfb_ms, duration_ms, "
    "error) VALUES "
)
_GROUP_COLUMN = {
    UsageBy.MODEL: "model",
    UsageBy.NODE: "node",
    UsageBy.KEY: "key_id",
    UsageBy.DAY: "day",
}
_USAGE_BATCH = 1000  # rows per INSERT: 15,000 parameters, under both databases' limits
TOUCH_EVERY_S = 60.0


def utc_day(time_ms: int) -> str:
    return datetime.datetime.fromtimestamp(time_ms / 1000, datetime.UTC).strftime("%Y-%m-%d")


def _api_key(row: Sequence[Any]) -> ApiKey:
    models = None if row[4] is None else tuple(json.loads(row[4]))
    return ApiKey(row[0], row[1], row[2], row[3], models, *row[5:9])


def _node(row: Sequence[Any]) -> NodeSeen:
    try:
        models = tuple(ModelInfo.decode(json.dumps(m).encode()) for m in json.loads(row[3]))
    except (ValueError, RemoteProtocolError):
        models = ()
    return NodeSeen(row[0], row[1], row[2], models, row[4])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class Clusters(Tables):
    def create_cluster(
        self, name: str, token: str | None = None, *, now: float, owner_id: str | None = None
    ) -> tuple[Cluster, str]:
        if not name.strip():
            raise StoreError("a cluster needs a name")
        token = token or new_token()
        if len(token) < 16:
            raise StoreError("a join token has at least 16 characters")
        cluster = Cluster(uuid.uuid4().hex, name.strip(), now)
        ca = ClusterCA.from_token(token)  # its public key: members join without the token
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO clusters (id, name, token_hash, created_at, ca_id, ca_key, "
                    "owner_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        cluster.id,
                        cluster.name,
                        secret_hash(token),
                        cluster.created_at,
                        ca_id(ca.key.public_key()),
                        ca.public_key_pem,
                        owner_id,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                what = "name" if "name" in str(exc) else "token"
                raise StoreError(f"a cluster with this {what} exists already") from None
        return cluster, token

    def clusters(self) -> list[Cluster]:
        rows = self._rows("SELECT id, name, created_at FROM clusters ORDER BY name")
        return [Cluster(*row) for row in rows]

    def cluster(self, ref: str) -> Cluster | None:
        rows = self._rows(
            "SELECT id, name, created_at FROM clusters WHERE id = ? OR name = ?", (ref, ref)
        )
        return by_ref([Cluster(*row) for row in rows], ref)

    def cluster_for_token(self, token: str) -> Cluster | None:
        digest = secret_hash(token)
        row = self._row(
            "SELECT id, name, created_at, token_hash FROM clusters WHERE token_hash = ?", (digest,)
        )
        if row is None or not hmac.compare_digest(row[3], digest):
            return None
        return Cluster(row[0], row[1], row[2])


class ApiKeys(Tables):
    def create_key(
        self,
        cluster_id: str,
        *,
        name: str,
        models: tuple[str, ...] | None,
        expires_at: float | None,
        now: float,
    ) -> tuple[ApiKey, str]:
        return self._write(lambda: self._insert_key(cluster_id, name, models, expires_at, now))

    def _insert_key(
        self,
        cluster_id: str,
        name: str,
        models: tuple[str, ...] | None,
        expires_at: float | None,
        now: float,
    ) -> tuple[ApiKey, str]:
        """Within a transaction, under the lock."""
        known = self._db.execute("SELECT 1 FROM clusters WHERE id = ?", (cluster_id,)).fetchone()
        if known is None:
            raise StoreError("no such cluster")
        for _ in range(8):  # a clash of 32-bit prefixes: draw again
            secret, prefix = new_key()
            key = ApiKey(uuid.uuid4().hex, cluster_id, name, prefix, models, expires_at, now)
            try:
                self._db.execute(
                    "INSERT INTO api_keys (id, cluster_id, name, prefix, key_hash, models, "
                    "expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key.id,
                        cluster_id,
                        name,
                        prefix,
                        secret_hash(secret),
                        None if models is None else json.dumps(list(models)),
                        expires_at,
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                continue
            return key, secret
        raise StoreError("could not draw a unique key prefix")

    def keys(self, cluster_id: str | None = None) -> list[ApiKey]:
        if cluster_id is None:
            rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            rows = self._rows(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE cluster_id = ? ORDER BY created_at, id",
                (cluster_id,),
            )
        return [_api_key(r) for r in rows]

    def key(self, ref: str) -> ApiKey | None:
        prefix = ref.removeprefix("qk_")
        row = self._row(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ? OR prefix = ?", (ref, prefix)
        )
        return None if row is None else _api_key(row)

    def key_for_secret(self, key: str) -> ApiKey | None:
        digest = secret_hash(key)
        row = self._row(
            f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_hash = ?", (digest,)
        )
        if row is None or not hmac.compare_digest(row[9], digest):
            return None
        return _api_key(row)

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
        key = self.key(key_id)
        if key is None:
            raise StoreError("no such key")
        return key

    def rotate_key(
        self, key_id: str, *, now: float, expires_at: float | None
    ) -> tuple[ApiKey, str]:
        def rotate() -> tuple[ApiKey, str]:
            row = self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise StoreError("no such key")
            old = _api_key(row)
            if old.revoked_at is not None:
                raise StoreError("the key is revoked already; create a new one")
            self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
            return self._insert_key(old.cluster_id, old.name, old.models, expires_at, now)

        return self._write(rotate)

    def touch_key(self, key_id: str, *, now: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                (now, key_id, now - TOUCH_EVERY_S),
            )


class NodesSeen(Tables):
    def record_presence(self, seen: Sequence[NodeSeen]) -> None:
        rows = [
            (
                s.cluster_id,
                s.node_id,
                s.name,
                json.dumps([json.loads(m.encode()) for m in s.models]),
                s.last_seen,
            )
            for s in seen
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO nodes (cluster_id, node_id, name, models, last_seen) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (cluster_id, node_id) DO UPDATE SET "
                    "name = excluded.name, models = excluded.models, "
                    "last_seen = excluded.last_seen",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def nodes(self, cluster_id: str | None = None) -> list[NodeSeen]:
        sql = "SELECT cluster_id, node_id, name, models, last_seen FROM nodes"
        if cluster_id is None:
            rows = self._rows(sql + " ORDER BY cluster_id, name, node_id")
        else:
            rows = self._rows(sql + " WHERE cluster_id = ? ORDER BY name, node_id", (cluster_id,))
        return [_node(r) for r in rows]


class Usage(Tables):
    def add_usage(self, cluster_id: str, records: Sequence[RequestUsage]) -> tuple[int, int]:
        rows = [
            (
                cluster_id,
                r.request_id,
                r.time_ms,
                utc_day(r.time_ms),
                r.key_id,
                r.model,
                r.endpoint,
                r.route,
                r.node,
                r.status,
                r.prompt_tokens,
                r.completion_tokens,
                r.ttfb_ms,
                r.duration_ms,
                r.error,
            )
            for r in records
        ]
        accepted = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for start in range(0, len(rows), _USAGE_BATCH):
                    batch = rows[start : start + _USAGE_BATCH]
                    values = ", ".join(["(" + ", ".join(["?"] * 15) + ")"] * len(batch))
                    # A request id twice in the batch, or stored meanwhile by another relay,
                    # is skipped by DO NOTHING and not counted in the rows it changed.
                    cursor = self._db.execute(
                        _USAGE_INSERT + values + " ON CONFLICT (cluster_id, request_id) DO NOTHING",
                        [v for row in batch for v in row],
                    )
                    accepted += max(cursor.rowcount, 0)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return accepted, len(rows) - accepted

    def usage(
        self,
        cluster_id: str,
        by: UsageBy,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[UsageGroup]:
        column = _GROUP_COLUMN[by]
        rows = self._rows(
            f"SELECT {column}, COUNT(*), "
            "SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "AVG(duration_ms), AVG(ttfb_ms) FROM usage_records "
            "WHERE cluster_id = ? AND time_ms >= ? AND time_ms < ? "
            f"GROUP BY {column} ORDER BY {column} NULLS FIRST",
            (cluster_id, since_ms or 0, until_ms if until_ms is not None else 2**62),
        )
        return [
            UsageGroup(g, int(n), int(e), int(p), int(c), _float(d), _float(t))
            for g, n, e, p, c, d, t in rows
        ]

    def usage_records(self, cluster_id: str, *, limit: int = 100) -> list[RequestUsage]:
        rows = self._rows(
            f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE cluster_id = ? "
            "ORDER BY time_ms DESC, request_id LIMIT ?",
            (cluster_id, limit),
        )
        return [RequestUsage(*row) for row in rows]

    def usage_series(self, cluster_id: str, *, since_ms: int, bucket_ms: int) -> list[UsagePoint]:
        if bucket_ms < 1:
            raise StoreError("a bucket lasts at least one millisecond")
        rows = self._rows(
            "SELECT (time_ms / CAST(? AS BIGINT)) * CAST(? AS BIGINT) AS bucket, model, node, "
            "key_id, COUNT(*), "
            "SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(ttfb_ms), 0), COUNT(ttfb_ms) FROM usage_records "
            "WHERE cluster_id = ? AND time_ms >= ? "
            "GROUP BY bucket, model, node, key_id "
            "ORDER BY bucket, model, node, key_id NULLS FIRST",
            (bucket_ms, bucket_ms, cluster_id, since_ms),
        )
        return [
            UsagePoint(int(b), m, n, k, int(r), int(e), int(p), int(c), float(ts), int(tc))
            for b, m, n, k, r, e, p, c, ts, tc in rows
        ]


class CoreTables(Clusters, ApiKeys, NodesSeen, Usage):
    """The ``Store`` methods of clusters, API keys, presence and usage."""
