"""Personal API tokens and dashboard sessions of users, on the store's connection.

A mixin of ``relay.sqlite_users.UserTables`` (tables of migration 6). Only hashes of the
secrets are stored: a token's SHA-256 (``relay.keys``), a session id's (``relay.sessions``).
"""

from __future__ import annotations

import hmac
import sqlite3
import uuid

from quorum.errors import StoreError
from relay.keys import secret_hash
from relay.sqlite_tables import Tables
from relay.users import UserSession, UserToken, new_user_token

TOKEN_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"
SESSION_TOUCH_S = 60.0


class SessionTables(Tables):
    """The ``Store`` methods of personal tokens and sessions (see ``relay.store.Store``)."""

    # -- personal API tokens ------------------------------------------------------

    def create_user_token(self, user_id: str, name: str, *, now: float) -> tuple[UserToken, str]:
        for _ in range(8):  # a clash of 32-bit prefixes: draw again
            secret, prefix = new_user_token()
            token = UserToken(uuid.uuid4().hex, user_id, name, prefix, now)
            try:
                with self._lock:
                    self._db.execute(
                        "INSERT INTO user_tokens (id, user_id, name, prefix, token_hash, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (token.id, user_id, name, prefix, secret_hash(secret), now),
                    )
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise StoreError("no such user") from None
                continue
            return token, secret
        raise StoreError("could not draw a unique token prefix")

    def user_tokens(self, user_id: str) -> list[UserToken]:
        rows = self._rows(
            f"SELECT {TOKEN_COLUMNS} FROM user_tokens WHERE user_id = ? ORDER BY created_at",
            (user_id,),
        )
        return [UserToken(*r) for r in rows]

    def revoke_user_token(self, user_id: str, ref: str, *, now: float) -> UserToken | None:
        """Revoke one of ``user_id``'s tokens, by id or prefix; None if they have no such one."""
        prefix = ref.removeprefix("qu_")
        with self._lock:
            self._db.execute(
                "UPDATE user_tokens SET revoked_at = ? WHERE user_id = ? "
                "AND (id = ? OR prefix = ?) AND revoked_at IS NULL",
                (now, user_id, ref, prefix),
            )
            row = self._db.execute(
                f"SELECT {TOKEN_COLUMNS} FROM user_tokens WHERE user_id = ? "
                "AND (id = ? OR prefix = ?)",
                (user_id, ref, prefix),
            ).fetchone()
        return None if row is None else UserToken(*row)

    # -- sessions -------------------------------------------------------------------

    def add_session(self, session: UserSession) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO user_sessions (id_hash, user_id, csrf, created_at, last_used_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    session.id_hash,
                    session.user_id,
                    session.csrf,
                    session.created_at,
                    session.last_used_at,
                ),
            )

    def session(self, id_hash: str) -> UserSession | None:
        row = self._row(
            "SELECT id_hash, user_id, csrf, created_at, last_used_at FROM user_sessions "
            "WHERE id_hash = ?",
            (id_hash,),
        )
        if row is None or not hmac.compare_digest(row[0], id_hash):
            return None
        return UserSession(*row)

    def touch_session(self, id_hash: str, *, now: float) -> None:
        """Note a use (written at most once a minute per session)."""
        with self._lock:
            self._db.execute(
                "UPDATE user_sessions SET last_used_at = ? WHERE id_hash = ? AND last_used_at < ?",
                (now, id_hash, now - SESSION_TOUCH_S),
            )

    def end_session(self, id_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM user_sessions WHERE id_hash = ?", (id_hash,))

    def end_sessions(self, user_id: str) -> int:
        """End every session of ``user_id`` (sign out everywhere); how many ended."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM user_sessions WHERE user_id = ?", (user_id,))
        return cursor.rowcount
