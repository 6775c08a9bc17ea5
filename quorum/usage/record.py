"""Building the one usage record of a request, from what the proxy learned on its way.

Rules the proxy keeps (see ``Outbox`` for shipping):
- **The entry point records.** The node that took the request from its
  client writes the record (route ``local``, ``lan`` or ``relay``; ``node`` is
  the serving node). A node serving a forwarded request (``X-Quorum-Hop``)
  writes none; the relay writes the records of its own public ``/v1``. So
  each request is counted once, wherever it was served.
- **The record id is the node's own**, fresh per request (``new_request_id``),
  never a client's ``X-Request-Id``: a client reusing one would otherwise
  make the relay drop records as duplicates.
- Append the record before the client can see the answer complete where the
  proxy can (before ``write_eof``), so a crash after the answer cannot lose it.
"""

from __future__ import annotations

import uuid

from quorum.api.usage import Usage
from quorum.protocol import RequestUsage as UsageRecord


def new_request_id() -> str:
    return uuid.uuid4().hex


def make_record(
    *,
    request_id: str,
    started_at: float,
    model: str,
    endpoint: str,
    route: str,
    node: str,
    status: int,
    duration_s: float,
    ttfb_s: float | None,
    usage: Usage | None,
    key_id: str | None = None,
    error: str | None = None,
) -> UsageRecord:
    """A valid record whatever the request carried (over-long names are cut, not refused).

    ``started_at`` is wall-clock time (``time.time()``) at the start of the request.
    """
    return UsageRecord(
        request_id=request_id,
        time_ms=max(0, int(started_at * 1000)),
        model=model[:1024],
        endpoint=endpoint[:64] or "unknown",
        route=route[:64] or "unknown",
        node=node[:256],
        status=min(max(status, 0), 999),
        duration_ms=round(min(max(duration_s, 0.0), 864_000.0) * 1000, 3),
        ttfb_ms=None if ttfb_s is None else round(min(max(ttfb_s, 0.0), 864_000.0) * 1000, 3),
        prompt_tokens=None if usage is None else usage.prompt_tokens,
        completion_tokens=None if usage is None else usage.completion_tokens,
        key_id=key_id,
        error=None if error is None else error[:128],
    )
