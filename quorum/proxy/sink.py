"""Where the proxy core writes an answer: the one thing an edge (HTTP, tunnel) provides.

The core calls ``start`` once with the status and headers, then ``write`` for
each piece of the body, then ``end`` for a complete answer, or ``abort`` for
one that broke off after it started (or ``whole`` for an answer it holds in
one piece): the client must then see a truncated
body, never a clean end. Nothing is written before ``start``; an error before
it is raised instead (an ``ApiError``), and the edge answers it in the
caller's dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Sink(Protocol):
    @property
    def started(self) -> bool: ...

    async def start(
        self, status: int, headers: Mapping[str, str], content_length: int | None = None
    ) -> None: ...

    async def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """A complete answer in one piece (``start``, ``write``, ``end`` at once)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...

    def abort(self) -> None:
        """Close without a clean end: the answer was cut after it started."""
        ...
