"""Dashboard sessions, and the checks a request that changes something must pass.

Rules:

- A session is made only by presenting the admin token to the sign-in form.
  Its id (256 random bits) travels only in an HttpOnly, SameSite=Strict cookie
  (Secure when the page is served over TLS); the relay keeps the id's SHA-256,
  never the id, with the session's CSRF token and its times.
- A session ends at sign-out, ``ABSOLUTE_S`` after sign-in, or ``IDLE_S``
  after its last use, whichever comes first. Sessions live in this process: a
  restarted relay signs everyone out (they sign in again; nothing is lost).
- Every request that changes something carries the session's CSRF token
  (header ``X-CSRF-Token`` or form field ``csrf``), compared in constant time,
  and must not say it comes from another origin (``Origin``, ``Sec-Fetch-Site``).
- The sign-in form, posted before any session exists, carries a one-off token
  equal to a SameSite=Strict cookie set with the form (a double submit), and
  passes the same origin check: another site cannot sign a browser in.

Everything here is pure or in-memory; time is an injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

SESSION_COOKIE = "quorum_relay_session"
LOGIN_COOKIE = "quorum_relay_signin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
ABSOLUTE_S = 12 * 3600.0
IDLE_S = 2 * 3600.0
MAX_SESSIONS = 1000


def new_secret() -> str:
    """256 random bits, URL-safe: a session id, a CSRF token."""
    return secrets.token_urlsafe(32)


def same_token(presented: str | None, expected: str) -> bool:
    """Constant-time equality of two tokens (``None`` never matches)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    created: float
    last_used: float


def alive(session: Session, now: float, absolute_s: float, idle_s: float) -> bool:
    """Whether ``session`` may still be used at ``now``."""
    return now - session.created < absolute_s and now - session.last_used < idle_s


class Sessions:
    """Signed-in browsers, by the hash of their session id; bounded (least recent dropped)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        absolute_s: float = ABSOLUTE_S,
        idle_s: float = IDLE_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        if absolute_s <= 0 or idle_s <= 0 or max_sessions < 1:
            raise ValueError("lifetimes > 0 and max_sessions >= 1 are required")
        self.clock = clock
        self.absolute_s = absolute_s
        self.idle_s = idle_s
        self._max = max_sessions
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> tuple[str, Session]:
        """A new session; its id is returned this once (for the cookie) and not kept."""
        now = self.clock()
        self._prune(now)
        session_id = new_secret()
        session = Session(new_secret(), now, now)
        self._by_digest[_digest(session_id)] = session
        while len(self._by_digest) > self._max:
            self._by_digest.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and note its use), or None."""
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = self.clock()
        if not alive(session, now, self.absolute_s, self.idle_s):
            del self._by_digest[digest]
            return None
        session = replace(session, last_used=now)
        self._by_digest[digest] = session
        self._by_digest.move_to_end(digest)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_digest.pop(_digest(session_id), None)

    def remaining_s(self, session: Session) -> float:
        """Seconds until ``session`` ends at the latest (its cookie's Max-Age)."""
        return max(0.0, session.created + self.absolute_s - self.clock())

    def _prune(self, now: float) -> None:
        for digest, session in list(self._by_digest.items()):
            if not alive(session, now, self.absolute_s, self.idle_s):
                del self._by_digest[digest]

    def __len__(self) -> int:
        return len(self._by_digest)


def same_origin(origin: str | None, fetch_site: str | None, host: str, secure: bool) -> bool:
    """Whether a change request may have come from this relay's own page.

    ``Sec-Fetch-Site`` (sent by current browsers) must be ``same-origin`` (or ``none``:
    typed by the user). An ``Origin`` must name this host, with ``https`` when the
    relay serves TLS itself. A request with neither (a script, curl) is judged by its
    CSRF token alone.
    """
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
        return False
    return parts.scheme == "https" or not secure
