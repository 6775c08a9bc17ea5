"""The dashboard's live data: ``GET /dashboard/events?cluster=&window=``, server-sent events.

The stream works like the node page's: a snapshot at once, then every ``TICK_S``
one is built (``build_snapshot``: a few indexed reads of the store, in a worker
thread, with the hub's live tunnels read on the event loop) and sent if anything
but a clock changed, and at least every ``REFRESH_S``. A stream ends when its
session does (``event: signedout``; a disabled user's at once, the session being
read again every tick), when the client leaves, and when the relay shuts down.
A signed-in user sees only what is theirs (``dashboard_users.scoped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from aiohttp import web

from relay import dashboard_data as data
from relay import dashboard_users
from relay.context import STATE, RelayState
from relay.dashboard import STOPPING, _session, _signed
from relay.store import Cluster
from relay.user_ops import UserOps
from relay.users import User

log = logging.getLogger("relay.dashboard")

TICK_S = 1.0
REFRESH_S = 10.0
RETRY_MS = 2000
EVENT_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "X-Accel-Buffering": "no",
}


def _links(state: RelayState) -> list[data.LinkView]:
    """The live tunnels, read on the event loop (the hub is not thread-safe)."""
    return [
        data.LinkView(
            cluster_id=link.cluster_id,
            node_id=link.node_id,
            name=link.name,
            remote=link.remote,
            connected_at=link.connected_at,
            in_flight=link.conn.active_streams,
            draining=link.draining,
            models=None if link.presence is None else link.presence.models,
            last_seen=link.last_seen,
        )
        for link in state.hub.nodes()
        if link.node_id is not None
    ]


def _pick(clusters: list[Cluster], ref: str | None) -> Cluster | None:
    for c in clusters:
        if ref in (c.id, c.name):
            return c
    return clusters[0] if clusters else None


async def build_snapshot(
    state: RelayState, cluster: str | None, window: str | None, user: User | None = None
) -> data.JSON:
    """Every page's data; usage for ``cluster`` (default: the first) over ``window``; only
    what ``user`` may see when a user is signed in (``dashboard_users.scoped``)."""
    links, now = _links(state), state.clock()
    refusals = state.hub.refusals.latest()  # (the hub is read on the event loop)
    if user is not None:
        return await asyncio.to_thread(
            dashboard_users.scoped,
            UserOps(state.store, state.clock, user),
            links,
            cluster,
            window,
            refusals if user.operator else (),
        )
    store = state.store

    def read() -> data.JSON:
        clusters = store.clusters()
        keys = store.keys()
        chosen = _pick(clusters, cluster)
        usage = None
        if chosen is not None:
            win = data.window(window, now)
            usage = data.usage(
                chosen,
                store.usage_series(chosen.id, since_ms=win.since_ms, bucket_ms=win.bucket_ms),
                store.usage_records(chosen.id, limit=data.RECENT),
                [k for k in keys if k.cluster_id == chosen.id],
                win,
            )
        snap = data.snapshot(
            clusters=clusters,
            seen=store.nodes(),
            links=links,
            keys_=keys,
            usage_of=usage,
            now=now,
            refusals=refusals,
        )
        users = store.users()
        if users:  # the admin token manages the relay's users too (dashboard_account)
            snap["account"] = dashboard_users.for_admin(users, store.suspended_clusters())
        return snap

    return await asyncio.to_thread(read)


def frame(event: str, payload: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in payload.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


@dataclass(frozen=True, slots=True)
class Sent:
    key: str
    at: float


def due(last: Sent | None, key: str, now: float, refresh_s: float = REFRESH_S) -> bool:
    return last is None or key != last.key or now - last.at >= refresh_s


async def events(request: web.Request) -> web.StreamResponse:
    await _session(request)
    state, stopping = request.app[STATE], request.app[STOPPING]
    cluster, window = request.query.get("cluster"), request.query.get("window")
    response = web.StreamResponse(headers=EVENT_HEADERS)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    last: Sent | None = None
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while not stopping.is_set():
            # Read again every tick: a disabled user or an ended session stops at once.
            signed = await _signed(request)
            if signed is None:
                await response.write(frame("signedout", "{}"))
                break
            snap = await build_snapshot(state, cluster, window, signed.user)
            key = json.dumps(data.without_clocks(snap), sort_keys=True)
            now = loop.time()
            if due(last, key, now):
                await response.write(frame("snapshot", json.dumps(snap)))
                last = Sent(key, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), TICK_S)
    except ConnectionResetError:
        log.debug("dashboard stream to %s closed by the client", request.remote)
    return response


def add_routes(app: web.Application) -> None:
    """After ``dashboard.add_routes`` (its sessions and its stop signal)."""
    app.router.add_get("/dashboard/events", events)
