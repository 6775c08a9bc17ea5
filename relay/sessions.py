"""Users' dashboard sessions (in the store) and sign-ins waiting for their callback.

Rules (the admin token's sessions, ``dashboard_auth``, follow the same ones):

- A user's session id (256 random bits) travels only in the dashboard's
  HttpOnly, SameSite=Strict session cookie (Secure over TLS); the store keeps
  its SHA-256, the user, the session's CSRF token and its times. Sessions live
  in the store, so every relay sharing it knows them and a restart keeps them.
- A session ends at sign-out, ``ABSOLUTE_S`` after sign-in, ``IDLE_S`` after
  its last use, when its user signs out everywhere, and at once when its user
  is disabled: every lookup reads the user's row.
- A pending sign-in (state, nonce, PKCE verifier) waits at most ``PENDING_S``
  for its callback, in the store, found by the hash of a one-off cookie
  (SameSite=Lax: the provider's redirect back is a cross-site navigation); it
  is taken once, whichever relay sharing the store the callback reaches
  (``relay.sqlite_signins``); at most ``MAX_PENDING`` wait at once.

Everything here is synchronous (callers use ``asyncio.to_thread`` for the
store) with an injected wall clock.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from quorum.ratelimit import FailureLimiter
from relay.dashboard_auth import ABSOLUTE_S, IDLE_S, new_secret, same_token
from relay.oidc import Provider
from relay.store import Store
from relay.users import Pending, User, UserSession
from relay.users_config import UsersConfig

PENDING_S = 600.0
MAX_PENDING = 10_000
START_RATE = 1.0
START_BURST = 30.0


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class UserSessions:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        absolute_s: float = ABSOLUTE_S,
        idle_s: float = IDLE_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.absolute_s = absolute_s
        self.idle_s = idle_s

    def create(self, user_id: str) -> tuple[str, UserSession]:
        """A new session for ``user_id``; its id is returned this once (for the cookie)."""
        now = self.clock()
        session_id = new_secret()
        session = UserSession(digest(session_id), user_id, new_secret(), now, now)
        self.store.add_session(session)
        return session_id, session

    def get(self, session_id: str | None) -> tuple[UserSession, User] | None:
        """The live session with this id and its (enabled) user, noting the use; else None."""
        if not session_id:
            return None
        hashed = digest(session_id)
        session = self.store.session(hashed)
        if session is None:
            return None
        now = self.clock()
        if now - session.created_at >= self.absolute_s or now - session.last_used_at >= self.idle_s:
            self.store.end_session(hashed)
            return None
        user = self.store.user(session.user_id)
        if user is None or user.disabled:
            self.store.end_session(hashed)
            return None
        self.store.touch_session(hashed, now=now)
        return session, user

    def remaining_s(self, session: UserSession) -> float:
        return max(0.0, session.created_at + self.absolute_s - self.clock())

    def end(self, session_id: str | None) -> None:
        if session_id:
            self.store.end_session(digest(session_id))

    def end_all(self, user_id: str) -> int:
        return self.store.end_sessions(user_id)


class PendingSignIns:
    """Sign-ins between the redirect to a provider and its callback; bounded, in the store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        ttl_s: float = PENDING_S,
        max_rows: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_rows = max_rows

    def add(self, pending: Pending) -> str:
        """Keep ``pending``; the cookie value that finds it again (returned this once)."""
        cookie = new_secret()
        self.store.add_pending_signin(
            digest(cookie), pending, now=self.clock(), ttl_s=self.ttl_s, max_rows=self.max_rows
        )
        return cookie

    def take(self, cookie: str | None, provider: str, state: str | None) -> Pending | None:
        """The pending sign-in of this cookie, if it is for ``provider``, carries ``state`` and
        is still fresh; it is gone afterwards whatever the answer."""
        if not cookie:
            return None
        pending = self.store.take_pending_signin(digest(cookie))
        if pending is None or pending.provider != provider:
            return None
        if self.clock() - pending.created >= self.ttl_s or not same_token(state, pending.state):
            return None
        return pending


@dataclass
class Users:
    """What a relay with users keeps: its providers, sessions and pending sign-ins."""

    config: UsersConfig
    sessions: UserSessions
    pending: PendingSignIns
    providers: dict[str, Provider] = field(default_factory=dict)
    starts: FailureLimiter = field(
        default_factory=lambda: FailureLimiter(rate=START_RATE, burst=START_BURST)
    )
    """Sign-ins started per address: no one address can crowd out others' pending ones."""


USERS: web.AppKey[Users] = web.AppKey("relay_users", Users)


def buttons(users: Users | None) -> str:
    """The sign-in page's provider buttons, as HTML (every value escaped)."""
    if users is None or not users.providers:
        return ""
    links = "".join(
        f'<a class="button provider" href="/dashboard/signin/{html.escape(p.name)}">'
        f"Sign in with {html.escape(p.label)}</a>"
        for p in users.providers.values()
    )
    return f'<div class="card providers">{links}</div>'
