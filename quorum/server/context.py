"""What the HTTP handlers read of the node: one mutable holder of immutable values."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from quorum.config.models import Config
from quorum.discovery.peers import PeerView
from quorum.engines.base import ServiceState
from quorum.fleet import FleetSnapshot
from quorum.fleet.recent import RecentModels
from quorum.keys import KeyInfo, KeyVerifier
from quorum.proxy import Opener, RequestRecord
from quorum.secure import ClusterTLS, Identity
from quorum.server.metrics import Metrics
from quorum.server.scheduler import Scheduler
from quorum.server.upstream import NodeOpener
from quorum.tunnel import TunnelClient
from quorum.usage.outbox import Outbox

RECENT_REQUESTS = 100


@dataclass
class NodeContext:
    """What the handlers and the proxy core read of the node; one per node, on its loop.

    Two kinds of field, and nothing else:

    - Values, replaced whole and never mutated (``snapshot``, ``services``,
      ``config``): a reader holding one sees a consistent picture, however the
      fleet changes meanwhile. Read them afresh on each use.
    - Parts owned here and changed in place by their own methods only
      (``scheduler``, ``metrics``, ``recent``, ``recent_models``), or set once while the node
      starts (``port``, ``bind``, ``fingerprint``, ``identity``, ``tls``, ``peers``, ``tunnel``,
      ``keys``, ``outbox``, ``ready``) and toggled by the node alone
      (``sharing_paused``).
    """

    config: Config
    node_id: str
    session: aiohttp.ClientSession
    snapshot: FleetSnapshot
    services: tuple[ServiceState, ...] = ()
    metrics: Metrics = field(default_factory=Metrics)
    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    port: int = 0
    bind: str = "127.0.0.1"
    fingerprint: str | None = None  # the cluster discriminator (cluster.token's, shown)
    identity: Identity | None = None  # this node's key; its fingerprint is shown everywhere
    tls: ClusterTLS | None = None  # mutual TLS with members (with a cluster token)
    peers: Callable[[], Sequence[PeerView]] = lambda: ()
    tunnel: TunnelClient | None = None
    sharing_paused: bool = False
    keys: KeyVerifier | None = None  # API keys are checked against the relay
    outbox: Outbox | None = None  # usage records waiting to reach the relay
    scheduler: Scheduler = field(init=False)
    recent_models: RecentModels = field(default_factory=RecentModels)
    opener: Opener = field(init=False)  # how the proxy core reaches holders (tests replace it)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.config.routing, self.config.aliases)
        self.opener = NodeOpener(self)

    @property
    def name(self) -> str:
        return self.config.node.name

    @property
    def max_body_bytes(self) -> int:
        return int(self.config.node.max_body_mb * 1024 * 1024)


class Caller(enum.Enum):
    """Who a request is from, as the auth middleware established it."""

    LOCAL = "local"  # this machine (loopback trust)
    PEER = "peer"  # another node of the cluster (it proved the cluster's secret)
    KEY = "key"  # an app with an API key


CONTEXT: web.AppKey[NodeContext] = web.AppKey("quorum_context", NodeContext)
ATTEMPTS: web.RequestKey[int] = web.RequestKey("quorum_attempts", int)
KEY_INFO: web.RequestKey[KeyInfo] = web.RequestKey("quorum_key", KeyInfo)
CALLER: web.RequestKey[Caller] = web.RequestKey("quorum_caller", Caller)
"""The API key a non-loopback client presented, once the relay vouched for it."""
"""How many holders a request was tried on (the X-Quorum-Attempts header)."""
