"""The REVOCATION payload, built like the others (``messages.py``), and its capability.

The relay sends it to a node whose HELLO announced ``revocations`` when credentials
of the node's cluster stopped counting (an API key revoked, a member removed, a
user disabled or enabled); the rules are in the package docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import _MAX_TEXT, _check_str, _Message

REVOCATIONS = "revocations"
"""The capability a node announces in HELLO to be sent REVOCATION frames."""


@dataclass(frozen=True, slots=True)
class Revocation(_Message):
    """Drop every answer cached about API keys, so the next request is checked again.
    ``message`` says why, for the node's log; nothing else is said: which key or user
    it was is none of the other nodes' business."""

    message: str = ""

    def __post_init__(self) -> None:
        _check_str("message", self.message, max_len=_MAX_TEXT, empty=True)
