"""The engine manager over an in-memory transport: detection, refresh, down and gone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorum.config import EngineKind, ServiceConfig, ServiceType
from quorum.config.models import AutodetectSection, DetectTarget
from quorum.engines.base import Response, ServiceState
from quorum.engines.detect import identify
from quorum.engines.manager import EngineManager
from quorum.errors import EngineDown


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
