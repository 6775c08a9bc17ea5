"""What the proxy core needs of an upstream, and how it opens one (interfaces only).

An ``Upstream`` is an answer whose head arrived: status, headers, the body as
it comes, ``release``. An ``Opener`` sends a request to a holder and returns
its upstream, raising from the error tree (``EngineTimeout``,
``NoReachableHolder``, ``UpstreamFailed``) and nothing else. The node's
opener (HTTP to engines and LAN peers, the tunnel to relay peers) is in
:mod:`quorum.server.upstream`; tests inject an in-memory one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from quorum.fleet import Holder

Headers = Sequence[tuple[str, str]]


class Upstream(Protocol):
    status: int
    content_length: int | None

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises ``UpstreamFailed`` if it breaks off."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body; ``UpstreamFailed`` if it breaks off or passes ``limit``."""
        ...

    def release(self) -> None: ...


class Opener(Protocol):
    async def __call__(
        self, holder: Holder, method: str, path_qs: str, headers: Headers, body: bytes
    ) -> Upstream:
        """Send the request to ``holder``; return once the response head is in."""
        ...
