"""The store several relays share: PostgreSQL, through a pool of psycopg 3 connections.

The same interface (``relay.store.Store``) and the same numbered migrations as
the SQLite store (``relay.migrations``; ``_DIALECT_TEXT`` replaces an entry only
where its portable text means something else here: the first migration's
``REAL`` is SQLite's 8-byte float but PostgreSQL's 4-byte one, too coarse for
a time), so a relay moves from one
store to the other without a change anywhere else. Rules it keeps, with
several relays writing at once:

- Migrations run in one transaction under an advisory lock: relays that
  start together apply each step once.
- Usage is exactly-once per (cluster, request id) by the primary key and
  ``ON CONFLICT DO NOTHING``; the count of accepted records is what the
  statement inserted, so a record two relays store at once counts once.
- A node id's key is bound under a lock on its cluster's row, so two relays
  binding the same id at once agree on which key won.
- PostgreSQL errors never leave this module: a refused operation is a
  ``StoreError`` saying what was refused, an unreachable server one saying
  where it was looked for (the URL without its password).

Calls block (the relay reaches the store through ``asyncio.to_thread``, as
it does SQLite); the pool holds at most ``max_size`` connections.
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from quorum.errors import RemoteProtocolError, StoreError
from quorum.protocol import ModelInfo, RequestUsage
from quorum.secure.cluster import ClusterCA, ca_id
from relay.cluster_tokens import ClusterTokens
from relay.keys import new_key, secret_hash
from relay.migrations import CLUSTER_NAMES_PG, MIGRATIONS
from relay.node_keys import Binding, NodeKey
from relay.pg_compat import PoolConnection
from relay.sqlite_store import TOUCH_EVERY_S, new_token, utc_day
from relay.sqlite_users import UserTables
from relay.store import ApiKey, Cluster, NodeSeen, UsageBy, UsageGroup, UsagePoint, by_ref

log = logging.getLogger("relay.store")

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
_MIGRATION_LOCK = 0x51_0E_5C  # pg_advisory_xact_lock's key for schema changes
_USAGE_BATCH = 1000  # rows per INSERT: 15 parameters each, well under PostgreSQL's 65535
CONNECT_TIMEOUT_S = 10.0
_DIALECT_TEXT = {1: MIGRATIONS[0].replace(" REAL ", " DOUBLE PRECISION "), 8: CLUSTER_NAMES_PG}


def migration_text(version: int) -> str | None:
    """The SQL of migration ``version`` (1-based) for PostgreSQL; None past the last."""
    if not 1 <= version <= len(MIGRATIONS):
        return None
    return _DIALECT_TEXT.get(version, MIGRATIONS[version - 1])


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


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


class PostgresStore(ClusterTokens, UserTables):
    """The ``Store`` interface on a PostgreSQL database (``postgresql://...``).

    The core tables are written here with PostgreSQL's own locking; the tables the
    SQLite store keeps in mixins (token rotation, users) reuse those mixins, run through
    ``relay.pg_compat`` (the part of a SQLite connection they use, on this pool)."""

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self._where = redacted(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S)},
            name="relay-store",
        )
        compat = PoolConnection(self._pool, self._unreachable)
        # What the mixins take for a SQLite connection and its lock (relay.pg_compat).
        self._db = cast(sqlite3.Connection, compat)
        self._lock = cast(threading.Lock, compat.lock)
        try:
            # One connection first: a server that refuses is said at once (the pool retries).
            psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self._migrate()
        except (psycopg.Error, PoolTimeout, StoreError) as exc:
            self._pool.close()
            if isinstance(exc, StoreError):
                raise
            raise self._unreachable(exc) from None

    def _unreachable(self, why: object) -> StoreError:
        return StoreError(
            f"the relay's PostgreSQL store at {self._where} cannot be used ({why}). Check that "
            "the server runs and that this URL's user may connect and create tables."
        )

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction: committed on leaving, rolled back on an error.
        PostgreSQL's own errors come out as ``StoreError``."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unreachable(exc) from None
        except psycopg.DatabaseError as exc:
            if isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.ForeignKeyViolation):
                raise  # the caller says which
            raise StoreError(f"the store refused the operation: {exc}") from None

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._tx() as cur:
            return cur.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._tx() as cur:
            return cur.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self._tx() as cur:
            # One relay at a time; the others find each step applied when they get the lock.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            row = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()
            done = (row[0] if row else 0) or 0
            version = done
            while (sql := migration_text(version + 1)) is not None:
                version += 1
                cur.execute(sql)  # several statements, no parameters: the simple query protocol
                cur.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        if version > done:
            log.info("store at %s migrated from version %d to %d", self._where, done, version)

    @property
    def schema_version(self) -> int:
        row = self._one("SELECT MAX(version) FROM schema_version")
        return int(row[0] or 0)

    def check(self) -> None:
        """Raise ``StoreError`` unless the server answers and the schema is there."""
        row = self._one("SELECT MAX(version) FROM schema_version")
        if row is None or not row[0]:
            raise StoreError(f"the store at {self._where} has no schema; restart the relay")

    def close(self) -> None:
        self._pool.close()

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
        ca = ClusterCA.from_token(token)  # its public key: members join without the token
        try:
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO clusters (id, name, token_hash, created_at, ca_id, ca_key, "
                    "owner_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        except psycopg.errors.UniqueViolation as exc:
            constraint = exc.diag.constraint_name or ""
            what = "name" if "name" in constraint else "token"
            raise StoreError(f"a cluster with this {what} exists already") from None
        return cluster, token

    def clusters(self) -> list[Cluster]:
        rows = self._all("SELECT id, name, created_at FROM clusters ORDER BY name")
        return [Cluster(*row) for row in rows]

    def cluster(self, ref: str) -> Cluster | None:
        rows = self._all(
            "SELECT id, name, created_at FROM clusters WHERE id = %s OR name = %s", (ref, ref)
        )
        return by_ref([Cluster(*row) for row in rows], ref)

    def cluster_for_token(self, token: str) -> Cluster | None:
        digest = secret_hash(token)
        row = self._one(
            "SELECT id, name, created_at, token_hash FROM clusters WHERE token_hash = %s",
            (digest,),
        )
        if row is None or not hmac.compare_digest(row[3], digest):
            return None
        return Cluster(row[0], row[1], row[2])

    def set_cluster_ca(self, cluster_id: str, ca_id: str, ca_key_pem: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE clusters SET ca_id = %s, ca_key = %s WHERE id = %s",
                (ca_id, ca_key_pem, cluster_id),
            )

    def cluster_ca(self, cluster_id: str) -> str | None:
        row = self._one("SELECT ca_key FROM clusters WHERE id = %s", (cluster_id,))
        return str(row[0]) if row and row[0] else None

    def cluster_for_ca(self, ca_id: str) -> tuple[str, str, float, str] | None:
        row = self._one(
            "SELECT id, name, created_at, ca_key FROM clusters WHERE ca_id = %s", (ca_id,)
        )
        return None if row is None or not row[3] else (row[0], row[1], row[2], row[3])

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
        with self._tx() as cur:
            return self._insert_key(cur, cluster_id, name, models, expires_at, now)

    def _insert_key(
        self,
        cur: psycopg.Cursor[Any],
        cluster_id: str,
        name: str,
        models: tuple[str, ...] | None,
        expires_at: float | None,
        now: float,
    ) -> tuple[ApiKey, str]:
        """Within the caller's transaction."""
        if cur.execute("SELECT 1 FROM clusters WHERE id = %s", (cluster_id,)).fetchone() is None:
            raise StoreError("no such cluster")
        for _ in range(8):  # a clash of 32-bit prefixes: draw again
            secret, prefix = new_key()
            key = ApiKey(uuid.uuid4().hex, cluster_id, name, prefix, models, expires_at, now)
            try:
                with cur.connection.transaction():  # a savepoint: a clash undoes this alone
                    cur.execute(
                        "INSERT INTO api_keys (id, cluster_id, name, prefix, key_hash, models, "
                        "expires_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
            except psycopg.errors.UniqueViolation:
                continue
            return key, secret
        raise StoreError("could not draw a unique key prefix")

    def keys(self, cluster_id: str | None = None) -> list[ApiKey]:
        if cluster_id is None:
            rows = self._all(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            rows = self._all(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE cluster_id = %s "
                "ORDER BY created_at, id",
                (cluster_id,),
            )
        return [_api_key(r) for r in rows]

    def key(self, ref: str) -> ApiKey | None:
        prefix = ref.removeprefix("qk_")
        row = self._one(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s OR prefix = %s", (ref, prefix)
        )
        return None if row is None else _api_key(row)

    def key_for_secret(self, key: str) -> ApiKey | None:
        digest = secret_hash(key)
        row = self._one(
            f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_hash = %s", (digest,)
        )
        if row is None or not hmac.compare_digest(row[9], digest):
            return None
        return _api_key(row)

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        with self._tx() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (now, key_id),
            )
        key = self.key(key_id)
        if key is None:
            raise StoreError("no such key")
        return key

    def rotate_key(
        self, key_id: str, *, now: float, expires_at: float | None
    ) -> tuple[ApiKey, str]:
        with self._tx() as cur:
            row = cur.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s FOR UPDATE", (key_id,)
            ).fetchone()
            if row is None:
                raise StoreError("no such key")
            old = _api_key(row)
            if old.revoked_at is not None:
                raise StoreError("the key is revoked already; create a new one")
            cur.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s", (now, key_id))
            return self._insert_key(cur, old.cluster_id, old.name, old.models, expires_at, now)

    def touch_key(self, key_id: str, *, now: float) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE api_keys SET last_used_at = %s WHERE id = %s "
                "AND (last_used_at IS NULL OR last_used_at < %s)",
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
        if not rows:
            return
        with self._tx() as cur:
            cur.executemany(
                "INSERT INTO nodes (cluster_id, node_id, name, models, last_seen) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (cluster_id, node_id) DO UPDATE SET "
                "name = excluded.name, models = excluded.models, last_seen = excluded.last_seen",
                rows,
            )

    def nodes(self, cluster_id: str | None = None) -> list[NodeSeen]:
        sql = "SELECT cluster_id, node_id, name, models, last_seen FROM nodes"
        if cluster_id is None:
            rows = self._all(sql + " ORDER BY cluster_id, name, node_id")
        else:
            rows = self._all(sql + " WHERE cluster_id = %s ORDER BY name, node_id", (cluster_id,))
        return [_node(r) for r in rows]

    # -- node identity keys -----------------------------------------------------

    def bind_node_key(
        self, cluster_id: str, node_id: str, fingerprint: str, *, now: float
    ) -> Binding:
        with self._tx() as cur:
            # Binds of one cluster take turns (relays may bind the same id at once).
            cur.execute("SELECT 1 FROM clusters WHERE id = %s FOR UPDATE", (cluster_id,))
            removed = cur.execute(
                "SELECT 1 FROM node_keys WHERE cluster_id = %s AND fingerprint = %s "
                "AND removed_at IS NOT NULL",
                (cluster_id, fingerprint),
            ).fetchone()
            if removed is not None:
                return Binding.REMOVED
            row = cur.execute(
                "SELECT fingerprint FROM node_keys WHERE cluster_id = %s AND node_id = %s "
                "AND removed_at IS NULL",
                (cluster_id, node_id),
            ).fetchone()
            if row is not None:
                return Binding.SAME if row[0] == fingerprint else Binding.OTHER
            cur.execute(
                "INSERT INTO node_keys (cluster_id, node_id, fingerprint, bound_at) "
                "VALUES (%s, %s, %s, %s)",
                (cluster_id, node_id, fingerprint, now),
            )
            return Binding.BOUND

    def remove_node(self, cluster_id: str, node_id: str, *, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE node_keys SET removed_at = %s WHERE cluster_id = %s AND node_id = %s "
                "AND removed_at IS NULL",
                (now, cluster_id, node_id),
            )
            return cur.rowcount > 0

    def node_keys(self, cluster_id: str | None = None) -> list[NodeKey]:
        sql = "SELECT cluster_id, node_id, fingerprint, bound_at, removed_at FROM node_keys"
        order = " ORDER BY node_id, bound_at"
        if cluster_id is None:
            rows = self._all(sql + order)
        else:
            rows = self._all(sql + " WHERE cluster_id = %s" + order, (cluster_id,))
        return [NodeKey(*row) for row in rows]

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
        accepted = 0
        with self._tx() as cur:
            for start in range(0, len(rows), _USAGE_BATCH):
                batch = rows[start : start + _USAGE_BATCH]
                values = ", ".join(["(" + ", ".join(["%s"] * 15) + ")"] * len(batch))
                # One statement per batch: a request id twice in it, or stored meanwhile by
                # another relay, is skipped by DO NOTHING and not counted by RETURNING.
                cur.execute(
                    "INSERT INTO usage_records (cluster_id, request_id, time_ms, day, key_id, "
                    "model, endpoint, route, node, status, prompt_tokens, completion_tokens, "
                    f"ttfb_ms, duration_ms, error) VALUES {values} "
                    "ON CONFLICT (cluster_id, request_id) DO NOTHING RETURNING 1",
                    [v for row in batch for v in row],
                )
                accepted += len(cur.fetchall())
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
            "WHERE cluster_id = %s AND time_ms >= %s AND time_ms < %s "
            f"GROUP BY {column} ORDER BY {column} NULLS FIRST",
            (cluster_id, since_ms or 0, until_ms if until_ms is not None else 2**62),
        )
        return [
            UsageGroup(g, int(n), int(e), int(p), int(c), _float(d), _float(t))
            for g, n, e, p, c, d, t in rows
        ]

    def usage_records(self, cluster_id: str, *, limit: int = 100) -> list[RequestUsage]:
        rows = self._all(
            f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE cluster_id = %s "
            "ORDER BY time_ms DESC, request_id LIMIT %s",
            (cluster_id, limit),
        )
        return [RequestUsage(*row) for row in rows]

    def usage_series(self, cluster_id: str, *, since_ms: int, bucket_ms: int) -> list[UsagePoint]:
        if bucket_ms < 1:
            raise StoreError("a bucket lasts at least one millisecond")
        rows = self._all(
            "SELECT (time_ms / %s::bigint) * %s::bigint AS bucket, model, node, key_id, "
            "COUNT(*), SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(ttfb_ms), 0), COUNT(ttfb_ms) FROM usage_records "
            "WHERE cluster_id = %s AND time_ms >= %s "
            "GROUP BY bucket, model, node, key_id "
            "ORDER BY bucket, model, node, key_id NULLS FIRST",
            (bucket_ms, bucket_ms, cluster_id, since_ms),
        )
        return [
            UsagePoint(int(b), m, n, k, int(r), int(e), int(p), int(c), float(ts), int(tc))
            for b, m, n, k, r, e, p, c, ts, tc in rows
        ]
