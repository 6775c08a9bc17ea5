"""The proxy core: read the model, route, try holders in turn, write the answer to a sink.

It knows no transport: an edge gives it a :class:`~quorum.proxy.request.ProxyRequest`
(the body already read, bounded by ``node.max_body_mb``), an
:class:`~quorum.proxy.exchange.Exchange` to fill, and a
:class:`~quorum.proxy.sink.Sink`; upstreams are opened through the context's
injected ``opener``. The HTTP server (:mod:`quorum.server.proxy`) is one edge;
a stream the relay opens to this node is another.

Contract:
- The body is read whole because routing needs its ``model`` field; it is
  forwarded as the same bytes unless a rewrite is needed (the engine names
  the model differently; ``verbose_json`` asked of a service without
  timestamps is asked as ``json`` and made here, :mod:`quorum.answers.verbose`).
- An API key's model limits are checked here, where the request is routed.
- Failures before the answer starts are raised as ``ApiError``s: the edge
  answers them in the caller's shape. Failover to the next holder happens
  only before anything reached the client (:mod:`quorum.routing.failover`).
- A client that goes away cancels the call, which closes the upstream, so
  the engine stops generating. The node a request entered records its usage
  (shielded: a client that left still counts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quorum.answers import verbose
from quorum.api import body as bodies
from quorum.api import multipart
from quorum.api.endpoints import Dialect
from quorum.api.headers import HOP_HEADER, forwarded_request_headers
from quorum.api.multipart import form_model
from quorum.errors import ApiError, Forbidden, InvalidRequest, ModelNotFound, NoReachableHolder
from quorum.fleet import Holder, Route
from quorum.fleet.remote import LOAD_HEADER, format_load
from quorum.proxy import foreign as foreigns
from quorum.proxy.answer import Attempt, attempt
from quorum.proxy.context import ProxyContext
from quorum.proxy.count import count_attempt
from quorum.proxy.exchange import Exchange, finish, new_request_id, usage_record
from quorum.proxy.foreign import Foreign
from quorum.proxy.request import ProxyRequest
from quorum.proxy.sink import Sink
from quorum.routing import (
    Action,
    BodyKind,
    RouteRequest,
    is_failure,
    next_step,
    resolve_alias,
)
from quorum.usage import SseUsageScanner

log = logging.getLogger("quorum.proxy")


QUEUE_WAIT_HEADER = "X-Quorum-Queue-Wait-Ms"


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What the request's body said, read once for every attempt."""

    payload: bytes
    data: dict[str, Any] | None
    boundary: str
    fields: Mapping[str, str]
    foreign: Foreign | None
    waited_s: float  # in this node's queue before the first attempt


def new_exchange(request: ProxyRequest) -> Exchange:
    return Exchange(id=request.request_id or new_request_id(), endpoint=request.endpoint)


async def serve(ctx: ProxyContext, request: ProxyRequest, sink: Sink, ex: Exchange) -> None:
    """Answer ``request`` into ``sink``; raise an ``ApiError`` if no answer started."""
    outbox = ctx.outbox
    if outbox is not None and not request.forwarded:
        # The node a request entered records it; a node serving a forwarded one does not.
        ex.scanner, ex.wall_start = SseUsageScanner(), time.time()
    try:
        await _serve(ctx, request, sink, ex)
    except ApiError as err:
        ex.status, ex.error = err.status, err.code
        raise
    except asyncio.CancelledError:
        if ex.last_byte is None:  # a client that hangs up at [DONE] had its whole answer
            ex.status, ex.error = 499, "client_disconnected"
        raise
    finally:
        finish(ctx.metrics, ctx.recent, ex)
        if outbox is not None and ex.scanner is not None and not ex.recorded:
            # Shielded: a client that went away still gets its request counted.
            await asyncio.shield(outbox.append(usage_record(ex)))


