"""The relay's public ``/v1``: an app with an API key reaches its cluster's models.

Contract (the same as a node's ``/v1`` where it can be):
- ``Authorization: Bearer qk_...``: an unknown, revoked or expired key is
  401; a key limited to some models asking for another is 403
  ``model_not_allowed``. Keys of one cluster never reach another's nodes.
- The request goes to an online node (heartbeat under 60 s old) of the key's
  cluster holding the model with a service type the endpoint accepts, least
  busy first, through that node's tunnel on a stream the relay opens, in TLS
  between the relay and the node (``relay.hop``; plain for an older node that
  does not serve it), also for a node another relay of the mesh holds (its
  relay forwards ciphertext). The node serves it locally, as it serves a LAN
  peer's forwarded request. A node that refuses the stream before processing it is
  replaced by the next.
- Unknown model 404 ``model_not_found``; known but no online holder 503;
  malformed body 400; too large 413.
- The answer passes through as it comes: SSE and binary chunk by chunk,
  credit granted back to the node only after the chunk was written to the
  app. A stream cut off after it started ends an SSE answer with an error
  event and no ``[DONE]``, and any other answer short.
- Headers: ``X-Quorum-Route: relay``, ``X-Quorum-Node: <serving node>``,
  ``X-Request-Id``.
- Usage: the relay writes one record per request it answered past the key
  check (route ``relay``), with tokens read from the answer. The serving
  node sees a forwarded request (hop header) and records nothing, so
  nothing is counted twice: **the record belongs to the entry point**.
  A successful answer's record is committed to the store *before* the app
  can see the answer complete (before ``data: [DONE]``, the last byte of a
  sized body, or the end of a chunked one), so a relay killed at any moment
  never leaves an answered request without its record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from quorum.api.body import request_model
from quorum.api.endpoints import SERVED_V1, Endpoint
from quorum.api.errors import error_code_of, stream_error
from quorum.api.headers import KEY_MODELS_HEADER, RESPONSE_DROP, forwarded_request_headers
from quorum.api.usage import ResponseUsageScanner
from quorum.errors import (
    ApiError,
    BodyTooLarge,
    Forbidden,
    ModelNotFound,
    NoReachableHolder,
    StreamRefused,
    UpstreamFailed,
)
from quorum.memory import PROCESS as LARGE_BODIES
from quorum.protocol import RequestHead, RequestUsage, ResponseHead
from quorum.secure.hop import HOP_CAPABILITY
from relay.context import STATE, RelayState, require_key
from relay.hop import HOP, HopStream, outer_head
from relay.hub import Link
from relay.keys import allows_model
from relay.local import LocalStream
from relay.presence import holders, online_models
from relay.store import ApiKey

log = logging.getLogger("relay.public")

_RESPONSE_DROP = RESPONSE_DROP
_ERROR_BODY = 64 * 1024


@dataclass(slots=True)
class Exchange:
    id: str
    endpoint: Endpoint
    started: float
    time_ms: int
    key: ApiKey
    model: str = ""
    node: str = ""
    status: int = 0
    first_byte: float | None = None
    error: str | None = None
    scanner: ResponseUsageScanner | None = None
    recorded: bool = False


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    endpoint = SERVED_V1[request.path]
    started = time.perf_counter()
    key = await require_key(request)
    ex = Exchange(uuid.uuid4().hex, endpoint, started, int(state.clock() * 1000), key)
    try:
        with LARGE_BODIES.holding(request.content_length):
            return await _serve(request, state, ex)
    except ApiError as err:
        ex.status, ex.error = err.status, err.code
        raise
    except asyncio.CancelledError:
        # An app that hangs up right after ``data: [DONE]`` had the whole answer.
        if ex.scanner is None or not ex.scanner.done:
            ex.status, ex.error = 499, "client_disconnected"
        raise
    finally:
        _finish(state, ex)


async def _serve(request: web.Request, state: RelayState, ex: Exchange) -> web.StreamResponse:
    if state.hub.draining:
        raise NoReachableHolder("The relay is restarting; try again in a moment.")
    declared = request.content_length
    if declared is not None and declared > state.max_body:
        # Refused from the head alone: nothing of a body that cannot be taken is read.
        raise BodyTooLarge(
            f"The request body is too large: {declared} bytes, and this relay takes at most "
            f"{state.max_body} (quorum-relay serve --max-body-mb)."
        )
    payload = await request.read()
    ex.model = request_model(ex.endpoint, request.headers.get("Content-Type", ""), payload)
    if not allows_model(ex.key.models, ex.model):
        raise Forbidden(
            f"The API key {ex.key.shown} may not use the model '{ex.model}'.",
            code="model_not_allowed",
        )
    found = holders(state.candidates(ex.key.cluster_id), ex.model, ex.endpoint.types, state.clock())
    if not found:
        raise await _missing(state, ex)
    headers = forwarded_request_headers(request.headers.items())
    headers += [("X-Request-Id", ex.id)]
    # The serving node checks the key's limits again where it routes the request.
    models = ex.key.models
    headers.append((KEY_MODELS_HEADER, "*" if models is None else ",".join(models)))
    if request.remote:
        headers.append(("X-Forwarded-For", request.remote))
    head = RequestHead(request.method, request.rel_url.path_qs, tuple(headers), model=ex.model)
    last: ApiError = NoReachableHolder(f"No node holding '{ex.model}' took the request.")
    for candidate in found:
        link = state.hub.route(ex.key.cluster_id, candidate.node_id)
        if link is None:
            continue
        ex.node = candidate.name
        try:
            stream = await _open_stream(request.app, state, link, head, payload)
        except StreamRefused as exc:
            last = exc
            continue
        try:
            answer = await _open(state, stream, payload)
        except StreamRefused as exc:
            last = exc
            continue
        except BaseException:
            stream.cancel("the client went away")
            raise
        try:
            return await _relay_answer(request, state, stream, answer, ex)
        finally:
            stream.cancel("the client went away")
    raise last


async def _open_stream(
    app: web.Application, state: RelayState, link: Link, head: RequestHead, payload: bytes
) -> LocalStream | HopStream:
    """A stream to ``link``'s node: inside TLS with it (``relay.hop``) when the node serves
    the hop and joined with its key, here or through the relay holding it; else the plain
    stream older nodes are served by."""
    hop = app.get(HOP)
    if hop is None or link.fingerprint is None or HOP_CAPABILITY not in link.capabilities:
        return state.hub.open_local(link, head, end_stream=not payload)
    node_id = link.node_id or ""
    if link.via is not None and not await hop.bound.confirmed(
        state.store, link.cluster_id, node_id, link.fingerprint
    ):
        log.warning("node %s: the key announced for it is not the one bound to it", link.label)
        raise StreamRefused(f"node {link.label}'s key is not the one bound to it.")
    through = hop.identity if link.via is not None else None
    outer = state.hub.open_local(link, outer_head(through), end_stream=False)
    key = (link.cluster_id, node_id, link.fingerprint)
    return HopStream(outer.stream, outer.node_name, head, hop, link.fingerprint, key)


async def _open(state: RelayState, stream: LocalStream | HopStream, payload: bytes) -> ResponseHead:
    if payload:
        await stream.send_body(payload)
    try:
        async with asyncio.timeout(state.header_timeout_s):
            return await stream.response
    except TimeoutError:
        stream.cancel("no answer in time")
        raise NoReachableHolder(
            f"Node {stream.node_name} did not answer within {state.header_timeout_s:g} s."
        ) from None


async def _missing(state: RelayState, ex: Exchange) -> ApiError:
    """404 when no node of the cluster lists the model; 503 when its holders are offline."""
    known = any(
        c.holds(ex.model, ex.endpoint.types) for c in state.candidates(ex.key.cluster_id)
    ) or any(
        any(m.id == ex.model and m.type in ex.endpoint.types for m in n.models)
        for n in await asyncio.to_thread(state.store.nodes, ex.key.cluster_id)
    )
    if known:
        return NoReachableHolder(
            f"The model '{ex.model}' is known in this cluster, but no node holding it is "
            "online now."
        )
    return ModelNotFound(
        f"The model '{ex.model}' does not exist in this cluster "
        f"(for {ex.endpoint.label} requests).",
        param="model",
    )


async def _relay_answer(
    request: web.Request,
    state: RelayState,
    stream: LocalStream | HopStream,
    answer: ResponseHead,
    ex: Exchange,
) -> web.StreamResponse:
    upstream = CIMultiDict(answer.headers)
    headers = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in _RESPONSE_DROP)
    headers.setdefault("X-Quorum-Node", ex.node)
    ex.node = headers["X-Quorum-Node"]
    headers["X-Quorum-Route"] = "relay"
    headers["X-Request-Id"] = ex.id
    ctype = upstream.get("Content-Type", "")
    sse = ctype.startswith("text/event-stream")
    if sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(status=answer.status, headers=headers)
    length = upstream.get("Content-Length")
    if length is not None and length.isdigit() and not sse:
        response.content_length = int(length)
    scanner = ex.scanner = ResponseUsageScanner(ctype)
    error_body = bytearray()
    ex.status = answer.status
    size = response.content_length
    written = 0
    await response.prepare(request)
    try:
        async for chunk in stream.body():
            if ex.first_byte is None:
                ex.first_byte = time.perf_counter()
            scanner.feed(chunk)
            if answer.status >= 400 and len(error_body) < _ERROR_BODY:
                error_body += chunk
            cut = None if ex.recorded else _completing(chunk, sse, written, size)
            if cut is not None:
                if cut:
                    await response.write(chunk[:cut])
                _note_error(ex, error_body)
                await _commit(state, ex)
                chunk = chunk[cut:]
            await response.write(chunk)
            written += len(chunk) if cut is None else cut + len(chunk)
    except UpstreamFailed as exc:
        ex.error = "stream_broken"
        log.warning("request %s: the answer from %s broke off: %s", ex.id[:12], ex.node, exc)
        if sse:
            await response.write(stream_error(exc, ex.endpoint.dialect))
        if request.transport is not None:
            request.transport.close()  # no terminating chunk: the app sees a truncated body
        return response
    if not ex.recorded:
        _note_error(ex, error_body)
        await _commit(state, ex)
    await response.write_eof()
    return response


def _completing(chunk: bytes, sse: bool, written: int, size: int | None) -> int | None:
    """Where in ``chunk`` the app would learn that the answer is complete, or None."""
    if sse:
        at = chunk.find(b"data: [DONE]")
        return at if at >= 0 else None
    if size is not None and chunk and written + len(chunk) >= size:
        return len(chunk) - 1  # hold back the last byte
    return None


async def _commit(state: RelayState, ex: Exchange) -> None:
    """Store the record now, and wait for it (other requests' records share the write)."""
    ex.recorded = True
    try:
        await state.recorder.commit(ex.key.cluster_id, _record(ex))
    except Exception as exc:  # the record stays queued; the recorder retries it
        log.warning("request %s: usage not committed yet: %s", ex.id[:12], exc)


def _note_error(ex: Exchange, body: bytearray) -> None:
    if ex.status >= 400:
        ex.error = error_code_of(bytes(body)) or f"http_{ex.status}"


def _record(ex: Exchange) -> RequestUsage:
    duration = time.perf_counter() - ex.started
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    # Tokens the answer reported, even if it was cut short: they were spent.
    usage = None if ex.scanner is None else ex.scanner.result()
    return RequestUsage(
        request_id=ex.id,
        time_ms=ex.time_ms,
        model=ex.model[:1024],
        endpoint=ex.endpoint.label,
        route="relay",
        node=ex.node[:256],
        status=ex.status,
        duration_ms=round(duration * 1000, 3),
        ttfb_ms=None if ttfb is None else round(ttfb * 1000, 3),
        prompt_tokens=None if usage is None else usage.prompt_tokens,
        completion_tokens=None if usage is None else usage.completion_tokens,
        key_id=ex.key.id,
        error=ex.error,
    )


def _finish(state: RelayState, ex: Exchange) -> None:
    """Count and log the request; queue its record unless it was committed already."""
    duration = time.perf_counter() - ex.started
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    state.counters.public.labels(str(ex.status)).inc()
    if not ex.recorded:
        state.recorder.usage(ex.key.cluster_id, _record(ex))
    log.info(
        "%s %s key=%s model=%s node=%s status=%s ttfb=%s dur=%.1fms%s",
        ex.id[:12],
        ex.endpoint.label,
        ex.key.shown,
        ex.model or "-",
        ex.node or "-",
        ex.status,
        "-" if ttfb is None else f"{ttfb * 1000:.1f}ms",
        duration * 1000,
        f" error={ex.error}" if ex.error else "",
    )


# -- models ------------------------------------------------------------------------


def _model_entry(model: str, holders_of: list[str], types: list[str]) -> dict[str, object]:
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": holders_of[0] if holders_of else "quorum",
        "quorum": {"holders": holders_of, "types": types},
    }


def _listing(state: RelayState, key: ApiKey) -> dict[str, dict[str, object]]:
    found = online_models(state.candidates(key.cluster_id), state.clock(), key.models)
    return {
        model: _model_entry(
            model,
            [c.name for c in cands],
            sorted({m.type for c in cands for m in c.models if m.id == model}),
        )
        for model, cands in found.items()
    }


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = await require_key(request)
    return web.json_response({"object": "list", "data": list(_listing(state, key).values())})


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = await require_key(request)
    model = request.match_info["model"]
    if not allows_model(key.models, model):
        raise Forbidden(
            f"The API key {key.shown} may not use the model '{model}'.", code="model_not_allowed"
        )
    entry = _listing(state, key).get(model)
    if entry is None:
        raise ModelNotFound(f"The model '{model}' does not exist in this cluster.", param="model")
    return web.json_response(entry)


async def unknown(request: web.Request) -> web.Response:
    """Any other ``/v1`` path: the key is checked first, so it learns nothing without one."""
    await require_key(request)
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    for path in SERVED_V1:
        app.router.add_post(path, handle)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_route("*", "/v1/{tail:.*}", unknown)
