"""What the store's table mixins share: the connection, its lock, and three ways to use it.

Each mixin (``relay.sqlite_users``, ``relay.sqlite_sessions``, ``relay.sqlite_signins``...)
runs portable SQL through ``self._db`` under ``self._lock``: a SQLite connection in
``SqliteStore``, a ``relay.pg_compat`` pool in ``PostgresStore``. A write that reads
before it writes runs in one ``BEGIN IMMEDIATE`` transaction (``_write``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Tables:
    _db: sqlite3.Connection
    _lock: threading.Lock

    def _write(self, work: Callable[[], T]) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return result

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()
