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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    RERANK = "rerank"


class EngineKind(enum.StrEnum):
    """How to talk to a service's engine: how it lists models and what its quirks are."""

    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    MLX = "mlx"
    LLAMACPP_PYTHON = "llama-cpp-python"  # ``python -m llama_cpp.server``: one at a time
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
    "llama_cpp_python": EngineKind.LLAMACPP_PYTHON,
    "llama-cpp-python-server": EngineKind.LLAMACPP_PYTHON,
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

    name: str = Field(min_length=1, description="Unique name of the service on this node.")
    type: ServiceType = Field(
        default=ServiceType.LLM, description="What it serves: llm, stt, tts, image, embedding."
    )
    engine: EngineKind | None = Field(
        default=None,
        description="ollama, lmstudio, llamacpp, vllm, mlx, llama-cpp-python, openai; "
        "unset: found by probing.",
    )
    url: Annotated[str, Field(pattern=r"^https?://")] = Field(
        description="The engine's address, with or without the trailing /v1."
    )
    models: tuple[ModelRef, ...] = Field(
        default=(), description="Models to offer ({id} or {hf}); unset: whatever the engine lists."
    )
    features: frozenset[str] = Field(
        default=frozenset(), description="Capabilities, e.g. timestamps for stt services."
    )
    api_key: str | None = Field(default=None, description="Bearer key the engine wants, if any.")
    header_timeout_s: float = Field(
        default=600.0, gt=0, description="Seconds to wait for the engine's response headers."
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests sent to the engine at once (default per engine: ollama 4, "
        "llamacpp 4, vllm 256, openai 8, lmstudio/mlx/llama-cpp-python/embedded 1); more "
        "wait in a queue.",
    )

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
    name: str = Field(
        default_factory=lambda: socket.gethostname() or "quorum",
        min_length=1,
        description="This node's name, shown to peers and in X-Quorum-Node (default: host name).",
    )
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="HTTP port.")
    bind: str | None = Field(
        default=None,
        description="Address to listen on (default: 127.0.0.1; 0.0.0.0 with a cluster token).",
    )
    data_dir: Path | None = Field(
        default=None, description="Node id, embedded model and logs (default: user data dir)."
    )
    max_body_mb: float = Field(
        default=100.0, gt=0, description="Largest request body accepted, in MiB (else 413)."
    )
    loopback_trusted: bool = Field(default=True, description="Loopback clients need no credential.")
    allowed_origins: tuple[str, ...] = Field(
        default=(),
        description="Web origins (https://app.example) whose pages may use this machine's "
        "trust, besides local ones; * allows all (like OLLAMA_ORIGINS).",
    )
    ollama_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also answer on this port (Ollama's is 11434) for apps that assume Ollama, "
        "when no Ollama holds it; loopback only.",
    )
    peer_liveness_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a LAN peer may be silent before its health is checked (a "
        "frozen one fails the request then, instead of at the header timeout).",
    )
    head_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's head, whole."
    )
    body_idle_s: float = Field(
        default=30.0, gt=0, description="Seconds a request body may stop arriving before the close."
    )
    max_connections_per_address: int = Field(
        default=64, ge=1, description="Connections one non-loopback address may hold at once."
    )
    allow_plain_lan: bool = Field(
        default=False,
        description="Answer plain HTTP from other machines too (API-key clients without TLS); "
        "off: the LAN gets TLS only (docs/security.md).",
    )


class ClusterSection(Frozen):
    token: str | None = Field(
        default=None, min_length=16, description="Cluster join token (secret; never logged)."
    )
    previous_tokens: tuple[Annotated[str, Field(min_length=16)], ...] = Field(
        default=(),
        description="Tokens this cluster used before a rotation: their members are still "
        "accepted until every node has the new token (secret; never logged).",
    )


class RelaySection(Frozen):
    url: Annotated[str, Field(pattern=r"^wss?://")] | None = Field(
        default=None, description="Relay tunnel URL, wss://host/tunnel."
    )
    urls: tuple[Annotated[str, Field(pattern=r"^wss?://")], ...] = Field(
        default=(),
        description="More relays of the same group (sharing one store and NATS): when the "
        "tunnel to one is lost, the node moves to the next, in turn, after url.",
    )

    @model_validator(mode="after")
    def _urls_after_url(self) -> Self:
        if self.urls and not self.url:
            raise ValueError("relay.urls lists more relays after relay.url: set relay.url too")
        return self


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
    enabled: bool = Field(default=True, description="Probe the usual local engine ports.")
    interval_s: float = Field(default=10.0, gt=0, description="Seconds between refreshes.")
    targets: tuple[DetectTarget, ...] = Field(
        default=DEFAULT_DETECT_TARGETS,
        description="Where to look ({engine, url}); 8080 is llama.cpp, else mlx_lm.",
    )


