"""The relay's store: clusters and their join tokens, in SQLite (WAL), behind one small class.

Tokens are stored only as SHA-256 hashes: a join token carries 256 random
bits, so a fast hash is enough to make the stored value useless to a thief,
and a lookup by hash is an index hit (the final comparison is constant-time).
The SQL is plain enough to port to PostgreSQL; schema changes are numbered
migrations applied in order at open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from quorum.errors import QuorumError

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    """,
)


class StoreError(QuorumError):
    """The store refused an operation (a duplicate name, an unknown cluster)."""


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    name: str
    created_at: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """The same shape as ``quorum token new``: a token made on a LAN works here too."""
    return "qc_" + secrets.token_urlsafe(32)


class Store:
    """A connection to the store; safe to share between threads (one lock)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "relay.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
                self._db.execute("BEGIN")
                for statement in sql.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO schema_version VALUES (?)", (version,))
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create_cluster(self, name: str, token: str | None = None) -> tuple[Cluster, str]:
        """A new cluster and its token (returned once). ``token`` adopts an existing one."""
        if not name.strip():
            raise StoreError("a cluster needs a name")
        token = token or new_token()
        if len(token) < 16:
            raise StoreError("a join token has at least 16 characters")
        cluster = Cluster(uuid.uuid4().hex, name.strip(), time.time())
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO clusters (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                    (cluster.id, cluster.name, token_hash(token), cluster.created_at),
                )
            except sqlite3.IntegrityError as exc:
                what = "name" if "name" in str(exc) else "token"
                raise StoreError(f"a cluster with this {what} exists already") from None
        return cluster, token

    def clusters(self) -> list[Cluster]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at FROM clusters ORDER BY name"
            ).fetchall()
        return [Cluster(*row) for row in rows]

    def cluster_for_token(self, token: str) -> Cluster | None:
        """The cluster this token joins, or None."""
        digest = token_hash(token)
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, created_at, token_hash FROM clusters WHERE token_hash = ?",
                (digest,),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[3], digest):
            return None
        return Cluster(row[0], row[1], row[2])
