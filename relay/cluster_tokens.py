"""Rotating a cluster's join token at the relay (SQLite), and the tokens still accepted.

``rotate_cluster_token`` gives a cluster a new token (and the CA derived from
it) and keeps the one it replaces as a *previous* token (its hash and its CA's
public key, migration 5) until ``accepted_until``: the grace the operator chose,
ended early by ``finish_rotation``. Until then a node may join with either
(the previous token, or a certificate of the previous CA); from then on the
previous token, its CA and every certificate and proof made with it are
refused, and a node still connected with one is closed (``relay.revocation``).

Rules:
- Only hashes of tokens are kept, as for the current one; a lookup hashes the
  presented token and compares digests in constant time.
- A rotation never shortens another's grace: each previous token keeps its own
  ``accepted_until`` (rotating twice in a row leaves two previous tokens).
- A new token equal to the current or to a previous one is refused.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
import threading
from dataclasses import dataclass

from quorum.errors import StoreError
from quorum.secure.cluster import ClusterCA, ca_id
from relay.keys import secret_hash


@dataclass(frozen=True, slots=True)
class PreviousToken:
    """A token a cluster had before a rotation (never the token: its CA id and times)."""

    cluster_id: str
    ca_id: str | None
    retired_at: float
    accepted_until: float

    def accepted(self, now: float) -> bool:
        return now < self.accepted_until


def new_token() -> str:
    """The same shape as ``quorum token new``: a token made on a LAN works here too."""
    return "qc_" + secrets.token_urlsafe(32)


def new_ca(token: str) -> tuple[str, str]:
    """(CA id, CA public key PEM) of the cluster CA derived from ``token``."""
    ca = ClusterCA.from_token(token)
    return ca_id(ca.key.public_key()), ca.public_key_pem


class ClusterTokens:
    """The ``previous_tokens`` table (migration 5) on the store's connection, under its lock."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def rotate_cluster_token(
        self, cluster_id: str, token: str | None = None, *, grace_s: float, now: float
    ) -> str:
        """Give the cluster a new token (``token``, or a fresh one: returned once) and accept
        the one it replaces for ``grace_s`` more seconds."""
        token = token or new_token()
        if grace_s < 0:
            raise StoreError("the grace period cannot be negative")
        if len(token) < 16:
            raise StoreError("a join token has at least 16 characters")
        digest = secret_hash(token)
        new_id, new_key = new_ca(token)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT token_hash, ca_id, ca_key FROM clusters WHERE id = ?", (cluster_id,)
                ).fetchone()
                if row is None:
                    raise StoreError("no such cluster")
                used = self._db.execute(
                    "SELECT 1 FROM previous_tokens WHERE token_hash = ?", (digest,)
                ).fetchone()
                if used is not None or hmac.compare_digest(row[0], digest):
                    raise StoreError("this token was the cluster's before: choose a new one")
                self._db.execute(
                    "INSERT INTO previous_tokens (cluster_id, token_hash, ca_id, ca_key, "
                    "retired_at, accepted_until) VALUES (?, ?, ?, ?, ?, ?)",
                    (cluster_id, row[0], row[1], row[2], now, now + grace_s),
                )
                try:
                    self._db.execute(
                        "UPDATE clusters SET token_hash = ?, ca_id = ?, ca_key = ? WHERE id = ?",
                        (digest, new_id, new_key, cluster_id),
                    )
                except sqlite3.IntegrityError:
                    raise StoreError("another cluster has this token: choose a new one") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return token

    def finish_rotation(self, cluster_id: str, *, now: float) -> int:
        """Refuse every previous token of the cluster from ``now``; how many were accepted."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE previous_tokens SET accepted_until = ? "
                "WHERE cluster_id = ? AND accepted_until > ?",
                (now, cluster_id, now),
            )
        return max(cursor.rowcount, 0)

    def previous_tokens(self, cluster_id: str) -> list[PreviousToken]:
        with self._lock:
            rows = self._db.execute(
                "SELECT cluster_id, ca_id, retired_at, accepted_until FROM previous_tokens "
                "WHERE cluster_id = ? ORDER BY retired_at",
                (cluster_id,),
            ).fetchall()
        return [PreviousToken(*row) for row in rows]

    def cluster_for_previous_token(self, token: str, *, now: float) -> str | None:
        """The id of the cluster whose previous ``token`` is still accepted at ``now``."""
        digest = secret_hash(token)
        with self._lock:
            row = self._db.execute(
                "SELECT cluster_id, token_hash FROM previous_tokens "
                "WHERE token_hash = ? AND accepted_until > ?",
                (digest, now),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[1], digest):
            return None
        return str(row[0])

    def previous_ca(self, ca: str, *, now: float) -> tuple[str, str] | None:
        """(cluster id, CA public key PEM) of a previous CA ``ca`` still accepted at ``now``."""
        with self._lock:
            row = self._db.execute(
                "SELECT cluster_id, ca_key FROM previous_tokens "
                "WHERE ca_id = ? AND accepted_until > ? AND ca_key IS NOT NULL",
                (ca, now),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def accepted_cas(self, *, now: float) -> set[tuple[str, str]]:
        """Every (cluster id, CA id) a node may join with at ``now``: current and in grace."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ca_id FROM clusters WHERE ca_id IS NOT NULL "
                "UNION SELECT cluster_id, ca_id FROM previous_tokens "
                "WHERE ca_id IS NOT NULL AND accepted_until > ?",
                (now,),
            ).fetchall()
        return {(str(a), str(b)) for a, b in rows}
