"""API keys and secrets as values: their format, hashes, lifetimes and what a key may do.

A key looks like ``qk_<prefix>_<secret>``: ``prefix`` is 8 hex characters,
stored in clear and shown in listings so a person can tell keys apart;
``secret`` carries 256 random bits. Only the SHA-256 of the whole key is
stored: with that much entropy a fast hash is as good as a slow one, and the
lookup stays an index hit. Every function here is pure (time is passed in).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

KEY_SCHEME = "qk_"
_KEY = re.compile(r"qk_([0-9a-f]{8})_([A-Za-z0-9_-]{20,128})")
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def secret_hash(secret: str) -> str:
    """The stored form of a key or token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time equality that also hides the expected secret's length."""
    return hmac.compare_digest(secret_hash(presented), secret_hash(expected))


def new_key() -> tuple[str, str]:
    """A fresh key and its visible prefix: ``("qk_1a2b3c4d_<secret>", "1a2b3c4d")``."""
    prefix = secrets.token_hex(4)
    return f"{KEY_SCHEME}{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str | None:
    """The visible prefix of a well-formed key, or None for anything else."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def display_prefix(prefix: str) -> str:
    return f"{KEY_SCHEME}{prefix}"


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` or ``1d12h``; else ValueError."""
    cleaned = text.strip().lower()
    pos, total = 0, 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned) or total <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)")
    return float(total)


def parse_models(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``; None, empty or ``*`` -> None (every model)."""
    if text is None:
        return None
    models = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    return None if not models or models == ("*",) else models


class KeyState(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


def key_state(revoked_at: float | None, expires_at: float | None, now: float) -> KeyState:
    if revoked_at is not None:
        return KeyState.REVOKED
    if expires_at is not None and now >= expires_at:
        return KeyState.EXPIRED
    return KeyState.ACTIVE


def allows_model(models: Sequence[str] | None, model: str | None) -> bool:
    """Whether a key limited to ``models`` (None: all) may use ``model`` (None: no model)."""
    return models is None or model is None or model in models
