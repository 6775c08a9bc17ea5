"""The default store: SQLite in WAL mode, one connection behind a lock.

Schema changes are numbered migrations, applied in order at open, each in
its own transaction. The SQL sticks to what PostgreSQL also accepts
(``ON CONFLICT ... DO NOTHING``/``DO UPDATE``, ``DOUBLE PRECISION``,
``BIGINT``), so a PostgreSQL store can reuse the statements. Callers on an
event loop reach it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime
import hmac
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quorum.errors import RemoteProtocolError, StoreError
from quorum.protocol import ModelInfo, RequestUsage
from quorum.secure.cluster import ClusterCA, ca_id
from relay.cluster_tokens import ClusterTokens
from relay.cluster_tokens import new_token as new_token  # pg_store imports it from here
from relay.keys import new_key, secret_hash
from relay.migrations import MIGRATIONS, REBUILDS
from relay.node_keys import ClusterCAs, NodeKeys
from relay.sqlite_users import UserTables
from relay.store import (
    ApiKey,
    Cluster,
    NodeSeen,
    UsageBy,
    UsageGroup,
    UsagePoint,
    by_ref,
)

_KEY_COLUMNS = (
    "id, cluster_id, name, prefix, models, expires_at, created_at, last_used_at, revoked_at"
)
_USAGE_COLUMNS = (
    "request_id, time_ms, model, endpoint, route, node, status, duration_ms, ttfb_ms, "
    "prompt_tokens, completion_tokens, key_id, error"
)
_GROUP_COLUMN = {
    UsageBy.MODEL: "model",
    UsageBy.NODE: "node",
    UsageBy.KEY: "key_id",
    UsageBy.DAY: "day",
}
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


def _private(path: Path) -> None:
    """Create the store file readable by its owner alone (SQLite gives its -wal and -shm
    files the same mode); tighten an existing one."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change: SQLite says what is wrong when it opens it


