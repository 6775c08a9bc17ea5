"""The embedded engine is ready when *it* answers: a server that took its port first is
refused at once (and the engine started again by the watch), never routed to."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from quorum.config.models import EmbeddedSection
from quorum.engines.base import Response
from quorum.engines.embedded import EmbeddedEngine, serves
from quorum.errors import EmbeddedEngineError, EngineDown

ALIAS = "gemma-3-270m"


class Running:
    """What ``_wait_ready`` reads of the child process: it is still running."""

    returncode: int | None = None


def answers(*replies: Response | Exception) -> tuple[list[str], Any]:
    asked: list[str] = []
    queue = list(replies)

    async def get(url: str, headers: Mapping[str, str]) -> Response:
        asked.append(url)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return asked, get


def listing(*ids: str) -> Response:
    return Response(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})


def ready(tmp_path: Path, get: Any, timeout_s: float = 5.0) -> None:
    engine = EmbeddedEngine(EmbeddedSection(start_timeout_s=timeout_s), tmp_path, get)
    engine.root = "http://127.0.0.1:1"
    asyncio.run(engine._wait_ready(cast(Any, Running())))


def test_only_a_listing_with_the_alias_is_the_engine() -> None:
    assert serves(listing(ALIAS).json, ALIAS)
    assert serves(listing("other", ALIAS).json, ALIAS)
    others: list[object] = [listing("other").json, listing().json, {"data": "x"}, [], None]
    for body in [*others, {"data": [1]}]:
        assert not serves(body, ALIAS)


def test_the_engine_is_ready_once_it_lists_its_model(tmp_path: Path) -> None:
    asked, get = answers(EngineDown("refused"), Response(503, None), listing(ALIAS))
    ready(tmp_path, get)
    assert len(asked) == 3


def test_a_server_that_took_the_port_is_refused_at_once(tmp_path: Path) -> None:
    asked, get = answers(listing("someone-elses-model"))
    with pytest.raises(EmbeddedEngineError, match="another server answers"):
        ready(tmp_path, get, timeout_s=60.0)
    assert len(asked) == 1  # at once: not after the start timeout
