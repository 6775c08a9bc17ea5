"""This node's own engines, as the node wires them in (``app.Node``).

- ``local_holders``: what the engine manager found becomes ``route=local`` holders.
- ``ProbeGate``: the engine manager probes a local service only while the scheduler
  sees it idle.
- ``embedded_engine`` decides whether the embedded engine is to run (``embedded.mode``:
  off; auto, only when no other engine holds a model; on) and ``start_embedded`` starts
  it; a start that fails leaves the node serving, with the engine down and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp

from quorum.config.models import EmbeddedMode, EmbeddedSection
from quorum.engines import embedded
from quorum.engines.base import ServiceState, make_http_get
from quorum.engines.embedded import EmbeddedEngine
from quorum.engines.manager import EngineManager
from quorum.errors import EmbeddedEngineError
from quorum.fleet import Holder, Route
from quorum.server.context import NodeContext

log = logging.getLogger("quorum.node")


def local_holders(states: tuple[ServiceState, ...], nid: str, name: str) -> tuple[Holder, ...]:
    return tuple(
        Holder(
            model=m.name,
            type=m.type,
            node_id=nid,
            node_name=name,
            route=Route.LOCAL,
            service=s.name,
            engine=s.engine,
            url=s.root,
            upstream_model=m.upstream,
            features=s.features,
            loaded=m.loaded,
            online=s.up,
            down_reason=None if s.up else s.error,
            api_key=s.api_key,
            header_timeout_s=s.header_timeout_s,
            limit=s.slots,  # what the engine publishes (llama.cpp's total slots)
        )
        for s in states
        for m in s.models
    )


class ProbeGate:
    """Lets the engine manager probe a local service only while the scheduler sees it idle."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def reserve(self, service: str) -> bool:
        return self._ctx.scheduler.reserve_probe((self._ctx.node_id, service, Route.LOCAL))

    def release(self, service: str) -> None:
        self._ctx.scheduler.release_probe((self._ctx.node_id, service, Route.LOCAL))


def embedded_engine(
    cfg: EmbeddedSection,
    data_dir: Path,
    session: aiohttp.ClientSession,
    manager: EngineManager,
) -> EmbeddedEngine | None:
    """The embedded engine to start, or None: its mode says no, another engine holds a
    model (auto), or it is not installed (auto: a warning says what to do)."""
    mode = cfg.mode
    if mode is EmbeddedMode.OFF:
        return None
    has_models = any(s.models for s in manager.states)
    if mode is EmbeddedMode.AUTO and has_models:
        return None
    if not embedded.installed():
        if mode is EmbeddedMode.ON:
            raise EmbeddedEngineError(
                "embedded.mode is 'on' but the embedded engine is not installed: "
                "pip install 'quorum[embedded]'"
            )
        log.warning(
            "no engine found on this machine (looked for Ollama, LM Studio, llama.cpp, "
            "vLLM, mlx_lm); start one, add a service to the config, or install the "
            "embedded engine with: pip install 'quorum[embedded]'"
        )
        return None
    return EmbeddedEngine(cfg, data_dir, make_http_get(session))


async def start_embedded(engine: EmbeddedEngine, manager: EngineManager) -> None:
    """Start ``engine`` and tell ``manager`` its state, up or down."""
    try:
        manager.set_embedded(await engine.start())
    except EmbeddedEngineError as exc:
        # The node still serves (peers, other engines) and says why this one is down.
        log.error("the embedded engine did not start: %s", exc)
        engine.crashes = 1
        manager.set_embedded(engine.state(up=False, error=str(exc)))
