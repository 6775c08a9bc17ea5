"""Open the configured control-plane store (the interface, :mod:`relay.store`, knows no
implementation; this module picks one by the URL's scheme).

- no URL: SQLite in WAL mode at ``data_dir/relay.sqlite3``, the default for one relay;
- ``postgresql://...`` (or ``postgres://``): PostgreSQL, which several relays share
  (``relay.pg_store``; needs the ``relay`` extra: psycopg and psycopg_pool).
"""

from __future__ import annotations

from pathlib import Path

from quorum.errors import StoreError
from relay.sqlite_store import SqliteStore
from relay.store import Store

STORE_ENV = "QUORUM_RELAY_STORE"
"""Where ``--store`` is read from when it is not given."""
_POSTGRES = ("postgresql://", "postgres://")


def open_store(data_dir: Path, url: str | None = None) -> Store:
    """The store at ``url``, or SQLite under ``data_dir`` when there is none."""
    if not url:
        return SqliteStore(data_dir)
    if url.startswith(_POSTGRES):
        try:
            from relay.pg_store import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"a PostgreSQL store needs psycopg ({exc.name} is missing): "
                "pip install 'quorum[relay]'"
            ) from None
        return PostgresStore(url)
    scheme = url.partition(":")[0]
    raise StoreError(f"--store takes a postgresql://... URL (or none, for SQLite), not {scheme}:")
