"""What one request learned on its way, and what is made of it at the end: the metrics,
the recent-requests record, the access log line and the usage record.

One line per request goes to the ``quorum.access`` logger at INFO (silence it
alone with that logger's level); its arguments are formatted only when a
handler takes the line.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

from quorum.routing import Endpoint
from quorum.server.metrics import Metrics
from quorum.usage import SseUsageScanner, Usage, UsageRecord, make_record
from quorum.usage import new_request_id as new_usage_id

access_log = logging.getLogger("quorum.access")

# Request ids need to be unique, not secret: 128 random bits without uuid4's
# object and syscall per request.
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered request, for the status page and the dashboard."""

    id: str
    time: float
    endpoint: str
    model: str
    route: str
    node: str
    status: int
    ttfb_ms: float | None
    duration_ms: float
    error: str | None = None


@dataclass(slots=True)
class Exchange:
    """What one request learned on its way, for the log line, metrics and the record."""

    id: str
    endpoint: Endpoint
    started: float = field(default_factory=time.perf_counter)
    model: str = "-"
    route: str = "-"
    node: str = "-"
    status: int = 0
    first_byte: float | None = None
    last_byte: float | None = None  # the whole answer had gone to the sink (perf_counter)
    tokens: int | None = None  # completion tokens: the answer's count, or a stream's events
    error: str | None = None
    attempts: int = 0
    wall_start: float = 0.0
    scanner: SseUsageScanner | None = None  # set when this node records the request's usage
    usage: Usage | None = None
    key_id: str | None = None
    recorded: bool = False
    verbose_from: dict[str, str] | None = None  # verbose_json to make from json: task, language
    audio: bytes | None = None  # the upload, when verbose_json is made here (for its duration)


def usage_record(ex: Exchange) -> UsageRecord:
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    return make_record(
        request_id=new_usage_id(),  # never the client's X-Request-Id: that may repeat
        started_at=ex.wall_start,
        model=ex.model,
        endpoint=ex.endpoint.label,
        route=ex.route,
        node=ex.node,
        status=ex.status,
        duration_s=time.perf_counter() - ex.started,
        ttfb_s=ttfb,
        usage=ex.usage,
        key_id=ex.key_id,
        error=ex.error,
    )


def finish(metrics: Metrics, recent: deque[RequestRecord], ex: Exchange) -> None:
    """Count the request in ``metrics``, keep it in ``recent``, write its access line."""
    end = time.perf_counter()
    duration = end - ex.started
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    label = ex.endpoint.label
    metrics.observe(label, ex.model, ex.route, ex.status, duration, ttfb)
    if ex.error is not None or ex.status >= 400:
        metrics.errors.labels(label, ex.model, ex.route, ex.error or str(ex.status)).inc()
    recent.append(
        RequestRecord(
            id=ex.id,
            time=time.time(),
            endpoint=label,
            model=ex.model,
            route=ex.route,
            node=ex.node,
            status=ex.status,
            ttfb_ms=None if ttfb is None else round(ttfb * 1000, 2),
            duration_ms=round(duration * 1000, 2),
            error=ex.error,
        )
    )
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s model=%s route=%s node=%s status=%s ttfb=%s dur=%.1fms%s",
            ex.id[:12],
            label,
            ex.model,
            ex.route,
            ex.node,
            ex.status,
            _Millis(ttfb),
            duration * 1000,
            _ErrorSuffix(ex.error),
        )


class _Millis:
    """``ttfb=`` of the access line, formatted only if the line is written."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __str__(self) -> str:
        return "-" if self.seconds is None else f"{self.seconds * 1000:.1f}ms"


class _ErrorSuffix:
    __slots__ = ("error",)

    def __init__(self, error: str | None) -> None:
        self.error = error

    def __str__(self) -> str:
        return f" error={self.error}" if self.error else ""
