"""Sign-ins waiting for their provider's callback, in the store (migration 7).

So any relay sharing the store can finish a sign-in another one started (no sticky
sessions). A row is found by the SHA-256 of the one-off cookie the browser holds,
never by the cookie itself, and is taken exactly once: the read and the delete are one
transaction (``BEGIN IMMEDIATE``, which on PostgreSQL also takes the writers' lock), so
two callbacks racing with one cookie get it once between them. Rows older than the
time a sign-in may take are deleted as new ones come, and there are at most
``max_rows``: the oldest go first.
"""

from __future__ import annotations

from relay.sqlite_tables import Tables
from relay.users import Pending

_COLUMNS = "provider, state, nonce, verifier, redirect_uri, created_at"


class SignInTables(Tables):
    """The ``Store`` methods of pending sign-ins (see ``relay.store.Store``)."""

    def add_pending_signin(
        self, cookie_hash: str, pending: Pending, *, now: float, ttl_s: float, max_rows: int
    ) -> None:
        def work() -> None:
            db = self._db
            db.execute("DELETE FROM pending_signins WHERE created_at <= ?", (now - ttl_s,))
            (count,) = db.execute("SELECT COUNT(*) FROM pending_signins").fetchone()
            if count >= max_rows:
                db.execute(
                    "DELETE FROM pending_signins WHERE cookie_hash IN (SELECT cookie_hash "
                    "FROM pending_signins ORDER BY created_at LIMIT ?)",
                    (count - max_rows + 1,),
                )
            db.execute(
                f"INSERT INTO pending_signins (cookie_hash, {_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cookie_hash,
                    pending.provider,
                    pending.state,
                    pending.nonce,
                    pending.verifier,
                    pending.redirect_uri,
                    pending.created,
                ),
            )

        self._write(work)

    def take_pending_signin(self, cookie_hash: str) -> Pending | None:
        """The pending sign-in of this cookie hash, deleted in the same transaction: only one
        caller ever gets it. (Whether it is still fresh is the caller's to decide.)"""

        def work() -> Pending | None:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM pending_signins WHERE cookie_hash = ?", (cookie_hash,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM pending_signins WHERE cookie_hash = ?", (cookie_hash,))
            return Pending(*row)

        return self._write(work)