class SqliteStore(NodeKeys, ClusterCAs, ClusterTokens, UserTables):
    """The ``Store`` interface on one SQLite file; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "relay.sqlite3"
        _private(self.path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")  # the CLI may write while it runs
            self._migrate()
            self.check()
        except (sqlite3.DatabaseError, StoreError) as exc:
            self._db.close()
            raise exc if isinstance(exc, StoreError) else self._damaged(exc) from None

    def _damaged(self, why: object) -> StoreError:
        return StoreError(
            f"the relay's store {self.path} is damaged ({why}). Stop the relay, then restore "
            f"the file from a backup, or move it aside to start afresh (its clusters, keys and "
            f"usage are then gone): mv {self.path} {self.path}.damaged"
        )

    def check(self) -> None:
        """Raise ``StoreError`` (saying how to restore it) unless the file reads whole.

        A connection of its own, read-only: the store's connection may answer from its
        page cache what the disk no longer holds.
        """
        try:
            probe = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None
        try:
            row = probe.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        finally:
            probe.close()
        if row is None or row[0] != "ok":
            raise self._damaged(row[0] if row else "no answer to an integrity check")

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            for version, sql in enumerate(MIGRATIONS, start=1):
                # Re-read inside the write transaction: the CLI and a running relay may
                # open the same file at once, and only one of them applies each step.
                rebuild = version in REBUILDS  # foreign keys off: only outside a transaction
                if rebuild:
                    self._db.execute("PRAGMA foreign_keys=OFF")
                try:
                    self._step(version, sql, rebuild)
                finally:
                    if rebuild:
                        self._db.execute("PRAGMA foreign_keys=ON")

    def _step(self, version: int, sql: str, rebuild: bool) -> None:
        """Apply one migration unless another process did (under the store's lock)."""
        self._db.execute("BEGIN IMMEDIATE")
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if (row[0] or 0) >= version:
            self._db.execute("COMMIT")
            return
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if rebuild and self._db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise StoreError(f"migration {version} would break a foreign key; not applied")
            self._db.execute("INSERT INTO schema_version VALUES (?)", (version,))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- clusters -------------------------------------------------------------

    def create_cluster(
        self, name: str, token: str | None = None, *, now: float, owner_id: str | None = None
    ) -> tuple[Cluster, str]:
        if not name.strip():
            raise StoreError("a cluster needs a name")
        token = token or new_token()
        if len(token) < 16:
            raise StoreError("a join token has at least 16 characters")
        cluster = Cluster(uuid.uuid4().hex, name.strip(), now)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO clusters (id, name, token_hash, created_at, owner_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (cluster.id, cluster.name, secret_hash(token), cluster.created_at, owner_id),
                )
            except sqlite3.IntegrityError as exc:
                what = "name" if "name" in str(exc) else "token"
                raise StoreError(f"a cluster with this {what} exists already") from None
        ca = ClusterCA.from_token(token)  # its public key: members join without the token
        self.set_cluster_ca(cluster.id, ca_id(ca.key.public_key()), ca.public_key_pem)
        return cluster, token

    def clusters(self) -> list[Cluster]:
        rows = self._all("SELECT id, name, created_at FROM clusters ORDER BY name")
        return [Cluster(*row) for row in rows]

    def cluster(self, ref: str) -> Cluster | None:
        rows = self._all(
            "SELECT id, name, created_at FROM clusters WHERE id = ? OR name = ?", (ref, ref)
        )
        return by_ref([Cluster(*row) for row in rows], ref)

    def cluster_for_token(self, token: str) -> Cluster | None:
        digest = secret_hash(token)
        row = self._one(
            "SELECT id, name, created_at, token_hash FROM clusters WHERE token_hash = ?", (digest,)
        )
        if row is None or not hmac.compare_digest(row[3], digest):
            return None
        return Cluster(row[0], row[1], row[2])

    # -- API keys -------------------------------------------------------------

    def create_key(
        self,
        cluster_id: str,
        *,
        name: str,
        models: tuple[str, ...] | None,
        expires_at: float | None,
        now: float,
    ) -> tuple[ApiKey, str]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                made = self._insert_key(cluster_id, name, models, expires_at, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return made

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
            rows = self._all(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            rows = self._all(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE cluster_id = ? ORDER BY created_at, id",
                (cluster_id,),
            )
        return [_api_key(r) for r in rows]

    def key(self, ref: str) -> ApiKey | None:
        prefix = ref.removeprefix("qk_")
        row = self._one(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ? OR prefix = ?", (ref, prefix)
        )
        return None if row is None else _api_key(row)

    def key_for_secret(self, key: str) -> ApiKey | None:
        digest = secret_hash(key)
        row = self._one(
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
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
                ).fetchone()
                if row is None:
                    raise StoreError("no such key")
                old = _api_key(row)
                if old.revoked_at is not None:
                    raise StoreError("the key is revoked already; create a new one")
                self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
                made = self._insert_key(old.cluster_id, old.name, old.models, expires_at, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return made

    def touch_key(self, key_id: str, *, now: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                (now, key_id, now - TOUCH_EVERY_S),
            )

    # -- presence -------------------------------------------------------------

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
            rows = self._all(sql + " ORDER BY cluster_id, name, node_id")
        else:
            rows = self._all(sql + " WHERE cluster_id = ? ORDER BY name, node_id", (cluster_id,))
        return [_node(r) for r in rows]

    # -- usage ----------------------------------------------------------------

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
        with self._lock:
            self._db.execute("BEGIN")
            try:
                cursor = self._db.executemany(
                    "INSERT INTO usage_records (cluster_id, request_id, time_ms, day, key_id, "
                    "model, endpoint, route, node, status, prompt_tokens, completion_tokens, "
                    "ttfb_ms, duration_ms, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (cluster_id, request_id) DO NOTHING",
                    rows,
                )
                accepted = max(cursor.rowcount, 0)
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
        rows = self._all(
            f"SELECT {column}, COUNT(*), "
            "SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "AVG(duration_ms), AVG(ttfb_ms) FROM usage_records "
            "WHERE cluster_id = ? AND time_ms >= ? AND time_ms < ? "
            f"GROUP BY {column} ORDER BY {column}",
            (cluster_id, since_ms or 0, until_ms if until_ms is not None else 2**62),
        )
        return [UsageGroup(*row) for row in rows]

    def usage_records(self, cluster_id: str, *, limit: int = 100) -> list[RequestUsage]:
        rows = self._all(
            f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE cluster_id = ? "
            "ORDER BY time_ms DESC, request_id LIMIT ?",
            (cluster_id, limit),
        )
        return [RequestUsage(*row) for row in rows]

    def usage_series(self, cluster_id: str, *, since_ms: int, bucket_ms: int) -> list[UsagePoint]:
        if bucket_ms < 1:
            raise StoreError("a bucket lasts at least one millisecond")
        rows = self._all(
            "SELECT (time_ms / ?) * ? AS bucket, model, node, key_id, COUNT(*), "
            "SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(ttfb_ms), 0), COUNT(ttfb_ms) FROM usage_records "
            "WHERE cluster_id = ? AND time_ms >= ? "
            "GROUP BY bucket, model, node, key_id ORDER BY bucket, model, node, key_id",
            (bucket_ms, bucket_ms, cluster_id, since_ms),
        )
        return [UsagePoint(*row) for row in rows]
