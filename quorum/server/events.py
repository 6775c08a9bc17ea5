"""``GET /quorum/v1/events``: the node's status, pushed as server-sent events.

The page at ``/`` listens here instead of polling. Each event is one whole
``/quorum/v1/status`` document (``event: status``), the JSON the CLI reads, so the
page renders one shape whichever way it got it.

Rules of a stream:

- The first snapshot goes out at once.
- Then the status is looked at every ``TICK_S``; a snapshot is sent when anything
  other than a clock changed (``without_clocks``), so a finished request reaches the
  page within a tick.
- At least every ``REFRESH_S`` a snapshot is sent anyway: ages and uptimes stay
  fresh, and the traffic doubles as a keep-alive through proxies.

Snapshots rather than deltas: a status is a few kilobytes, a node has a handful of
viewers, and a page that missed an event can never drift from the node's truth.

Each stream belongs to its request handler. It ends when the client goes away
(the runner cancels the handler) and when the node shuts down (``on_shutdown``
sets ``STOPPING``), so a page left open never holds up the node's stop. Auth is the
app's middleware: loopback is trusted, anyone else presents the cluster token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from quorum.server.context import CONTEXT
from quorum.server.status import not_for_keys, status_json

log = logging.getLogger("quorum.server.events")

EVENTS_PATH = "/quorum/v1/events"
TICK_S = 0.25
REFRESH_S = 5.0
RETRY_MS = 2000
"""How long a browser waits before it reconnects a dropped stream."""

STOPPING: web.AppKey[asyncio.Event] = web.AppKey("quorum_events_stopping", asyncio.Event)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx and friends: pass each event on at once
}


def frame(event: str, data: str) -> bytes:
    """One server-sent event; each line of ``data`` becomes its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


def without_clocks(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus the fields that change only because time passes."""
    out = dict(status)
    out["node"] = {k: v for k, v in status.get("node", {}).items() if k != "uptime_s"}
    out["peers"] = [
        {k: v for k, v in p.items() if k != "last_answer_age_s"} for p in status.get("peers", ())
    ]
    out["cooling"] = [
        {k: v for k, v in c.items() if k != "until"} for c in status.get("cooling", ())
    ]
    return out


@dataclass(frozen=True, slots=True)
class Sent:
    """What a stream last sent, and when (loop clock)."""

    key: str
    at: float


def due(last: Sent | None, key: str, now: float, refresh_s: float = REFRESH_S) -> bool:
    """Whether a snapshot with this ``key`` should go out at ``now``."""
    return last is None or key != last.key or now - last.at >= refresh_s


async def stream(request: web.Request) -> web.StreamResponse:
    """Status snapshots as ``event: status`` until the client leaves or the node stops."""
    ctx = request.app[CONTEXT]
    stopping = request.app[STOPPING]
    response = web.StreamResponse(headers=HEADERS)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    last: Sent | None = None
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while not stopping.is_set():
            status = status_json(ctx)
            key = json.dumps(without_clocks(status), sort_keys=True, default=str)
            now = loop.time()
            if due(last, key, now):
                await response.write(frame("status", json.dumps(status, default=str)))
                last = Sent(key, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), TICK_S)
    except ConnectionResetError:
        log.debug("event stream to %s closed by the client", request.remote)
    return response


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def setup(app: web.Application) -> None:
    """Serve ``EVENTS_PATH`` on ``app`` and end every stream when it shuts down."""
    app[STOPPING] = asyncio.Event()
    app.router.add_get(EVENTS_PATH, not_for_keys(stream))
    app.on_shutdown.append(_stop_streams)
