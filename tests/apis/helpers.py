"""Real SDK clients for the foreign APIs, and what they put on the wire.

Each client sends through an ``httpx`` client whose request hook records the
request (path and body bytes) in a :class:`Wire`, so a test can compare what
an engine received with what the SDK sent, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai

from tests.harness import timeout


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Wire:
    """What the SDKs sent, oldest first; :meth:`close` closes every client made with it."""

    sent: list[Sent] = field(default_factory=list)
    _http: list[httpx.Client | httpx2.Client] = field(default_factory=list)

    def hook(self, request: httpx.Request | httpx2.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.sent.append(Sent(request.method, request.url.path, headers, request.read()))

    def to(self, path: str) -> list[Sent]:
        return [s for s in self.sent if s.path == path]

    def http(self) -> httpx2.Client:
        """An HTTP client for the openai and anthropic SDKs (they are built on httpx2)."""
        client = httpx2.Client(event_hooks={"request": [self.hook]}, timeout=timeout(30))
        self._http.append(client)
        return client

    def close(self) -> None:
        for client in self._http:
            client.close()
        self._http.clear()


def openai_client(base_url: str, wire: Wire, api_key: str = "unused") -> openai.OpenAI:
    """``base_url`` ends in ``/v1``."""
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, http_client=wire.http())


def anthropic_client(
    url: str, wire: Wire, *, key: str = "unused", bearer: bool = False
) -> anthropic.Anthropic:
    """``url`` without ``/v1``; the key as ``x-api-key`` (how Claude Code and Anthropic's
    SDKs before 2.x send it) or as ``Authorization: Bearer`` (``auth_token``, and this SDK's
    ``api_key`` too)."""
    if bearer:
        return anthropic.Anthropic(
            base_url=url, auth_token=key, max_retries=0, http_client=wire.http()
        )
    # Omit() is how the SDK drops a header it would send (its api_key as Bearer).
    headers: Any = {"X-Api-Key": key, "Authorization": anthropic.Omit()}
    return anthropic.Anthropic(
        base_url=url,
        api_key="unused",
        default_headers=headers,
        max_retries=0,
        http_client=wire.http(),
    )


def ollama_client(url: str, wire: Wire, **kwargs: Any) -> ollama.Client:
    client = ollama.Client(
        host=url, event_hooks={"request": [wire.hook]}, timeout=timeout(30), **kwargs
    )
    wire._http.append(client._client)
    return client


LOOKUP = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What to look up."}},
    "required": ["query"],
}
"""The parameters of the tool every tool test offers: the fakes call it with the prompt."""
