"""The engine manager over an in-memory transport: detection, refresh, down and gone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorum.config import EngineKind, ServiceConfig, ServiceType
from quorum.config.models import AutodetectSection, DetectTarget
from quorum.engines.base import Response, ServiceState
from quorum.engines.detect import identify
from quorum.engines.manager import EngineManager
from quorum.errors import EngineDown, EngineSilent


class FakeNet:
    """Engines as dicts of path -> JSON; a root not in ``hosts`` refuses connections."""

    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def get(self, url: str, headers: Mapping[str, str]) -> Response:
        self.calls.append(url)
        for root, paths in self.hosts.items():
            if url.startswith(root + "/"):
                path = url[len(root) :]
                return Response(200, paths[path]) if path in paths else Response(404, None)
        raise EngineDown(f"connection refused at {url}")


def models(*ids: str, owned_by: str = "x") -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "owned_by": owned_by} for i in ids],
    }


OLLAMA = {
    "/v1/models": models("llama3.2:latest", owned_by="library"),
    "/api/tags": {"models": [{"name": "llama3.2:latest", "details": {"family": "llama"}}]},
    "/api/ps": {"models": []},
}
LMSTUDIO = {
    "/v1/models": models("qwen", owned_by="organization_owner"),
    "/api/v0/models": {"data": [{"id": "qwen", "type": "llm", "state": "loaded"}]},
}
LLAMACPP = {"/v1/models": models("/m/a.gguf", owned_by="llamacpp")}
LLAMACPP_OLD = {"/v1/models": models("/m/a.gguf"), "/props": {"default_generation_settings": {}}}
VLLM = {"/v1/models": models("Qwen/Qwen3", owned_by="vllm")}
MLX = {"/v1/models": models("mlx-community/Llama-3.2-3B-Instruct-4bit")}


async def test_identify_each_engine() -> None:
    net = FakeNet()
    cases = [
        (OLLAMA, None, EngineKind.OLLAMA),
        (LMSTUDIO, None, EngineKind.LMSTUDIO),
        (LLAMACPP, None, EngineKind.LLAMACPP),
        (LLAMACPP_OLD, None, EngineKind.LLAMACPP),
        (VLLM, None, EngineKind.VLLM),
        (MLX, EngineKind.LLAMACPP, EngineKind.MLX),  # port 8080 that is not llama.cpp
        (MLX, None, EngineKind.OPENAI),
    ]
    for paths, hint, kind in cases:
        net.hosts = {"http://e": paths}
        assert await identify(net.get, "http://e", {}, hint) is kind


def detect_all(net: FakeNet) -> AutodetectSection:
    return AutodetectSection(
        targets=(
            DetectTarget(engine=EngineKind.OLLAMA, url="http://o"),
            DetectTarget(engine=EngineKind.LMSTUDIO, url="http://l"),
            DetectTarget(engine=EngineKind.LLAMACPP, url="http://c"),
            DetectTarget(engine=EngineKind.VLLM, url="http://v"),
        )
    )


async def test_autodetect_finds_what_runs_and_follows_changes() -> None:
    net = FakeNet()
    reports: list[tuple[ServiceState, ...]] = []
    manager = EngineManager((), detect_all(net), net.get, reports.append)
    net.hosts = {"http://o": dict(OLLAMA), "http://c": MLX}
    states = await manager.refresh()
    assert {(s.name, s.engine) for s in states} == {
        ("ollama", EngineKind.OLLAMA),
        ("mlx", EngineKind.MLX),
    }
    # A model pulled into Ollama shows up on the next refresh.
    net.hosts["http://o"]["/api/tags"] = {
        "models": [{"name": "llama3.2:latest"}, {"name": "qwen3:8b"}]
    }
    net.hosts["http://o"]["/api/ps"] = {"models": [{"name": "qwen3:8b"}]}
    states = await manager.refresh()
    (olla,) = [s for s in states if s.name == "ollama"]
    assert [(m.name, m.loaded) for m in olla.models] == [
        ("llama3.2:latest", False),
        ("qwen3:8b", True),
    ]
    # A stopped engine drops out.
    del net.hosts["http://c"]
    states = await manager.refresh()
    assert [s.name for s in states] == ["ollama"]
    assert len(reports) == 3
    # Nothing changed: no report.
    await manager.refresh()
    assert len(reports) == 3


async def test_configured_service_down_keeps_its_models_known() -> None:
    net = FakeNet()
    cfg = ServiceConfig(name="asr", type=ServiceType.STT, url="http://a/v1", models=({"id": "w"},))
    manager = EngineManager((cfg,), AutodetectSection(enabled=False), net.get, lambda s: None)
    net.hosts = {"http://a": VLLM}
    (state,) = await manager.refresh()
    assert state.up and state.engine is EngineKind.VLLM
    assert [(m.name, m.type) for m in state.models] == [("w", ServiceType.STT)]
    net.hosts = {}
    (state,) = await manager.refresh()
    assert not state.up and "refused" in (state.error or "")
    assert [m.name for m in state.models] == ["w"]


async def test_configured_service_without_models_lists_the_engines() -> None:
    net = FakeNet()
    cfg = ServiceConfig(name="box", engine=EngineKind.LLAMACPP, url="http://b")
    manager = EngineManager((cfg,), AutodetectSection(enabled=False), net.get, lambda s: None)
    net.hosts = {"http://b": LLAMACPP}
    (state,) = await manager.refresh()
    assert [(m.name, m.upstream) for m in state.models] == [("a", "/m/a.gguf")]


async def test_configured_root_is_not_detected_twice() -> None:
    net = FakeNet()
    net.hosts = {"http://o": OLLAMA}
    cfg = ServiceConfig(name="mine", engine=EngineKind.OLLAMA, url="http://o/v1")
    manager = EngineManager((cfg,), detect_all(net), net.get, lambda s: None)
    assert [s.name for s in await manager.refresh()] == ["mine"]


class Gate:
    """A probe gate whose services are busy when listed in ``busy``."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.held: list[str] = []

    def reserve(self, service: str) -> bool:
        if service in self.busy:
            return False
        self.held.append(service)
        return True

    def release(self, service: str) -> None:
        self.held.remove(service)


