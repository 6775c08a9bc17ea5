"""The services this node fronts: configured ones, auto-detected ones, the embedded one.

Each refresh asks every engine what it holds, concurrently, and reports the
whole list to ``on_change`` when anything differs from the last round. A
configured service that stops answering stays listed with ``up=False`` (its
models are known, so clients get 503); an auto-detected engine that stops
answering is dropped (its models are no longer known here).

Probing never disturbs an engine. A service with requests in flight is alive
by its own traffic and is not asked (``ProbeGate``): llama-cpp-python's
server ends a running stream when another request arrives, and single-slot
engines queue the probe behind a long answer. A probe of an idle service
holds one of its slots, like a request, so nothing starts beside it. A probe
that a service which was up leaves unanswered (``EngineSilent``) means busy,
not down: it stays up, and real traffic decides. An engine is identified once
per address, so each refresh costs it one request (and, for vLLM and
llama.cpp, one read of its ``/metrics``: the load it publishes, handed to
``on_load`` by service name after each refresh; :mod:`.capacity`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

from quorum.config.models import AutodetectSection, EngineKind, ServiceConfig, ServiceType
from quorum.engines import ollama, openai_compat
from quorum.engines.base import HttpGet, ModelEntry, ServiceState, auth_headers, root_url
from quorum.engines.capacity import EngineLoad, read_load, read_slots
from quorum.engines.detect import identify
from quorum.errors import EngineDown, EngineError, EngineSilent

log = logging.getLogger("quorum.engines")


async def list_models(
    get: HttpGet, root: str, engine: EngineKind, default: ServiceType, api_key: str | None
) -> tuple[ModelEntry, ...]:
    headers = auth_headers(api_key)
    if engine is EngineKind.OLLAMA:
        return await ollama.list_models(get, root, headers, default)
    return await openai_compat.list_models(get, root, headers, engine, default)


def _configured_models(
    cfg: ServiceConfig, listed: tuple[ModelEntry, ...]
) -> tuple[ModelEntry, ...]:
    """The manifest's models, with the engine's loaded state and upstream name where known."""
    by_name = {m.name: m for m in listed}
    out = []
    for ref in cfg.models:
        seen = by_name.get(ref.name)
        out.append(
            ModelEntry(
                name=ref.name,
                upstream=seen.upstream if seen else ref.name,
                type=cfg.type,
                loaded=seen.loaded if seen else None,
            )
        )
    return tuple(out)


class ProbeGate(Protocol):
    """Who knows a local service's traffic: lets a probe through only when it is idle."""

    def reserve(self, service: str) -> bool: ...

    def release(self, service: str) -> None: ...


class _Open:
    def reserve(self, service: str) -> bool:
        return True

    def release(self, service: str) -> None:
        return None


