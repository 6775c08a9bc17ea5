"""The store several relays share: PostgreSQL, through a pool of psycopg 3 connections.

The same interface (``relay.store.Store``) and the same numbered migrations as
the SQLite store (``relay.migrations``; ``_DIALECT_TEXT`` replaces an entry only
where its portable text means something else here: the first migration's
``REAL`` is SQLite's 8-byte float but PostgreSQL's 4-byte one, too coarse for
a time), so a relay moves from one store to the other without a change
anywhere else. The tables are the SQLite store's own portable mixins, run
through ``relay.pg_compat``. Rules it keeps, with several relays writing at
once:

- Migrations run in one transaction under an advisory lock: relays that
  start together apply each step once.
- Usage is exactly-once per (cluster, request id) by the primary key and
  ``ON CONFLICT DO NOTHING``; the count of accepted records is what the
  statement inserted, so a record two relays store at once counts once.
- A write that reads first (binding a node id's key, rotating an API key...)
  runs in ``BEGIN IMMEDIATE``, which takes one advisory lock here: relays take
  turns, so two binding the same id at once agree on which key won.
- PostgreSQL errors never leave this module: a refused operation is a
  ``StoreError`` saying what was refused, an unreachable server one saying
  where it was looked for (the URL without its password).

Calls block (the relay reaches the store through ``asyncio.to_thread``, as
it does SQLite); the pool holds at most ``max_size`` connections.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from quorum.errors import StoreError
from relay.cluster_tokens import ClusterTokens
from relay.core_tables import CoreTables
from relay.migrations import CLUSTER_NAMES_PG, MIGRATIONS
from relay.node_keys import ClusterCAs, NodeKeys
from relay.pg_compat import PoolConnection
from relay.sqlite_users import UserTables

log = logging.getLogger("relay.store")

_MIGRATION_LOCK = 0x51_0E_5C  # pg_advisory_xact_lock's key for schema changes
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


class PostgresStore(CoreTables, NodeKeys, ClusterCAs, ClusterTokens, UserTables):
    """The ``Store`` interface on a PostgreSQL database (``postgresql://...``).

    The tables are the SQLite store's portable mixins (``relay.core_tables`` and the
    others), run through ``relay.pg_compat`` (the part of a SQLite connection they use,
    on this pool); migrations and checks are this module's own."""

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
