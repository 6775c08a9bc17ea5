"""Token counts found in an answer: moved to :mod:`quorum.api.usage` (kept for old imports)."""

from quorum.api.usage import (
    ResponseUsageScanner,
    SseUsageScanner,
    Usage,
    usage_from_json,
    usage_from_object,
    usage_from_tail,
)

__all__ = [
    "ResponseUsageScanner",
    "SseUsageScanner",
    "Usage",
    "usage_from_json",
    "usage_from_object",
    "usage_from_tail",
]
