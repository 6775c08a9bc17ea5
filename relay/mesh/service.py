"""Joining and leaving the mesh, as ``quorum-relay serve --nats URL`` does."""

from __future__ import annotations

import logging

from relay.hub import Hub
from relay.mesh.bus import NatsBus
from relay.mesh.mesh import Mesh
from relay.mesh.wire import check_prefix

log = logging.getLogger("relay.mesh")

NATS_ENV = "QUORUM_RELAY_NATS"
"""Where ``--nats`` is read from when it is not given."""
DEFAULT_PREFIX = "quorum"


async def join(hub: Hub, url: str | None, prefix: str, *, name: str) -> Mesh | None:
    """The hub's mesh through NATS at ``url`` (None without one: a relay alone).
    ``MeshError`` if NATS cannot be reached; ValueError for a bad prefix."""
    if not url:
        return None
    bus = await NatsBus.connect(url, name=name)
    mesh = Mesh(hub, bus, prefix=check_prefix(prefix))
    await mesh.start()
    return mesh


async def leave(mesh: Mesh | None) -> None:
    """Tell the others this relay is gone (its nodes are elsewhere by now), then disconnect."""
    if mesh is None:
        return
    await mesh.close()
    await mesh.bus.close()
