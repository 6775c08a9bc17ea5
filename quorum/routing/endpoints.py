"""The OpenAI endpoints the node serves and the service types each may land on."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quorum.config.models import ServiceType


class BodyKind(enum.Enum):
    JSON = "json"
    MULTIPART = "multipart"


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    types: tuple[ServiceType, ...]
    body: BodyKind
    label: str  # used in messages and metrics


_L, _S, _T, _I, _E = (
    ServiceType.LLM,
    ServiceType.STT,
    ServiceType.TTS,
    ServiceType.IMAGE,
    ServiceType.EMBEDDING,
)

ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/chat/completions", (_L,), BodyKind.JSON, "chat"),
        Endpoint("/v1/completions", (_L,), BodyKind.JSON, "completion"),
        Endpoint("/v1/embeddings", (_E, _L), BodyKind.JSON, "embedding"),
        Endpoint("/v1/audio/transcriptions", (_S,), BodyKind.MULTIPART, "transcription"),
        Endpoint("/v1/audio/translations", (_S,), BodyKind.MULTIPART, "translation"),
        Endpoint("/v1/audio/speech", (_T,), BodyKind.JSON, "speech"),
        Endpoint("/v1/images/generations", (_I,), BodyKind.JSON, "image"),
        Endpoint("/v1/images/edits", (_I,), BodyKind.MULTIPART, "image_edit"),
        Endpoint("/v1/images/variations", (_I,), BodyKind.MULTIPART, "image_variation"),
    )
}
