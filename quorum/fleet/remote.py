"""A peer's models as holders: the one builder for LAN and relay peers (pure).

Both kinds of peer describe their models in the protocol's ``ModelInfo``
(engine kind, loaded state, the service's concurrency limit); a model of a
type this node does not know (a newer node's) is left out, and an engine kind
it does not know is a generic OpenAI-compatible one.
"""

from __future__ import annotations

from collections.abc import Iterable

from quorum.config.models import EngineKind, ServiceType
from quorum.fleet.snapshot import Holder, Route
from quorum.protocol import ModelInfo

_TYPES = ServiceType._value2member_map_
_ENGINES = EngineKind._value2member_map_


def peer_holders(
    node_id: str,
    node_name: str,
    route: Route,
    url: str,
    models: Iterable[ModelInfo],
    *,
    api_key: str | None = None,
) -> tuple[Holder, ...]:
    """The holders of one peer reached by ``route`` at ``url``."""
    return tuple(
        Holder(
            model=m.id,
            type=ServiceType(m.type),
            node_id=node_id,
            node_name=node_name or node_id[:8],
            route=route,
            service=m.service,
            engine=EngineKind(m.engine) if m.engine in _ENGINES else EngineKind.OPENAI,
            url=url,
            upstream_model=m.id,
            features=frozenset(m.features),
            loaded=m.loaded,
            api_key=api_key,
            limit=m.limit or None,
        )
        for m in models
        if m.type in _TYPES
    )
