"""The proxy core, transport-free: a request in, an answer out to a sink.

- :mod:`.request`: ``ProxyRequest``, the request as the core sees it.
- :mod:`.sink`: ``Sink``, where an edge lets the core write the answer.
- :mod:`.upstream`: ``Upstream`` and ``Opener``, how the core reaches a holder.
- :mod:`.core`: ``serve`` (parse, key limits, admission, failover).
- :mod:`.answer`: one attempt and the answer path's filters.
- :mod:`.exchange`: what a request learned; metrics, access log, usage record.
"""

from quorum.proxy.context import ProxyContext
from quorum.proxy.core import new_exchange, serve
from quorum.proxy.exchange import Exchange, RequestRecord
from quorum.proxy.request import ProxyRequest
from quorum.proxy.sink import Sink
from quorum.proxy.upstream import Headers, Opener, Upstream

__all__ = [
    "Exchange",
    "Headers",
    "Opener",
    "ProxyContext",
    "ProxyRequest",
    "RequestRecord",
    "Sink",
    "Upstream",
    "new_exchange",
    "serve",
]