class EngineManager:
    """Keeps ``states`` current; owns no task itself (``run`` is awaited by the node's task)."""

    def __init__(
        self,
        services: tuple[ServiceConfig, ...],
        autodetect: AutodetectSection,
        get: HttpGet,
        on_change: Callable[[tuple[ServiceState, ...]], None],
        gate: ProbeGate | None = None,
        on_load: Callable[[str, EngineLoad], None] | None = None,
    ) -> None:
        self._services = services
        self._on_load = on_load
        self._loads: dict[str, EngineLoad] = {}  # read this refresh, by service root
        self._gate: ProbeGate = gate if gate is not None else _Open()
        self._root_kinds: dict[str, EngineKind] = {}  # identified engine per detected root
        self._autodetect = autodetect
        self._get = get
        self._on_change = on_change
        self._kinds: dict[str, EngineKind] = {}  # identified engine per configured service
        self._last: dict[str, ServiceState] = {}
        self._embedded: ServiceState | None = None
        self.states: tuple[ServiceState, ...] = ()

    def set_embedded(self, state: ServiceState | None) -> None:
        self._embedded = state
        self._publish(self._without_embedded() + ((state,) if state else ()))

    def _without_embedded(self) -> tuple[ServiceState, ...]:
        return tuple(s for s in self.states if s.engine is not EngineKind.EMBEDDED)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._autodetect.interval_s)
            await self.refresh()

    async def refresh(self) -> tuple[ServiceState, ...]:
        configured_roots = {root_url(s.url) for s in self._services}
        if self._embedded is not None:
            configured_roots.add(self._embedded.root)
        jobs: list[Coroutine[Any, Any, ServiceState | None]] = [
            self._configured(s) for s in self._services
        ]
        if self._autodetect.enabled:
            jobs += [
                self._detected(t.engine, root_url(t.url))
                for t in self._autodetect.targets
                if root_url(t.url) not in configured_roots
            ]
        self._loads = {}
        found = await asyncio.gather(*jobs)
        states = tuple(s for s in found if s is not None)
        if self._embedded is not None:
            states += (self._embedded,)
        self._publish(_unique_names(states))
        if self._on_load is not None:
            for state in self.states:
                load = self._loads.get(state.root)
                if load is not None:
                    self._on_load(state.name, load)
        return self.states

    async def _read(self, root: str, headers: dict[str, str], engine: EngineKind) -> int | None:
        """What the engine publishes of its capacity (its slots; its load, kept for
        ``on_load``), asked while the probe holds its slot."""
        slots = await read_slots(self._get, root, headers, engine)
        if self._on_load is not None:
            load = await read_load(self._get, root, headers, engine)
            if load is not None:
                self._loads[root] = load
        return slots

    def _publish(self, states: tuple[ServiceState, ...]) -> None:
        if states == self.states:
            return
        _log_changes(self._last, states)
        self._last = {s.name: s for s in states}
        self.states = states
        self._on_change(states)

    async def _configured(self, cfg: ServiceConfig) -> ServiceState:
        previous = self._last.get(cfg.name)
        if previous is not None and previous.up and not self._gate.reserve(cfg.name):
            return previous  # busy: alive by its own traffic
        try:
            return await self._probe_configured(cfg, previous)
        finally:
            if previous is not None and previous.up:
                self._gate.release(cfg.name)

    async def _probe_configured(
        self, cfg: ServiceConfig, previous: ServiceState | None
    ) -> ServiceState:
        root = root_url(cfg.url)
        base = ServiceState(
            name=cfg.name,
            type=cfg.type,
            engine=cfg.engine or self._kinds.get(cfg.name, EngineKind.OPENAI),
            root=root,
            models=previous.models if previous else _configured_models(cfg, ()),
            up=False,
            features=cfg.features,
            api_key=cfg.api_key,
            header_timeout_s=cfg.header_timeout_s,
        )
        try:
            engine = cfg.engine or self._kinds.get(cfg.name)
            if engine is None:
                engine = await identify(self._get, root, auth_headers(cfg.api_key))
                self._kinds[cfg.name] = engine
            try:
                listed = await list_models(self._get, root, engine, cfg.type, cfg.api_key)
            except EngineDown:
                raise
            except EngineError:
                if not cfg.models:
                    raise
                listed = ()  # it answers but lists nothing we understand: trust the manifest
            models = _configured_models(cfg, listed) if cfg.models else listed
            slots = await self._read(root, auth_headers(cfg.api_key), engine)
            return replace(base, engine=engine, models=models, up=True, slots=slots)
        except EngineSilent:
            if previous is not None and previous.up:
                log.debug("service %s is slow to answer its probe: busy, still up", cfg.name)
                return previous
            return replace(base, error=f"{cfg.name} does not answer")
        except EngineError as exc:
            return replace(base, error=str(exc))

    async def _detected(self, hint: EngineKind, root: str) -> ServiceState | None:
        previous = next((s for s in self._last.values() if s.detected and s.root == root), None)
        if previous is not None and not self._gate.reserve(previous.name):
            return previous  # busy: alive by its own traffic
        try:
            engine = self._root_kinds.get(root)
            if engine is None:
                engine = await identify(self._get, root, {}, hint)
                self._root_kinds[root] = engine
            models = await list_models(self._get, root, engine, ServiceType.LLM, None)
            slots = await self._read(root, {}, engine)
        except EngineSilent:
            return previous  # it took the connection: busy if it was up, else not there yet
        except EngineError:
            self._root_kinds.pop(root, None)  # gone, or something else listens there now
            return None
        finally:
            if previous is not None:
                self._gate.release(previous.name)
        return ServiceState(
            name=engine.value,
            type=ServiceType.LLM,
            engine=engine,
            root=root,
            models=models,
            up=True,
            detected=True,
            slots=slots,
        )


def _unique_names(states: tuple[ServiceState, ...]) -> tuple[ServiceState, ...]:
    """Detected services are named after their engine; make a clash unique by port."""
    seen: set[str] = set()
    out = []
    for state in states:
        name = state.name
        if name in seen:
            name = f"{name}@{state.root.rsplit(':', 1)[-1]}"
        seen.add(name)
        out.append(state if name == state.name else replace(state, name=name))
    return tuple(out)


def _log_changes(before: dict[str, ServiceState], after: tuple[ServiceState, ...]) -> None:
    now = {s.name: s for s in after}
    for name in before.keys() - now.keys():
        log.info("service %s is gone", name)
    for name, state in now.items():
        old = before.get(name)
        if old is None:
            log.info(
                "service %s (%s at %s): %s, %d model(s)",
                name,
                state.engine.value,
                state.root,
                "up" if state.up else f"down: {state.error}",
                len(state.models),
            )
            continue
        if old.up != state.up:
            if state.up:
                log.info("service %s is up again", name)
            else:
                log.warning("service %s is down: %s", name, state.error)
        added = {m.name for m in state.models} - {m.name for m in old.models}
        removed = {m.name for m in old.models} - {m.name for m in state.models}
        if added or removed:
            log.info(
                "service %s models: +%s -%s",
                name,
                ",".join(sorted(added)) or "none",
                ",".join(sorted(removed)) or "none",
            )