class SilentNet(FakeNet):
    """Like FakeNet, but ``silent`` roots take the connection and never answer in time."""

    def __init__(self) -> None:
        super().__init__()
        self.silent: set[str] = set()

    async def get(self, url: str, headers: Mapping[str, str]) -> Response:
        if any(url.startswith(root + "/") for root in self.silent):
            self.calls.append(url)
            raise EngineSilent(f"no answer from {url} within 3 s")
        return await super().get(url, headers)


LLAMACPP_PYTHON = {"/v1/models": models("gemma", owned_by="me")}


async def test_llamacpp_python_is_recognised() -> None:
    net = FakeNet()
    net.hosts["http://h:8000"] = LLAMACPP_PYTHON
    assert await identify(net.get, "http://h:8000", {}) is EngineKind.LLAMACPP_PYTHON


async def test_a_busy_service_is_not_probed_and_stays_as_it_was() -> None:
    net, gate = FakeNet(), Gate()
    net.hosts["http://h:1"] = LLAMACPP_PYTHON
    cfg = ServiceConfig(name="lcp", url="http://h:1/v1")
    seen: list[tuple[ServiceState, ...]] = []
    manager = EngineManager((cfg,), AutodetectSection(enabled=False), net.get, seen.append, gate)
    (first,) = await manager.refresh()
    assert first.up and first.engine is EngineKind.LLAMACPP_PYTHON
    calls = len(net.calls)
    gate.busy.add("lcp")
    (again,) = await manager.refresh()
    assert again == first
    assert len(net.calls) == calls  # not a single request while it is busy
    gate.busy.clear()
    await manager.refresh()
    assert len(net.calls) == calls + 1  # idle again: one request per refresh
    assert gate.held == []  # every slot it took is given back


async def test_a_silent_probe_of_a_service_that_was_up_means_busy() -> None:
    net, gate = SilentNet(), Gate()
    net.hosts["http://h:1"] = LLAMACPP_PYTHON
    cfg = ServiceConfig(name="lcp", url="http://h:1/v1")
    manager = EngineManager((cfg,), AutodetectSection(enabled=False), net.get, lambda s: None, gate)
    (first,) = await manager.refresh()
    net.silent.add("http://h:1")
    (again,) = await manager.refresh()
    assert again.up and again == first
    # One that never answered is not "busy": it is down, and says so.
    fresh = EngineManager(
        (ServiceConfig(name="new", url="http://h:1/v1", engine="openai"),),
        AutodetectSection(enabled=False),
        net.get,
        lambda s: None,
        Gate(),
    )
    (down,) = await fresh.refresh()
    assert not down.up and down.error


async def test_a_detected_engine_is_identified_once() -> None:
    net = FakeNet()
    net.hosts["http://127.0.0.1:11434"] = OLLAMA
    auto = AutodetectSection(
        targets=(DetectTarget(engine=EngineKind.OLLAMA, url="http://127.0.0.1:11434"),)
    )
    manager = EngineManager((), auto, net.get, lambda s: None, Gate())
    await manager.refresh()
    first = len(net.calls)
    await manager.refresh()
    # Only its model list (Ollama: tags and ps), no identification again.
    assert [c.rsplit(":11434", 1)[1] for c in net.calls[first:]] == ["/api/tags", "/api/ps"]
