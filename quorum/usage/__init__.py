"""Usage: token counts read from answers, per-request records, and the node's durable outbox.

- :mod:`quorum.api.usage` (pure, stdlib only; the relay uses it too): ``Usage``,
  ``usage_from_json``, ``SseUsageScanner``, ``ResponseUsageScanner``.
- ``UsageRecord``: one request's record, the protocol's ``RequestUsage``
  (node and relay validate the same shape); :mod:`.record` builds one
  (``make_record``) and states who records what.
- :mod:`.outbox`: ``Outbox``, a SQLite queue in the node's data directory that
  ships records to the relay and forgets them only once the relay committed.
"""

from quorum.api.usage import (
    ResponseUsageScanner,
    SseUsageScanner,
    Usage,
    usage_from_json,
    usage_from_object,
)
from quorum.protocol import RequestUsage as UsageRecord
from quorum.usage.record import make_record, new_request_id

__all__ = [
    "ResponseUsageScanner",
    "SseUsageScanner",
    "Usage",
    "UsageRecord",
    "make_record",
    "new_request_id",
    "usage_from_json",
    "usage_from_object",
]
