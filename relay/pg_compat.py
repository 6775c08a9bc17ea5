"""The part of ``sqlite3.Connection`` the store's table mixins use, on a PostgreSQL pool.

The SQLite store's tables beyond the core (token rotation in
``relay.cluster_tokens``, users in ``relay.sqlite_users``...) are mixins that
run portable SQL through ``self._db.execute`` inside ``with self._lock``, and
group writes that read first in ``BEGIN IMMEDIATE`` ... ``COMMIT``. The
PostgreSQL store gives them this instead of a SQLite connection, so the same
code and the same SQL serve both stores:

- ``with lock`` takes a pooled connection for the calling thread (the store is
  called from many threads at once) and gives it back at the end; a
  transaction still open then is rolled back.
- ``?`` placeholders become psycopg's; a statement outside a transaction
  commits by itself, as in SQLite's autocommit mode.
- ``BEGIN IMMEDIATE`` takes one advisory lock as well, so these transactions
  take turns across every relay, as SQLite's writers do across processes.
- Inside a transaction each statement runs in a savepoint: a constraint
  violation undoes that statement alone and comes out as
  ``sqlite3.IntegrityError`` (what the mixins catch), and the transaction
  goes on, as it does in SQLite.
- Sums come back as ``int`` or ``float`` (PostgreSQL's ``numeric`` would be a
  ``Decimal``).

Connection failures are ``StoreError`` (raised by the store's ``unreachable``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from quorum.errors import StoreError

WRITERS_LOCK = 0x51_0E_5D
"""pg_advisory_xact_lock's key for ``BEGIN IMMEDIATE``."""


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(_plain(v) for v in row) for row in rows]


class Result:
    """What ``execute`` returns: the rows (fetched at once) and the count of rows changed."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _Held(threading.local):
    conn: psycopg.Connection[Any] | None = None
    depth: int = 0
    in_tx: bool = False


class PoolConnection:
    """``execute`` and a ``lock`` as the mixins use them (see the module docstring)."""

    def __init__(self, pool: ConnectionPool, unreachable: Callable[[object], StoreError]) -> None:
        self._pool = pool
        self._unreachable = unreachable
        self._held = _Held()
        self.lock = _Lock(self)

    @contextmanager
    def held(self) -> Iterator[None]:
        held = self._held
        if held.depth:
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        try:
            conn = self._pool.getconn()
        except PoolTimeout as exc:
            raise self._unreachable(exc) from None
        conn.autocommit = True
        held.conn, held.depth, held.in_tx = conn, 1, False
        try:
            yield
        finally:
            if held.in_tx:
                with contextlib.suppress(psycopg.Error):  # the pool checks it anyway
                    conn.execute("ROLLBACK")
            held.conn, held.depth, held.in_tx = None, 0, False
            self._pool.putconn(conn)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        held = self._held
        conn = held.conn
        if conn is None:
            raise RuntimeError("the store's connection is used outside its lock")
        command = sql.strip().upper()
        try:
            if command in ("BEGIN", "BEGIN IMMEDIATE"):
                conn.execute("BEGIN")
                held.in_tx = True
                if command == "BEGIN IMMEDIATE":
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITERS_LOCK,))
                return Result([], -1)
            if command in ("COMMIT", "ROLLBACK"):
                held.in_tx = False
                conn.execute(command)
                return Result([], -1)
            query = sql.replace("%", "%%").replace("?", "%s")
            if not held.in_tx:
                return self._run(conn, query, args)
            with conn.transaction():  # a savepoint: a violation undoes this statement alone
                return self._run(conn, query, args)
        except psycopg.errors.IntegrityError as exc:
            name = exc.diag.constraint_name or ""
            raise sqlite3.IntegrityError(f"{name}: {exc.diag.message_primary}") from None
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Result:
        """``sql`` once per row (in the caller's transaction, if one is open)."""
        conn = self._held.conn
        if conn is None:
            raise RuntimeError("the store's connection is used outside its lock")
        query = sql.replace("%", "%%").replace("?", "%s")
        try:
            savepoint = conn.transaction() if self._held.in_tx else contextlib.nullcontext()
            with savepoint, conn.cursor() as cursor:
                cursor.executemany(query, [tuple(row) for row in rows])
                return Result([], cursor.rowcount)
        except psycopg.errors.IntegrityError as exc:
            name = exc.diag.constraint_name or ""
            raise sqlite3.IntegrityError(f"{name}: {exc.diag.message_primary}") from None
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    @staticmethod
    def _run(conn: psycopg.Connection[Any], query: str, args: Sequence[Any]) -> Result:
        cursor = conn.execute(query, tuple(args))
        rows = cursor.fetchall() if cursor.description is not None else []
        return Result(_rows(rows), cursor.rowcount)


class _Lock:
    """``with store._lock:``: this thread's pooled connection, for the block."""

    def __init__(self, owner: PoolConnection) -> None:
        self._owner = owner
        self._local = threading.local()

    def __enter__(self) -> None:
        block = self._owner.held()
        block.__enter__()
        stack: list[Any] = getattr(self._local, "stack", None) or []
        stack.append(block)
        self._local.stack = stack

    def __exit__(self, *exc: object) -> None:
        block = self._local.stack.pop()
        block.__exit__(*exc)
