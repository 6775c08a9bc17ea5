"""The node's side of the relay tunnel: one outbound WebSocket, pumped by :mod:`quorum.link`.

- :mod:`.client`: ``TunnelClient``, the connection loop (reconnect with
  backoff, presence every 30 s), requests to other nodes, and the handler
  that serves streams the relay opens (``StreamHandler``).
- :mod:`.dial`: the ``websockets`` connection as a ``quorum.link`` transport.
- :mod:`.loopback`: the default handler, forwarding over loopback HTTP.
- :mod:`.peers`: the relay's presence of other nodes, as fleet events.
- :mod:`.streams`: ``TunnelResponse``, an answer read as the proxy reads any upstream.
"""

from quorum.tunnel.client import StreamHandler, TunnelClient, TunnelStatus
from quorum.tunnel.streams import TunnelResponse

__all__ = ["StreamHandler", "TunnelClient", "TunnelResponse", "TunnelStatus"]