class DiscoverySection(Frozen):
    """LAN discovery over mDNS (used once the node has a cluster token)."""

    enabled: bool = Field(default=True, description="Advertise and browse over mDNS.")
    interfaces: tuple[str, ...] = Field(
        default=(),
        description="Interface names or addresses; empty: all but docker and link-local.",
    )


class RoutingSection(Frozen):
    """Failover, queueing and cooldowns (see docs and ``quorum.routing``)."""

    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Holders tried per request, before the first byte."
    )
    replay_limit_mb: float = Field(
        default=8.0, ge=0, description="Bodies larger than this (MiB) are not retried elsewhere."
    )
    queue_size: int = Field(
        default=256, ge=0, description="Requests that may wait per model when all holders are busy."
    )
    queue_timeout_s: float = Field(
        default=30.0, ge=0, description="Longest wait in a model's queue before 503 + Retry-After."
    )
    cooldown_failures: int = Field(
        default=3, ge=1, description="Consecutive failures that cool a holder down."
    )
    cooldown_s: float = Field(
        default=5.0, gt=0, description="First cooldown; doubles after each failed probe."
    )
    max_cooldown_s: float = Field(default=60.0, gt=0, description="Longest cooldown.")

    @model_validator(mode="after")
    def _cooldowns(self) -> Self:
        if self.cooldown_s > self.max_cooldown_s:
            raise ValueError("cooldown_s must not exceed max_cooldown_s")
        return self


class EmbeddedMode(enum.StrEnum):
    AUTO = "auto"  # start it when installed and no other engine is found
    ON = "on"
    OFF = "off"


class EmbeddedSection(Frozen):
    mode: EmbeddedMode = Field(
        default=EmbeddedMode.AUTO,
        description="auto: run it when installed and no other engine is found; on; off.",
    )
    model_path: Path | None = Field(
        default=None, description="A GGUF file (default: the packaged Gemma 3 270M)."
    )
    model_name: str = Field(default="gemma-3-270m", description="Name clients use.")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML reads a bare on/off (QUORUM_EMBEDDED__MODE=off, ``mode: off``) as a boolean.
        if isinstance(value, bool):
            return EmbeddedMode.ON if value else EmbeddedMode.OFF
        return value

    chat_format: str = Field(default="gemma", description="llama-cpp-python chat format.")
    n_ctx: int = Field(default=4096, ge=256, description="Context length in tokens.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads (default: auto).")
    start_timeout_s: float = Field(
        default=120.0, gt=0, description="Seconds to wait for the engine to answer."
    )


class Config(Frozen):
    node: NodeSection = NodeSection()
    cluster: ClusterSection = ClusterSection()
    relay: RelaySection = RelaySection()
    autodetect: AutodetectSection = AutodetectSection()
    discovery: DiscoverySection = DiscoverySection()
    routing: RoutingSection = RoutingSection()
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Other names for models: {alias: model}."
    )
    embedded: EmbeddedSection = EmbeddedSection()
    services: tuple[ServiceConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = ()
    log_level: str = Field(
        default="info",
        pattern=r"(?i)^(debug|info|warning|error)$",
        description="debug, info, warning or error.",
    )

    @model_validator(mode="after")
    def _unique_service_names(self) -> Self:
        seen: set[str] = set()
        for service in self.all_services():
            if service.name in seen:
                raise ValueError(f"two services are named '{service.name}'")
            seen.add(service.name)
        return self

    @model_validator(mode="after")
    def _aliases_one_step(self) -> Self:
        for alias, target in self.aliases.items():
            if not alias or not target or alias == target:
                raise ValueError(f"alias '{alias}' needs a model name other than itself")
            if target in self.aliases:
                raise ValueError(f"alias '{alias}' points at '{target}', which is an alias too")
        return self

    @model_validator(mode="after")
    def _relay_needs_token(self) -> Self:
        if self.relay.url and not self.cluster.token:
            raise ValueError(
                "relay.url needs cluster.token: make one with 'quorum token new' "
                "(or 'quorum-relay cluster create') and set it on every node"
            )
        return self

    @property
    def bind(self) -> str:
        """Where to listen: as configured, else all interfaces once there is a cluster."""
        if self.node.bind:
            return self.node.bind
        return "0.0.0.0" if self.cluster.token else "127.0.0.1"

    def all_services(self) -> tuple[ServiceConfig, ...]:
        """``services`` plus those of the ``hosts`` entry whose id is this node's name."""
        extra = tuple(s for h in self.hosts if h.id == self.node.name for s in h.services)
        return self.services + extra
