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

import psycopg

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
