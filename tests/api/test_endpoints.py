"""The endpoint table both sides route by, and the dialect of each path."""

from __future__ import annotations

import pytest

from quorum import routing
from quorum.api.endpoints import ENDPOINTS, SERVED, SERVED_V1, BodyKind, Dialect, dialect
from quorum.config.models import ServiceType


def test_the_table() -> None:
    assert set(SERVED) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/audio/speech",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/rerank",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    }
    assert set(ENDPOINTS) == set(SERVED)  # every endpoint of the vocabulary is served
    assert set(SERVED_V1) == {p for p in SERVED if p.startswith("/v1/")}  # the relay's
    multipart = {p for p, e in ENDPOINTS.items() if e.body is BodyKind.MULTIPART}
    assert multipart == {
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/images/edits",
        "/v1/images/variations",
    }
    assert ENDPOINTS["/v1/audio/transcriptions"].types == ("stt",)
    assert ENDPOINTS["/v1/embeddings"].types == ("embedding", "llm")
    assert ENDPOINTS["/v1/rerank"].types == ("rerank",)
    labels = [e.label for e in ENDPOINTS.values()]
    assert len(set(labels)) == len(labels)
    assert all(path == e.path for path, e in ENDPOINTS.items())


def test_service_types_are_the_configs() -> None:
    known = {t.value for t in ServiceType}
    for endpoint in SERVED.values():
        assert set(endpoint.types) <= known, endpoint.path
        # ServiceType members are these strings: routing compares them as they are
        assert all(ServiceType(t) in endpoint.types for t in endpoint.types)


def test_the_node_routes_by_the_same_table() -> None:
    assert routing.ENDPOINTS is SERVED
    assert routing.Endpoint is type(SERVED["/v1/chat/completions"])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/messages", Dialect.ANTHROPIC),
        ("/v1/messages/count_tokens", Dialect.ANTHROPIC),
        ("/v1/messages_x", Dialect.OPENAI),
        ("/api/tags", Dialect.OLLAMA),
        ("/api", Dialect.OLLAMA),
        ("/apis", Dialect.OPENAI),
        ("/v1/chat/completions", Dialect.OPENAI),
        ("/v1/responses", Dialect.OPENAI),
        ("/quorum/v1/status", Dialect.OPENAI),
        ("/", Dialect.OPENAI),
    ],
)
def test_dialect(path: str, expected: Dialect) -> None:
    assert dialect(path) is expected
    if path in ENDPOINTS:
        assert ENDPOINTS[path].dialect is expected