async def _serve(ctx: ProxyContext, request: ProxyRequest, sink: Sink, ex: Exchange) -> None:
    payload = request.body
    endpoint = request.endpoint
    data = None
    boundary = ""
    foreign: Foreign | None = None
    if endpoint.body is BodyKind.JSON:
        # Ollama's own examples post JSON with curl's default form type: its API takes any.
        if request.content_type != "application/json" and endpoint.dialect is not Dialect.OLLAMA:
            raise InvalidRequest(
                f"{endpoint.path} takes a JSON body: set 'Content-Type: application/json' "
                f"(got '{request.content_type}')."
            )
        data = bodies.json_object(payload)
        if foreigns.is_foreign(endpoint.label):
            foreign = foreigns.parse(endpoint.label, data)
            ex.model = foreign.model
        else:
            ex.model = bodies.model_of(data)
        fields: Mapping[str, str] = {}
    else:
        if request.content_type != "multipart/form-data":
            raise InvalidRequest(
                f"{endpoint.path} takes a multipart/form-data body (got '{request.content_type}')."
            )
        boundary = multipart.boundary_of(request.header("Content-Type") or "")
        fields = multipart.multipart_fields(
            payload, boundary, {"model", "response_format", "language"}
        )
        ex.model = form_model(dict(fields))

    key = request.key
    ex.key_id = key.key_id if key is not None else None
    sched = ctx.scheduler
    if key is not None and not key.allows(resolve_alias(sched.aliases, ex.model)):
        raise Forbidden(
            f"This API key may not use the model '{ex.model}'.", code="model_not_allowed"
        )
    route_request = RouteRequest(
        ex.model, endpoint.types, endpoint.label, request.forwarded, len(payload)
    )
    if foreign is not None and foreign.load_only:
        # Ollama's "load the model" (no prompt): the model must exist; nothing to generate.
        sched.choose(ctx.snapshot, route_request)
        ex.status = 200
        body = json.dumps(foreigns.load_answer(foreign)).encode()
        await sink.whole(200, {"Content-Type": "application/json; charset=utf-8"}, body)
        return
    try:
        ticket = await sched.admit(lambda: ctx.snapshot, route_request)
    except ModelNotFound:
        _raise_if_just_gone(ctx, resolve_alias(sched.aliases, ex.model), request.forwarded)
        raise
    candidates = ticket.candidates
    parsed = _Parsed(payload, data, boundary, fields, foreign, ticket.waited_s)
    held: int | None = ticket.seq  # the admitted start on candidates[0], not yet attempted
    if foreign is not None:  # token counting: only holders whose engine can count
        servable = tuple(h for h in candidates if foreigns.can_serve(h, foreign))
        if servable[:1] != candidates[:1]:
            sched.abandon(candidates[0], ticket.seq)
            held = None
        if not servable:
            raise foreigns.unservable(foreign, candidates)
        candidates = servable
    error: ApiError | None = None
    try:
        for index, holder in enumerate(candidates):
            if held is not None:
                seq, held = held, None
            elif not sched.available(holder):
                continue
            else:
                seq = sched.start(holder)
            result = await _attempt(ctx, request, sink, ex, holder, seq, parsed)
            if result.answered or sink.started:
                return
            assert result.error is not None
            error = result.error
            step = next_step(
                result.outcome,
                attempt=ex.attempts,
                body_size=len(payload),
                candidates_left=len(candidates) - index - 1,
                policy=sched.failover,
            )
            if step.action is not Action.RETRY:
                break
            log.info(
                "request %s: %s on %s failed before answering (%s); trying the next holder",
                ex.id,
                holder.service,
                holder.node_name,
                result.outcome.value,
            )
    finally:
        if held is not None:  # admitted, but never attempted (a bug, or cancelled)
            sched.abandon(candidates[0], held)
    raise error or NoReachableHolder(
        f"Every holder of '{ex.model}' is busy or cooling down; try again shortly."
    )


