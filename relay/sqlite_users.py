"""Users, cluster membership, invitations, key owners and usage per user, on the store.

The tables of migration 6 (``relay.migrations``), on the store's connection and
under its lock (``relay.sqlite_tables``), as a mixin of ``SqliteStore`` and
``PostgresStore``; personal tokens and sessions are ``relay.sqlite_sessions``,
pending sign-ins ``relay.sqlite_signins``. Secrets (personal tokens, invitation
codes, session ids) are stored only as SHA-256 hashes. Every write that reads
before it writes runs in one ``BEGIN IMMEDIATE`` transaction: two relays signing
up the first user at once make exactly one operator.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from typing import Any

from quorum.errors import StoreError
from quorum.protocol import RequestUsage
from relay.keys import secret_hash
from relay.sqlite_sessions import TOKEN_COLUMNS, SessionTables
from relay.sqlite_signins import SignInTables
from relay.store import UsageBy, UsageGroup
from relay.users import (
    INVITE_TTL_S,
    KeyHolder,
    Member,
    Membership,
    Role,
    User,
    UserToken,
    first_role,
    new_invite_code,
)

_USER_COLUMNS = "id, provider, subject, name, email, role, created_at, disabled_at"
_USAGE_COLUMNS = (
    "request_id, time_ms, model, endpoint, route, node, status, duration_ms, ttfb_ms, "
    "prompt_tokens, completion_tokens, key_id, error"
)
_GROUP_COLUMN = {
    UsageBy.MODEL: "model",
    UsageBy.NODE: "node",
    UsageBy.KEY: "key_id",
    UsageBy.DAY: "day",
}


def _user(row: Sequence[Any]) -> User:
    return User(row[0], row[1], row[2], row[3], row[4], Role(row[5]), row[6], row[7])


def _member(row: Sequence[Any]) -> Member:
    return Member(row[0], row[1], Membership(row[2]), row[3])


class UserTables(SessionTables, SignInTables):
    """The ``Store`` methods of users (see ``relay.store.Store``)."""

    # -- users ------------------------------------------------------------------

    def sign_up(
        self,
        provider: str,
        subject: str,
        *,
        name: str,
        email: str | None,
        operator: bool,
        now: float,
    ) -> User:
        """The account of ``(provider, subject)``, made on first sign-in (the first account, or
        one with ``operator``, is an operator); later sign-ins refresh its name and email."""

        def work() -> User:
            row = self._db.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE provider = ? AND subject = ?",
                (provider, subject),
            ).fetchone()
            if row is not None:
                found = _user(row)
                role = Role.OPERATOR if operator else found.role
                self._db.execute(
                    "UPDATE users SET name = ?, email = ?, role = ? WHERE id = ?",
                    (name, email, role.value, found.id),
                )
                return User(
                    found.id,
                    provider,
                    subject,
                    name,
                    email,
                    role,
                    found.created_at,
                    found.disabled_at,
                )
            (count,) = self._db.execute("SELECT COUNT(*) FROM users").fetchone()
            made = User(
                uuid.uuid4().hex, provider, subject, name, email, first_role(count, operator), now
            )
            self._db.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (made.id, provider, subject, name, email, made.role.value, now),
            )
            return made

        return self._write(work)

    def user(self, user_id: str) -> User | None:
        row = self._row(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else _user(row)

    def users(self) -> list[User]:
        return [
            _user(r) for r in self._rows(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at")
        ]

    def set_user_disabled(self, user_id: str, disabled: bool, *, now: float) -> User | None:
        """Disable (every session of the user ends) or enable an account; None if unknown."""

        def work() -> None:
            self._db.execute(
                "UPDATE users SET disabled_at = ? WHERE id = ?",
                (now if disabled else None, user_id),
            )
            if disabled:
                self._db.execute("DELETE FROM user_sessions WHERE user_id = ?", (user_id,))

        self._write(work)
        return self.user(user_id)

    # -- clusters they own or were invited to -------------------------------------

    def add_member(self, cluster_id: str, user_id: str, role: Membership, *, now: float) -> None:
        """Make ``user_id`` the cluster's owner or a member (an owner stays owner)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO cluster_members (cluster_id, user_id, role, added_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (cluster_id, user_id) DO UPDATE SET "
                "role = CASE WHEN cluster_members.role = 'owner' THEN 'owner' "
                "ELSE excluded.role END",
                (cluster_id, user_id, role.value, now),
            )

    def remove_member(self, cluster_id: str, user_id: str) -> bool:
        """Remove a member (never the owner); False if they were none."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM cluster_members WHERE cluster_id = ? AND user_id = ? "
                "AND role = 'member'",
                (cluster_id, user_id),
            )
        return cursor.rowcount > 0

    def members(self, cluster_id: str) -> list[Member]:
        rows = self._rows(
            "SELECT cluster_id, user_id, role, added_at FROM cluster_members "
            "WHERE cluster_id = ? ORDER BY added_at, user_id",
            (cluster_id,),
        )
        return [_member(r) for r in rows]

    def memberships(self, user_id: str) -> list[Member]:
        rows = self._rows(
            "SELECT cluster_id, user_id, role, added_at FROM cluster_members "
            "WHERE user_id = ? ORDER BY added_at, cluster_id",
            (user_id,),
        )
        return [_member(r) for r in rows]

    def membership(self, cluster_id: str, user_id: str) -> Membership | None:
        row = self._row(
            "SELECT role FROM cluster_members WHERE cluster_id = ? AND user_id = ?",
            (cluster_id, user_id),
        )
        return None if row is None else Membership(row[0])

    def owned(self) -> dict[str, str]:
        """Each cluster with an owner: cluster id -> the owner's user id."""
        rows = self._rows("SELECT cluster_id, user_id FROM cluster_members WHERE role = 'owner'")
        return {r[0]: r[1] for r in rows}

    def suspended_clusters(self, cluster_id: str | None = None) -> set[str]:
        """The clusters whose owner is disabled (of ``cluster_id`` alone, if given)."""
        sql = (
            "SELECT m.cluster_id FROM cluster_members m JOIN users u ON u.id = m.user_id "
            "WHERE m.role = 'owner' AND u.disabled_at IS NOT NULL"
        )
        if cluster_id is None:
            return {r[0] for r in self._rows(sql)}
        return {r[0] for r in self._rows(sql + " AND m.cluster_id = ?", (cluster_id,))}

    def create_invitation(
        self, cluster_id: str, user_id: str, *, now: float, ttl_s: float = INVITE_TTL_S
    ) -> str:
        """A one-use code that makes whoever redeems it a member (returned once)."""
        code = new_invite_code()
        with self._lock:
            self._db.execute(
                "INSERT INTO invitations (code_hash, cluster_id, created_by, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                (secret_hash(code), cluster_id, user_id, now, now + ttl_s),
            )
        return code

    def accept_invitation(self, code: str, user_id: str, *, now: float) -> str | None:
        """Redeem an unused, unexpired code: the cluster id ``user_id`` is now a member of."""
        digest = secret_hash(code)

        def work() -> str | None:
            row = self._db.execute(
                "SELECT code_hash, cluster_id FROM invitations WHERE code_hash = ? "
                "AND used_at IS NULL AND expires_at > ?",
                (digest, now),
            ).fetchone()
            if row is None or not hmac.compare_digest(row[0], digest):
                return None
            self._db.execute(
                "UPDATE invitations SET used_by = ?, used_at = ? WHERE code_hash = ?",
                (user_id, now, digest),
            )
            self._db.execute(
                "INSERT INTO cluster_members (cluster_id, user_id, role, added_at) "
                "VALUES (?, ?, 'member', ?) ON CONFLICT (cluster_id, user_id) DO NOTHING",
                (row[1], user_id, now),
            )
            return str(row[1])

        return self._write(work)

    # -- keys they own ------------------------------------------------------------

    def set_key_owner(self, key_id: str, user_id: str) -> None:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET user_id = ? WHERE id = ?", (user_id, key_id)
            )
        if cursor.rowcount == 0:
            raise StoreError("no such key")

    def key_owner(self, key_id: str) -> str | None:
        row = self._row("SELECT user_id FROM api_keys WHERE id = ?", (key_id,))
        return None if row is None else row[0]

    def key_owners(self, cluster_id: str | None = None) -> dict[str, str]:
        """Keys that have an owner: key id -> user id."""
        sql = "SELECT id, user_id FROM api_keys WHERE user_id IS NOT NULL"
        rows = (
            self._rows(sql)
            if cluster_id is None
            else self._rows(sql + " AND cluster_id = ?", (cluster_id,))
        )
        return {r[0]: r[1] for r in rows}

    def user_for_token(self, secret: str) -> tuple[UserToken, User] | None:
        """The token this secret is (whatever its state) and its user, or None."""
        digest = secret_hash(secret)
        row = self._row(
            f"SELECT {TOKEN_COLUMNS}, token_hash FROM user_tokens WHERE token_hash = ?",
            (digest,),
        )
        if row is None or not hmac.compare_digest(row[7], digest):
            return None
        user = self.user(row[1])
        return None if user is None else (UserToken(*row[:7]), user)

    # -- who holds a key, and their usage ---------------------------------------------

    def key_holder(self, key_id: str) -> KeyHolder | None:
        """The owner of an owned key, whether they are disabled, and their place in the key's
        cluster now (None: removed from it); None for a key without an owner."""
        row = self._row(
            "SELECT k.user_id, u.disabled_at, m.role, u.role FROM api_keys k "
            "JOIN users u ON u.id = k.user_id "
            "LEFT JOIN cluster_members m ON m.cluster_id = k.cluster_id AND m.user_id = k.user_id "
            "WHERE k.id = ?",
            (key_id,),
        )
        if row is None:
            return None
        return KeyHolder(
            row[0],
            row[1] is not None,
            None if row[2] is None else Membership(row[2]),
            operator=row[3] == Role.OPERATOR.value,
        )

    def user_usage(
        self,
        cluster_id: str,
        user_id: str,
        by: UsageBy,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[UsageGroup]:
        """``usage`` of one cluster, only the requests made with ``user_id``'s keys."""
        column = "r." + _GROUP_COLUMN[by]
        rows = self._rows(
            f"SELECT {column}, COUNT(*), "
            "SUM(CASE WHEN r.status >= 400 OR r.error IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(r.prompt_tokens), 0), COALESCE(SUM(r.completion_tokens), 0), "
            "AVG(r.duration_ms), AVG(r.ttfb_ms) FROM usage_records r "
            "JOIN api_keys k ON k.id = r.key_id AND k.user_id = ? "
            "WHERE r.cluster_id = ? AND r.time_ms >= ? AND r.time_ms < ? "
            f"GROUP BY {column} ORDER BY {column}",
            (user_id, cluster_id, since_ms or 0, until_ms if until_ms is not None else 2**62),
        )
        return [UsageGroup(*row) for row in rows]

    def user_usage_records(
        self, cluster_id: str, user_id: str, *, limit: int = 100
    ) -> list[RequestUsage]:
        """``usage_records`` of one cluster made with ``user_id``'s keys, newest first."""
        columns = ", ".join("r." + c.strip() for c in _USAGE_COLUMNS.split(","))
        rows = self._rows(
            f"SELECT {columns} FROM usage_records r "
            "JOIN api_keys k ON k.id = r.key_id AND k.user_id = ? "
            "WHERE r.cluster_id = ? ORDER BY r.time_ms DESC, r.request_id LIMIT ?",
            (user_id, cluster_id, limit),
        )
        return [RequestUsage(*row) for row in rows]
