"""A fresh PostgreSQL schema per test, on the machine's server (127.0.0.1:5432, database
``test``; ``QUORUM_TEST_POSTGRES`` names another), dropped afterwards.

The schema is chosen through the connection's ``search_path`` (libpq's ``options``), so
a store opened on the URL ``fresh_schema`` yields sees only its own tables, and tests run
in parallel never meet.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from relay.open_store import open_store
from relay.pg_store import PostgresStore
from relay.sqlite_store import SqliteStore
from relay.store import Store

SERVER = os.environ.get("QUORUM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of an empty schema of its own."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{SERVER}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def dump(url: str) -> bytes:
    """Every value every table of the schema at ``url`` holds, as text."""
    out: list[str] = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                out.append(repr(row))
    return "\n".join(out).encode()


STORES = ["sqlite", "postgresql"]
"""The stores a suite of the store interface runs on: ``@pytest.fixture(params=STORES)``."""


@contextlib.contextmanager
def open_kind(kind: str, data: Path) -> Iterator[Store]:
    """A new, empty store of ``kind`` (SQLite under ``data``, or a fresh PostgreSQL
    schema), opened as the relay opens it, closed (and the schema dropped) afterwards."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_schema()) if kind == "postgresql" else None
        made = open_store(data, url)
        stack.callback(made.close)
        assert isinstance(made, PostgresStore if url else SqliteStore)
        yield made


def held_bytes(store: Store, data: Path) -> bytes:
    """Everything ``store`` holds: its SQLite files under ``data``, or every row of its
    PostgreSQL schema."""
    if isinstance(store, PostgresStore):
        return dump(store.url)
    return b"".join(p.read_bytes() for p in sorted(data.glob("relay.sqlite3*")))
