"""A frozen LAN peer is noticed within seconds, not at the header timeout.

A peer whose process is stopped (SIGSTOP, a laptop half asleep) keeps its
TCP connections open: its kernel still accepts and acknowledges, so neither
TCP keepalive nor a refused connection says anything is wrong, and a request
to it would wait for the header timeout (minutes), a stream pause for ever.
HTTP has no ping, so while a LAN peer is silent (no response head yet, or no
body bytes) for ``every_s``, this asks its ``/healthz`` on a connection of
its own; no answer within ``every_s`` means frozen, and the request fails at
once (before the head: the next holder is tried; mid-answer: the client sees
a cut answer). A peer that is only slow (a long prompt, a long answer)
answers its health check and is waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from quorum.errors import EngineUnreachable, QuorumError, UpstreamFailed
from quorum.fleet import Holder
from quorum.proxy.upstream import Upstream

log = logging.getLogger("quorum.server.liveness")

Probe = Callable[[], Awaitable[bool]]


async def watched(
    opening: Awaitable[Upstream], holder: Holder, probe: Probe, every_s: float
) -> Upstream:
    """``opening``'s upstream; ``EngineUnreachable`` if the peer froze before its head."""
    task = asyncio.ensure_future(opening)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return _Watched(task.result(), holder, probe, every_s)
            if not await probe():
                log.warning("peer %s does not answer its health check: frozen", holder.node_name)
                raise EngineUnreachable(
                    f"The node {holder.node_name} does not answer (its process seems stopped)."
                )
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _Watched:
    """An upstream whose body is watched the same way."""

    def __init__(self, inner: Upstream, holder: Holder, probe: Probe, every_s: float) -> None:
        self._inner = inner
        self._holder = holder
        self._probe = probe
        self._every = every_s
        self.status = inner.status
        self.content_length = inner.content_length

    @property
    def headers(self) -> Mapping[str, str]:
        return self._inner.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        body = self._inner.chunks()
        while True:
            step = asyncio.ensure_future(anext(body, None))
            try:
                while True:
                    done, _ = await asyncio.wait({step}, timeout=self._every)
                    if done:
                        break
                    if not await self._probe():
                        raise UpstreamFailed(
                            f"The node {self._holder.node_name} stopped answering in the middle "
                            "of the answer (its process seems stopped); the answer is incomplete."
                        )
            finally:
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
            chunk = step.result()
            if chunk is None:
                return
            yield chunk

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UpstreamFailed(
                    f"The answer of {self._holder.node_name} is over {limit} bytes."
                )
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        self._inner.release()


def health_probe(open_health: Callable[[], Awaitable[Upstream]], timeout_s: float) -> Probe:
    """A probe that asks ``/healthz`` (through ``open_health``) and wants a head in time."""

    async def alive() -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                upstream = await open_health()
        except (TimeoutError, QuorumError):
            return False
        upstream.release()
        return upstream.status < 500

    return alive
