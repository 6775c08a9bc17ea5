"""HTTP header facts of every Quorum hop: they live in :mod:`quorum.api.headers`."""

from quorum.api.headers import HOP_HEADER, RESPONSE_DROP

__all__ = ["HOP_HEADER", "RESPONSE_DROP"]
