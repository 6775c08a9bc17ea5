"""Which identity key each node id of a cluster joined with (SQLite), and removed nodes.

The first key a node id joins the relay with is bound to it; the same key
again is welcome, another is refused. ``remove`` marks a node removed: its
key is refused from then on, under any node id of the cluster (a node id
removed may join again only with a new key, i.e. as a new machine).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from dataclasses import dataclass


class Binding(enum.StrEnum):
    BOUND = "bound"  # first join of this node id: its key is now bound
    SAME = "same"  # the key bound to this node id
    OTHER = "other"  # another key than the one bound: refused
    REMOVED = "removed"  # a removed node's key: refused


@dataclass(frozen=True, slots=True)
class NodeKey:
    cluster_id: str
    node_id: str
    fingerprint: str
    bound_at: float
    removed_at: float | None


class ClusterCAs:
    """The public key of each cluster's CA (migration 4): what lets the relay recognise a
    member's certificate without the token. Recorded at ``cluster create`` (the token is
    at hand then), or the first time a node of an older cluster joins with the token."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def set_cluster_ca(self, cluster_id: str, ca_id: str, ca_key_pem: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE clusters SET ca_id = ?, ca_key = ? WHERE id = ?",
                (ca_id, ca_key_pem, cluster_id),
            )

    def cluster_ca(self, cluster_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT ca_key FROM clusters WHERE id = ?", (cluster_id,))
            found = row.fetchone()
        return str(found[0]) if found and found[0] else None

    def cluster_for_ca(self, ca_id: str) -> tuple[str, str, float, str] | None:
        """(id, name, created_at, CA public key PEM) of the cluster whose CA is ``ca_id``."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, created_at, ca_key FROM clusters WHERE ca_id = ?", (ca_id,)
            ).fetchone()
        return None if row is None or not row[3] else (row[0], row[1], row[2], row[3])


class NodeKeys:
    """The ``node_keys`` table (migration 3) on the store's connection, under its lock."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def bind_node_key(
        self, cluster_id: str, node_id: str, fingerprint: str, *, now: float
    ) -> Binding:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._bind(cluster_id, node_id, fingerprint, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return outcome

    def _bind(self, cluster_id: str, node_id: str, fingerprint: str, now: float) -> Binding:
        removed = self._db.execute(
            "SELECT 1 FROM node_keys WHERE cluster_id = ? AND fingerprint = ? "
            "AND removed_at IS NOT NULL",
            (cluster_id, fingerprint),
        ).fetchone()
        if removed is not None:
            return Binding.REMOVED
        row = self._db.execute(
            "SELECT fingerprint FROM node_keys WHERE cluster_id = ? AND node_id = ? "
            "AND removed_at IS NULL",
            (cluster_id, node_id),
        ).fetchone()
        if row is not None:
            return Binding.SAME if row[0] == fingerprint else Binding.OTHER
        # A removed node's row stays: its key is refused for good, under any id.
        self._db.execute(
            "INSERT INTO node_keys (cluster_id, node_id, fingerprint, bound_at) "
            "VALUES (?, ?, ?, ?)",
            (cluster_id, node_id, fingerprint, now),
        )
        return Binding.BOUND

    def remove_node(self, cluster_id: str, node_id: str, *, now: float) -> bool:
        """Mark ``node_id`` removed (its key refused from now on); False if it never joined."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE node_keys SET removed_at = ? WHERE cluster_id = ? AND node_id = ? "
                "AND removed_at IS NULL",
                (now, cluster_id, node_id),
            )
        return cursor.rowcount > 0

    def node_keys(self, cluster_id: str | None = None) -> list[NodeKey]:
        sql = "SELECT cluster_id, node_id, fingerprint, bound_at, removed_at FROM node_keys"
        order = " ORDER BY node_id, bound_at"
        with self._lock:
            if cluster_id is None:
                rows = self._db.execute(sql + order).fetchall()
            else:
                rows = self._db.execute(
                    sql + " WHERE cluster_id = ?" + order, (cluster_id,)
                ).fetchall()
        return [NodeKey(*row) for row in rows]
