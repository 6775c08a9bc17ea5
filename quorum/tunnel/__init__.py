"""The node's side of the relay tunnel: one outbound WebSocket, pumped through the protocol.

- :mod:`.streams`: one request stream, either direction, as asyncio objects.
- :mod:`.client`: the connection loop (reconnect with backoff, liveness,
  presence every 30 s) and the bridge to the fleet and the proxy.
"""

from quorum.tunnel.client import TunnelClient, TunnelStatus
from quorum.tunnel.streams import TunnelResponse

__all__ = ["TunnelClient", "TunnelResponse", "TunnelStatus"]
