"""Users of a relay, as values: who they are, what they may reach, and their secrets' shapes.

A relay with a sign-in provider configured has users (``docs/relay.md``,
"Users"). Each is known by ``(provider, subject)``: the provider's name in the
relay config and the subject it vouches for (an OpenID Connect ``sub``,
GitHub's numeric user id). Rules:

- The first user to sign in, or one the config names, is an **operator**: an
  operator sees the whole fleet, like the admin token, and may disable users.
  Everyone else is a **user**.
- A user reaches a cluster only as its **owner** (who created it) or a
  **member** (invited by the owner). Anything else is answered as if it did not
  exist: the same 404 as an unknown name.
- An owner sees every key, node and request of the cluster; a member sees the
  cluster, its nodes and models, and only their own keys and requests.
- A disabled user's sessions, personal tokens and API keys stop at once: every
  check reads the user's row.

Secrets: personal API tokens look like ``qu_<prefix>_<secret>`` and invitation
codes like ``qi_<secret>``; only their SHA-256 is stored (``relay.keys``).
Everything here is pure.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass

TOKEN_SCHEME = "qu_"
INVITE_SCHEME = "qi_"
_TOKEN = re.compile(r"qu_([0-9a-f]{8})_([A-Za-z0-9_-]{20,128})")
INVITE_TTL_S = 7 * 86400.0


class Role(enum.StrEnum):
    OPERATOR = "operator"
    USER = "user"


class Membership(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    provider: str
    subject: str
    name: str
    email: str | None
    role: Role
    created_at: float
    disabled_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def operator(self) -> bool:
        return self.role is Role.OPERATOR


@dataclass(frozen=True, slots=True)
class Member:
    """One user's place in one cluster."""

    cluster_id: str
    user_id: str
    role: Membership
    added_at: float


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Who owns an API key now: the key works only while they are enabled and still in
    the key's cluster (``membership`` not None), or an operator."""

    user_id: str
    disabled: bool
    membership: Membership | None
    operator: bool = False
    """An operator's keys reach any cluster, as the operator does."""

    @property
    def allowed(self) -> bool:
        return not self.disabled and (self.membership is not None or self.operator)


@dataclass(frozen=True, slots=True)
class UserToken:
    """A personal API token as stored (never the token itself)."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    @property
    def shown(self) -> str:
        return f"{TOKEN_SCHEME}{self.prefix}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in between the redirect to the provider and its callback (kept by the relay,
    found again by a cookie; never sent to the provider but the state and challenge)."""

    provider: str
    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    created: float


@dataclass(frozen=True, slots=True)
class UserSession:
    """A signed-in browser as stored: the hash of its id, never the id."""

    id_hash: str
    user_id: str
    csrf: str
    created_at: float
    last_used_at: float


def new_user_token() -> tuple[str, str]:
    """A fresh personal token and its visible prefix."""
    prefix = secrets.token_hex(4)
    return f"{TOKEN_SCHEME}{prefix}_{secrets.token_urlsafe(32)}", prefix


def is_user_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def new_invite_code() -> str:
    return INVITE_SCHEME + secrets.token_urlsafe(24)


def first_role(existing_users: int, named_operator: bool) -> Role:
    """The role of a new account: operator when it is the first, or the config names it."""
    return Role.OPERATOR if existing_users == 0 or named_operator else Role.USER


def named_in(operators: tuple[str, ...], provider: str, subject: str, email: str | None) -> bool:
    """Whether the config's ``operators`` list names this account (``provider:subject``, or a
    verified email address, compared case-insensitively)."""
    wanted = {o.strip().lower() for o in operators}
    if f"{provider}:{subject}".lower() in wanted:
        return True
    return email is not None and email.lower() in wanted


def can_see_key(viewer: str, key_owner: str | None, membership: Membership | None) -> bool:
    """Whether user ``viewer`` may see (and revoke) a key of a cluster where they are
    ``membership``: an owner sees every key of it, a member only their own."""
    if membership is Membership.OWNER:
        return True
    return membership is Membership.MEMBER and key_owner == viewer
