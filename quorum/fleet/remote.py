"""A peer's models as holders: the one builder for LAN and relay peers (pure).

Both kinds of peer describe their models in the protocol's ``ModelInfo``
(engine kind, loaded state, the service's concurrency limit, and its load:
in flight, queued, learned run time); a model of a
type this node does not know (a newer node's) is left out, and an engine kind
it does not know is a generic OpenAI-compatible one.
"""

from __future__ import annotations

from collections.abc import Iterable

from quorum.config.models import EngineKind, ServiceType
from quorum.fleet.snapshot import Holder, Load, Route
from quorum.protocol import ModelInfo

_TYPES = ServiceType._value2member_map_
_ENGINES = EngineKind._value2member_map_


def _load(m: ModelInfo) -> Load | None:
    if m.in_flight is None:
        return None
    return Load(m.in_flight, m.queued or 0, (m.service_ms or 0) / 1000)


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
            load=_load(m),
        )
        for m in models
        if m.type in _TYPES
    )


LOAD_HEADER = "X-Quorum-Load"
"""On an answer a node serves for a peer: its service's load right after it started."""

_LOAD_KEYS = ("in_flight", "queued", "service_ms")
_MAX_LOAD = 1_000_000


def format_load(load: Load) -> str:
    """``in_flight=3; queued=1; service_ms=420``."""
    return (
        f"in_flight={load.in_flight}; queued={load.queued}; "
        f"service_ms={round(load.service_s * 1000)}"
    )


def parse_load(value: str | None) -> Load | None:
    """The header's load, or None when it is missing or malformed (a peer's bad header
    must not fail the answer it came with)."""
    if not value:
        return None
    fields: dict[str, int] = {}
    for part in value.split(";"):
        name, sep, number = part.strip().partition("=")
        if not sep or name not in _LOAD_KEYS or not number.isdigit():
            return None
        n = int(number)
        if n > _MAX_LOAD:
            return None
        fields[name] = n
    if set(fields) != set(_LOAD_KEYS):
        return None
    return Load(fields["in_flight"], fields["queued"], fields["service_ms"] / 1000)