async def _attempt(
    ctx: ProxyContext,
    request: ProxyRequest,
    sink: Sink,
    ex: Exchange,
    holder: Holder,
    seq: int,
    parsed: _Parsed,
) -> Attempt:
    """One attempt on ``holder``, started as ``seq``; its end is counted in the scheduler."""
    sched = ctx.scheduler
    foreign = parsed.foreign
    ex.attempts += 1
    ex.route, ex.node = holder.route.value, holder.node_name
    translate = None
    path_qs = request.path_qs
    try:
        if foreign is not None and not foreigns.native(holder, foreign):
            translate, path_qs = foreign, foreign.path
            body = foreigns.engine_body(foreign, holder.upstream_model)
            extra = {"X-Quorum-Translated": foreign.translated_header}
        else:
            body, extra = _adapt(
                parsed.payload, parsed.data, parsed.boundary, parsed.fields, holder, ex
            )
        headers = _upstream_headers(request, holder, ex)
    except BaseException:
        sched.abandon(holder, seq)
        raise
    extra[QUEUE_WAIT_HEADER] = str(round(parsed.waited_s * 1000))
    if request.forwarded and holder.route is Route.LOCAL:
        # The node that forwarded this learns how loaded the service is now.
        extra[LOAD_HEADER] = format_load(sched.load_of(holder))
    gauge = ctx.metrics.in_flight_for(holder.model, ex.route)
    gauge.inc()
    began = time.perf_counter()
    counting = translate is not None and translate.api == foreigns.COUNT
    try:
        if counting:
            assert translate is not None
            result = await count_attempt(ctx.opener, sink, holder, headers, translate, ex, extra)
        else:
            result = await attempt(
                ctx.opener,
                sink,
                holder,
                request.method,
                path_qs,
                headers,
                body,
                ex,
                extra,
                ctx.outbox,
                translate,
                None
                if holder.route is Route.LOCAL
                else lambda load: sched.report(holder, load, seq),
            )
    except BaseException:
        ttfb = None if ex.first_byte is None else ex.first_byte - began
        if ex.last_byte is not None:  # the client had the whole answer, then hung up
            sched.finish(holder, True, ex.last_byte - began, ttfb, seq, ex.tokens)
        else:
            sched.abandon(holder, seq)  # the client went away (or a bug): not the holder's
        raise
    finally:
        gauge.dec()
    ttfb = None if ex.first_byte is None else ex.first_byte - began
    ok = not is_failure(result.outcome)
    # A count says nothing of how fast the holder answers a generation: not learned.
    latency = None if counting else time.perf_counter() - began
    sched.finish(holder, ok, latency, None if counting else ttfb, seq, ex.tokens)
    return result


def _raise_if_just_gone(ctx: ProxyContext, model: str, forwarded: bool) -> None:
    """A model whose holders vanished moments ago is unreachable, not unknown."""
    if forwarded or ctx.snapshot.by_model.get(model):
        return  # a peer asked only for our own holders; or the model is there, of another type
    gone = ctx.recent_models.gone_for(model, time.monotonic())
    if gone is not None:
        raise NoReachableHolder(
            f"The model '{model}' was held in this cluster {gone:.0f} s ago, but its holders "
            "cannot be reached now (a machine asleep, or a relay restarting); try again shortly.",
            retry_after_s=10,
        )


def _adapt(
    payload: bytes,
    data: dict[str, Any] | None,
    boundary: str,
    fields: Mapping[str, str],
    holder: Holder,
    ex: Exchange,
) -> tuple[bytes, dict[str, str]]:
    """The body as this holder's engine wants it, and the headers that say what changed."""
    extra: dict[str, str] = {}
    if holder.upstream_model != ex.model:  # an alias, or an engine's own name for the model
        payload = (
            bodies.replace_json_model(payload, data, holder.upstream_model)
            if data is not None
            else multipart.replace_multipart_field(
                payload, boundary, "model", holder.upstream_model
            )
        )
    ex.verbose_from = None
    if fields.get("response_format") == "verbose_json" and "timestamps" not in holder.features:
        payload = multipart.replace_multipart_field(payload, boundary, "response_format", "json")
        extra["X-Quorum-Downgraded"] = verbose.DOWNGRADED
        task = "translate" if ex.endpoint.label == "translation" else "transcribe"
        ex.verbose_from = {"task": task, "language": fields.get("language", "")}
        if ex.audio is None:
            ex.audio = multipart.multipart_file(payload, boundary, "file")
    return payload, extra


def _upstream_headers(request: ProxyRequest, holder: Holder, ex: Exchange) -> list[tuple[str, str]]:
    headers = forwarded_request_headers(request.headers)
    headers.append(("X-Request-Id", ex.id))
    if holder.api_key:
        headers.append(("Authorization", f"Bearer {holder.api_key}"))
    if holder.route is not Route.LOCAL:
        headers.append((HOP_HEADER, "1"))
    return headers
