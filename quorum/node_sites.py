"""Where the node's HTTP server listens (``app.Node``).

- ``open_node_site``: the node's own port (``node.port`` on ``bind``) behind the
  connection guard, in TLS with the cluster's certificate when there is one. A port
  already in use is a ``QuorumError`` saying another node may run there.
- ``open_ollama_site``: apps that assume Ollama reach the cluster on its port
  (loopback only), if nothing holds it; a port taken (by Ollama) is skipped.
"""

from __future__ import annotations

import errno
import logging
import ssl

from aiohttp import web

from quorum.config.models import NodeSection
from quorum.errors import QuorumError
from quorum.netguard import GuardedSite

log = logging.getLogger("quorum.node")


async def open_node_site(
    runner: web.AppRunner, bind: str, node: NodeSection, tls: ssl.SSLContext | None
) -> int:
    """Listen on the node's port; returns the port bound (``node.port`` may be 0)."""
    site = GuardedSite(
        runner,
        bind,
        node.port,
        head_timeout_s=node.head_timeout_s,
        body_idle_s=node.body_idle_s,
        per_address=node.max_connections_per_address,
        tls=tls,
        plain_lan=node.allow_plain_lan,
    )
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise QuorumError(
                f"port {node.port} on {bind} is already in use: "
                "is another node running? ('quorum status' asks it), or pick --port"
            ) from None
        raise QuorumError(f"cannot listen on {bind}: {exc}") from None
    return int(runner.addresses[0][1])


async def open_ollama_site(runner: web.AppRunner, port: int) -> bool:
    """Apps that assume Ollama reach the cluster on its port, if nothing holds it;
    returns whether it listens there."""
    site = GuardedSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise QuorumError(f"cannot listen on 127.0.0.1:{port}: {exc}") from None
        log.info("port %d is taken (Ollama runs here): not answering on it", port)
        return False
    log.info("also answering Ollama's API on 127.0.0.1:%d", port)
    return True
