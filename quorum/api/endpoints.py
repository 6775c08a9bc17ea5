"""The endpoints Quorum proxies, and the API dialect each path speaks. Pure.

An :class:`Endpoint` says what a request to its path carries (a JSON object
or a multipart form), which service types may serve it (a transcription only
lands on an ``stt`` service, a chat only on an ``llm`` one, even where model
names collide) and the label used in messages, metrics and usage records.

Service types are the plain strings of the config's ``ServiceType`` (a
``StrEnum``, so its members compare and hash as these strings): this module
stays importable by the relay without pydantic. ``rerank`` has no service
type in the config yet, so nothing serves it until one is added.

``served`` is false for endpoints that are part of the vocabulary but not
proxied (none today): nodes register routes for ``SERVED`` only, the relay
for ``SERVED_V1`` (its ``/api`` is the control plane), and both answer the
others as unknown paths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BodyKind(enum.Enum):
    JSON = "json"
    MULTIPART = "multipart"


class Dialect(enum.StrEnum):
    """The API family a client speaks, which decides the shape of its errors."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    types: tuple[str, ...]
    body: BodyKind
    label: str  # used in messages, metrics and usage records
    served: bool = True

    @property
    def dialect(self) -> Dialect:
        return dialect(self.path)


def dialect(path: str) -> Dialect:
    """``anthropic`` for ``/v1/messages`` and below, ``ollama`` for ``/api/*``, else ``openai``.

    This is the node's map. The relay's ``/api/*`` is its control plane, not
    Ollama's API: it asks this only for ``/v1`` paths.
    """
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return Dialect.ANTHROPIC
    if path == "/api" or path.startswith("/api/"):
        return Dialect.OLLAMA
    return Dialect.OPENAI


_JSON, _FORM = BodyKind.JSON, BodyKind.MULTIPART

ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/chat/completions", ("llm",), _JSON, "chat"),
        Endpoint("/v1/completions", ("llm",), _JSON, "completion"),
        Endpoint("/v1/embeddings", ("embedding", "llm"), _JSON, "embedding"),
        Endpoint("/v1/audio/transcriptions", ("stt",), _FORM, "transcription"),
        Endpoint("/v1/audio/translations", ("stt",), _FORM, "translation"),
        Endpoint("/v1/audio/speech", ("tts",), _JSON, "speech"),
        Endpoint("/v1/images/generations", ("image",), _JSON, "image"),
        Endpoint("/v1/images/edits", ("image",), _FORM, "image_edit"),
        Endpoint("/v1/images/variations", ("image",), _FORM, "image_variation"),
        Endpoint("/v1/responses", ("llm",), _JSON, "responses"),
        Endpoint("/v1/messages", ("llm",), _JSON, "messages"),
        Endpoint("/v1/messages/count_tokens", ("llm",), _JSON, "count_tokens"),
        Endpoint("/v1/rerank", ("rerank",), _JSON, "rerank"),
        Endpoint("/api/chat", ("llm",), _JSON, "ollama_chat"),
        Endpoint("/api/generate", ("llm",), _JSON, "ollama_generate"),
        Endpoint("/api/embed", ("embedding", "llm"), _JSON, "ollama_embed"),
        Endpoint("/api/embeddings", ("embedding", "llm"), _JSON, "ollama_embeddings"),
    )
}
"""Every endpoint of the vocabulary, by path."""

SERVED: dict[str, Endpoint] = {path: e for path, e in ENDPOINTS.items() if e.served}
"""The endpoints nodes route today."""

SERVED_V1: dict[str, Endpoint] = {p: e for p, e in SERVED.items() if p.startswith("/v1/")}
"""The ones the relay's public endpoint routes (its ``/api`` is its control plane)."""
