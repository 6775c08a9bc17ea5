"""What the proxy core reads of the node (a protocol: ``NodeContext`` is one)."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from quorum.fleet import FleetSnapshot
from quorum.fleet.recent import RecentModels
from quorum.proxy.exchange import RequestRecord
from quorum.proxy.upstream import Opener
from quorum.server.metrics import Metrics
from quorum.server.scheduler import Scheduler
from quorum.usage.outbox import Outbox


class ProxyContext(Protocol):
    @property
    def snapshot(self) -> FleetSnapshot:
        """Replaced, never mutated: read it afresh each time."""
        ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def recent(self) -> deque[RequestRecord]: ...

    @property
    def outbox(self) -> Outbox | None: ...

    @property
    def opener(self) -> Opener: ...

    @property
    def recent_models(self) -> RecentModels: ...

    @property
    def name(self) -> str: ...
