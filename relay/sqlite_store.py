"""The default store: SQLite in WAL mode, one connection behind a lock.

Schema changes are numbered migrations, applied in order at open, each in
its own transaction. The tables themselves are portable mixins
(``relay.core_tables``, ``relay.node_keys``, ``relay.cluster_tokens``,
``relay.sqlite_users``) that the PostgreSQL store runs too; this module opens
the file, migrates and checks it. Callers on an event loop reach it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from quorum.errors import StoreError
from relay.cluster_tokens import ClusterTokens
from relay.core_tables import CoreTables
from relay.migrations import MIGRATIONS, REBUILDS
from relay.node_keys import ClusterCAs, NodeKeys
from relay.sqlite_users import UserTables


def _private(path: Path) -> None:
    """Create the store file readable by its owner alone (SQLite gives its -wal and -shm
    files the same mode); tighten an existing one."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change: SQLite says what is wrong when it opens it


class SqliteStore(CoreTables, NodeKeys, ClusterCAs, ClusterTokens, UserTables):
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
