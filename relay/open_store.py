"""Open the configured control-plane store (the interface, :mod:`relay.store`, knows no
implementation; this module picks one)."""

from __future__ import annotations

from pathlib import Path

from relay.sqlite_store import SqliteStore
from relay.store import Store


def open_store(data_dir: Path) -> Store:
    """The default store: SQLite in WAL mode at ``data_dir/relay.sqlite3``."""
    return SqliteStore(data_dir)
