"""Values shared by the engine adapters, and the HTTP getter they are given."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from quorum.config.models import EngineKind, ServiceType
from quorum.errors import EngineDown, EngineError, EngineSilent

log = logging.getLogger("quorum.engines")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model as clients name it (``name``) and as its engine names it (``upstream``)."""

    name: str
    upstream: str
    type: ServiceType
    loaded: bool | None = None


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One engine endpoint as last seen: what it is, where, whether it answers, what it holds."""

    name: str
    type: ServiceType
    engine: EngineKind
    root: str  # scheme://host:port[/prefix], without a trailing /v1
    models: tuple[ModelEntry, ...]
    up: bool
    features: frozenset[str] = frozenset()
    detected: bool = False
    error: str | None = None
    api_key: str | None = field(default=None, repr=False)
    header_timeout_s: float = 600.0
    slots: int | None = None  # requests the engine runs at once, as it publishes (llama.cpp)


class Response:
    """What an adapter needs of an HTTP answer: the status and the parsed JSON, if any
    (``text``: the body as text when it is not JSON, such as Prometheus metrics)."""

    __slots__ = ("json", "status", "text")

    def __init__(self, status: int, body: Any, text: str = "") -> None:
        self.status = status
        self.json = body
        self.text = text

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


HttpGet = Callable[[str, Mapping[str, str]], Awaitable[Response]]


def root_url(url: str) -> str:
    """``http://h:1/v1/`` -> ``http://h:1``: services are addressed by their root."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def make_http_get(session: aiohttp.ClientSession, timeout_s: float = 3.0) -> HttpGet:
    """An ``HttpGet`` over ``session``; network failures become ``EngineError``."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get(url: str, headers: Mapping[str, str]) -> Response:
        try:
            async with session.get(url, headers=dict(headers), timeout=timeout) as resp:
                raw = await resp.read()
                body: Any = None
                text = ""
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        text = raw.decode("utf-8", "replace")
                return Response(resp.status, body, text)
        except aiohttp.ClientConnectorError as exc:
            raise EngineDown(f"connection refused at {url}: {exc.os_error}") from None
        except TimeoutError:
            raise EngineSilent(f"no answer from {url} within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise EngineError(f"no usable answer from {url}: {type(exc).__name__}") from None

    return get
