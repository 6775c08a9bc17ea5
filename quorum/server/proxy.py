"""The ``/v1`` proxy: read the body once, route on its model, stream the answer back as it comes.

Contract:
- The request body is read whole (bounded by ``node.max_body_mb``: 413 past it)
  because routing needs its ``model`` field; it is forwarded as the same
  bytes unless a rewrite is needed (engine names the model differently;
  ``verbose_json`` asked of a service without timestamps becomes ``text``).
- The response is written as it arrives: SSE and binary bodies chunk by
  chunk, never buffered. Only a JSON answer is read whole, to check that it
  is JSON (an engine answering garbage is a 502, not a parse error in the
  client's SDK).
- A chat or completion answer that ends without a ``finish_reason`` was cut
  (:mod:`quorum.answers.cut`): streamed, it ends like any broken stream (an
  error event, no ``[DONE]``); whole, it is a 502. Either is counted
  (``answer_cut`` in the access log and ``/metrics``).
- ``verbose_json`` asked of an stt service without ``timestamps`` is asked as
  ``json`` and answered as a valid ``verbose_json`` with empty segments
  (:mod:`quorum.answers.verbose`; ``X-Quorum-Downgraded`` says so).
- Failures before the response starts are OpenAI-shaped errors: refused or
  silent engine 503, non-HTTP answer or engine 5xx 502, engine 4xx passed on
  with its status. After the response started, an SSE stream ends with an
  ``error`` event and no ``[DONE]``; any other body is cut short, so the
  client can never mistake a failure for a complete answer.
- A client that goes away cancels the handler (``handler_cancellation``),
  which closes the upstream connection, so the engine stops generating.
- One line per request goes to the ``quorum.access`` logger at INFO (silence
  it alone with that logger's level); its arguments are formatted only when a
  handler takes the line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from quorum.answers import cut as cuts
from quorum.answers import verbose
from quorum.errors import (
    ApiError,
    EngineTimeout,
    Forbidden,
    InvalidRequest,
    NoReachableHolder,
    UpstreamFailed,
)
from quorum.fleet import Holder, Route
from quorum.protocol.headers import HOP_HEADER, RESPONSE_DROP
from quorum.routing import (
    Action,
    BodyKind,
    Endpoint,
    Outcome,
    RouteRequest,
    is_failure,
    next_step,
    outcome_of_status,
    resolve_alias,
)
from quorum.server import body as bodies
from quorum.server.context import ATTEMPTS, CONTEXT, KEY_INFO, NodeContext, RequestRecord
from quorum.server.upstream import Upstream, open_http, open_relay
from quorum.usage import SseUsageScanner, Usage, UsageRecord, make_record, usage_from_object
from quorum.usage import new_request_id as new_usage_id

log = logging.getLogger("quorum.proxy")
access_log = logging.getLogger("quorum.access")

_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Accept-Encoding",
        "Authorization",
        HOP_HEADER,
        "X-Request-Id",  # set by the node: the client's own, or a new one
    )
)
_RESPONSE_DROP = RESPONSE_DROP
MAX_JSON_ANSWER = 64 * 1024 * 1024
_GENERATIONS = frozenset({"chat", "completion"})  # answers that end with a finish_reason
MAX_ERROR_BODY = 1024 * 1024

# Request ids need to be unique, not secret: 128 random bits without uuid4's
# object and syscall per request.
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


@dataclass(slots=True)
class Exchange:
    """What one request learned on its way, for the log line, metrics and the record."""

    id: str
    endpoint: Endpoint
    started: float
    model: str = "-"
    route: str = "-"
    node: str = "-"
    status: int = 0
    first_byte: float | None = None
    error: str | None = None
    attempts: int = 0
    wall_start: float = 0.0
    scanner: SseUsageScanner | None = None  # set when this node records the request's usage
    usage: Usage | None = None
    key_id: str | None = None
    recorded: bool = False
    verbose_from: dict[str, str] | None = None  # verbose_json to make from json: task, language
    audio: bytes | None = None  # the upload, when verbose_json is made here (for its duration)


def handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for one ``/v1`` endpoint."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _handle(request, endpoint)

    return handle


async def _handle(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    ex = Exchange(
        id=request.headers.get("X-Request-Id") or new_request_id(),
        endpoint=endpoint,
        started=time.perf_counter(),
    )
    outbox = ctx.outbox
    if outbox is not None and HOP_HEADER.lower() not in request.headers:
        # The node a request entered records it; a node serving a forwarded one does not.
        ex.scanner, ex.wall_start = SseUsageScanner(), time.time()
    try:
        response = await _serve(request, ctx, ex)
    except ApiError as err:
        ex.status, ex.error = err.status, err.code
        raise
    except asyncio.CancelledError:
        ex.status, ex.error = 499, "client_disconnected"
        raise
    finally:
        _finish(ctx, ex)
        if outbox is not None and ex.scanner is not None and not ex.recorded:
            # Shielded: a client that went away still gets its request counted.
            await asyncio.shield(outbox.append(_usage_record(ex)))
    return response


async def _serve(request: web.Request, ctx: NodeContext, ex: Exchange) -> web.StreamResponse:
    payload = await request.read()
    data = None
    boundary = ""
    if ex.endpoint.body is BodyKind.JSON:
        if request.content_type != "application/json":
            raise InvalidRequest(
                f"{ex.endpoint.path} takes a JSON body: set 'Content-Type: application/json' "
                f"(got '{request.content_type}')."
            )
        data = bodies.json_object(payload)
        ex.model = bodies.model_of(data)
        fields: Mapping[str, str] = {}
    else:
        if request.content_type != "multipart/form-data":
            raise InvalidRequest(
                f"{ex.endpoint.path} takes a multipart/form-data body "
                f"(got '{request.content_type}')."
            )
        boundary = bodies.boundary_of(request.headers.get("Content-Type", ""))
        fields = bodies.multipart_fields(
            payload, boundary, {"model", "response_format", "language"}
        )
        if "model" not in fields:
            raise InvalidRequest("You must provide a model parameter.", param="model")
        ex.model = fields["model"]

    key = request.get(KEY_INFO)
    ex.key_id = key.key_id if key is not None else None
    if key is not None and not key.allows(resolve_alias(ctx.scheduler.aliases, ex.model)):
        raise Forbidden(
            f"This API key may not use the model '{ex.model}'.", code="model_not_allowed"
        )
    route_request = RouteRequest(
        ex.model,
        ex.endpoint.types,
        ex.endpoint.label,
        HOP_HEADER.lower() in request.headers,
        len(payload),
    )
    sched = ctx.scheduler
    candidates = await sched.admit(lambda: ctx.snapshot, route_request)
    error: ApiError | None = None
    for index, holder in enumerate(candidates):
        if not sched.available(holder):
            continue
        ex.attempts += 1
        request[ATTEMPTS] = ex.attempts
        ex.route, ex.node = holder.route.value, holder.node_name
        body, extra = _adapt(payload, data, boundary, fields, holder, ex)
        gauge = ctx.metrics.in_flight_for(holder.model, ex.route)
        gauge.inc()
        seq = sched.start(holder)
        began = time.perf_counter()
        try:
            result = await _attempt(request, ctx, holder, body, ex, extra)
        except BaseException:
            sched.abandon(holder, seq)  # the client went away (or a bug): not the holder's fault
            raise
        finally:
            gauge.dec()
        ttfb = None if ex.first_byte is None else ex.first_byte - began
        sched.finish(holder, not is_failure(result.outcome), time.perf_counter() - began, ttfb)
        if result.response is not None:
            return result.response
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
    raise error or NoReachableHolder(
        f"Every holder of '{ex.model}' is busy or cooling down; try again shortly."
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
            else bodies.replace_multipart_field(payload, boundary, "model", holder.upstream_model)
        )
    ex.verbose_from = None
    if fields.get("response_format") == "verbose_json" and "timestamps" not in holder.features:
        payload = bodies.replace_multipart_field(payload, boundary, "response_format", "json")
        extra["X-Quorum-Downgraded"] = verbose.DOWNGRADED
        task = "translate" if ex.endpoint.label == "translation" else "transcribe"
        ex.verbose_from = {"task": task, "language": fields.get("language", "")}
        if ex.audio is None:
            ex.audio = bodies.multipart_file(payload, boundary, "file")
    return payload, extra


def _upstream_headers(request: web.Request, holder: Holder, ex: Exchange) -> list[tuple[str, str]]:
    drop = _HOP_BY_HOP
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
    headers.append(("X-Request-Id", ex.id))
    if holder.api_key:
        headers.append(("Authorization", f"Bearer {holder.api_key}"))
    if holder.route is not Route.LOCAL:
        headers.append((HOP_HEADER, "1"))
    return headers


@dataclass(slots=True)
class Attempt:
    """How one try on one holder ended: a response already given, or an error to weigh."""

    outcome: Outcome
    response: web.StreamResponse | None = None
    error: ApiError | None = None


async def _attempt(
    request: web.Request,
    ctx: NodeContext,
    holder: Holder,
    payload: bytes,
    ex: Exchange,
    extra: dict[str, str],
) -> Attempt:
    headers = _upstream_headers(request, holder, ex)
    path_qs = request.rel_url.path_qs
    try:
        if holder.route is Route.RELAY:
            upstream = await open_relay(
                ctx.tunnel, holder, request.method, path_qs, headers, payload
            )
        else:
            upstream = await open_http(
                ctx.session, holder, request.method, path_qs, headers, payload
            )
    except EngineTimeout as err:
        return Attempt(Outcome.HEADER_TIMEOUT, error=err)
    except NoReachableHolder as err:
        return Attempt(Outcome.REFUSED, error=err)
    except UpstreamFailed as err:
        return Attempt(
            Outcome.RESET if holder.route is Route.RELAY else Outcome.BAD_RESPONSE, error=err
        )
    try:
        if upstream.status >= 400:
            return Attempt(
                outcome_of_status(upstream.status), error=await _engine_error(upstream, holder)
            )
        out = _response_headers(upstream.headers, ctx, holder, ex, extra)
        ctype = upstream.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            return await _json_answer(upstream, holder, out, ex)
        return await _stream_answer(request, upstream, holder, out, ex, ctype)
    finally:
        upstream.release()


def _response_headers(
    upstream: Mapping[str, str],
    ctx: NodeContext,
    holder: Holder,
    ex: Exchange,
    extra: dict[str, str],
) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in _RESPONSE_DROP)
    # A peer already named itself as the serving node; a local engine did not.
    headers.setdefault("X-Quorum-Node", holder.node_name)
    headers["X-Quorum-Route"] = holder.route.value
    headers["X-Request-Id"] = ex.id
    headers["X-Quorum-Attempts"] = str(ex.attempts)
    headers.update(extra)
    return headers


async def _json_answer(
    upstream: Upstream,
    holder: Holder,
    headers: CIMultiDict[str],
    ex: Exchange,
) -> Attempt:
    """A JSON answer is read whole and checked: nothing reached the client yet, so a
    broken one can still go to another holder."""
    try:
        raw = await upstream.read(MAX_JSON_ANSWER)
        parsed = json.loads(raw)
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET, error=err)
    except (ValueError, UnicodeDecodeError) as exc:
        return Attempt(
            Outcome.BAD_RESPONSE,
            error=UpstreamFailed(
                f"The engine '{holder.service}' on {holder.node_name} answered with a broken "
                f"JSON body ({type(exc).__name__})."
            ),
        )
    ex.first_byte = time.perf_counter()
    ex.status = upstream.status
    if ex.endpoint.label in _GENERATIONS and not cuts.finished(parsed):
        ex.error = "answer_cut"
        return Attempt(
            Outcome.BAD_RESPONSE,
            error=UpstreamFailed(
                f"The engine '{holder.service}' on {holder.node_name} answered without a "
                "finish_reason: the answer was cut off before it finished.",
                code="answer_cut",
            ),
        )
    if ex.verbose_from is not None:
        made = verbose.verbose_from_json(
            parsed,
            task=ex.verbose_from["task"],
            language=ex.verbose_from["language"] or None,
            audio=ex.audio,
        )
        if made is not None:
            parsed = made
            raw = json.dumps(made, ensure_ascii=False).encode()
    if ex.scanner is not None:
        ex.usage = usage_from_object(parsed)
    return Attempt(
        Outcome.ANSWERED, web.Response(body=raw, status=upstream.status, headers=headers)
    )


async def _stream_answer(
    request: web.Request,
    upstream: Upstream,
    holder: Holder,
    headers: CIMultiDict[str],
    ex: Exchange,
    ctype: str,
) -> Attempt:
    sse = ctype.startswith("text/event-stream")
    if sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    chunks = upstream.chunks()
    check = cuts.StreamCheck() if sse and ex.endpoint.label in _GENERATIONS else None
    # Nothing is sent before the first byte of the answer: until then, a failure can
    # still be retried on another holder, and the client never sees it.
    try:
        first = await anext(chunks, b"")
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET, error=err)
    if check is not None:
        first = check.feed(first)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    if upstream.content_length is not None and not sse:
        response.content_length = upstream.content_length
    await response.prepare(request)
    ex.status = upstream.status
    ex.first_byte = time.perf_counter()
    try:
        scanner = ex.scanner if sse else None
        if check is not None:
            await _pass_checked(response, first, chunks, check, scanner, holder)
        elif scanner is None:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        else:
            scanner.feed(first)
            await response.write(first)
            async for chunk in chunks:
                scanner.feed(chunk)
                await response.write(chunk)
        if scanner is not None:
            ex.usage = scanner.close()
            # Committed before the stream's end goes out: an answer the client got
            # always has its record, even if this node dies right after.
            ctx_outbox = request.app[CONTEXT].outbox
            if ctx_outbox is not None:
                ex.status = upstream.status
                ex.recorded = True  # before the await: a cancel here must not count it twice
                await asyncio.shield(ctx_outbox.append(_usage_record(ex)))
    except UpstreamFailed as exc:
        ex.error = exc.code if exc.code == "answer_cut" else "engine_stream_broken"
        log.warning(
            "request %s: %s on %s broke off mid-answer: %s",
            ex.id,
            holder.service,
            holder.node_name,
            exc,
        )
        if sse:
            await response.write(b"data: " + json.dumps(exc.body()).encode() + b"\n\n")
        # Close without the terminating chunk: the client sees a truncated body, not an end.
        if request.transport is not None:
            request.transport.close()
        return Attempt(Outcome.BROKEN_MID_ANSWER, response)
    await response.write_eof()
    return Attempt(Outcome.ANSWERED, response)


async def _pass_checked(
    response: web.StreamResponse,
    first: bytes,
    chunks: AsyncIterator[bytes],
    check: cuts.StreamCheck,
    scanner: SseUsageScanner | None,
    holder: Holder,
) -> None:
    """Pass a chat or completion stream through ``check``; raise if it was cut."""
    if first:
        if scanner is not None:
            scanner.feed(first)
        await response.write(first)
    async for chunk in chunks:
        out = check.feed(chunk)
        if out:
            if scanner is not None:
                scanner.feed(out)
            await response.write(out)
    rest = check.end()
    if rest:
        if scanner is not None:
            scanner.feed(rest)
        await response.write(rest)
    if check.cut:
        raise UpstreamFailed(
            f"The engine '{holder.service}' on {holder.node_name} ended the answer without a "
            "finish_reason: it was cut off before it finished.",
            code="answer_cut",
        )


async def _engine_error(upstream: Upstream, holder: Holder) -> ApiError:
    """The engine's own error, in OpenAI's shape, with a 5xx reported as our 502."""
    try:
        raw = await upstream.read(MAX_ERROR_BODY)
    except UpstreamFailed:
        raw = b""
    message = ""
    code = None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error", data.get("detail"))
        if isinstance(inner, dict):
            message = str(inner.get("message") or "")
            code = inner.get("code") if isinstance(inner.get("code"), str) else None
        elif inner is not None:
            message = str(inner)
    if not message:
        message = raw[:500].decode("utf-8", "replace").strip() or f"HTTP {upstream.status}"
    source = f"engine '{holder.service}' on {holder.node_name}"
    if upstream.status >= 500:
        return UpstreamFailed(f"The {source} failed ({upstream.status}): {message}")
    err = ApiError(message, code=code)
    err.status = upstream.status
    err.error_type = "invalid_request_error"
    if upstream.status == 404 and code is None:
        err.code = "model_not_found" if "model" in message.lower() else "not_found"
    return err


def _usage_record(ex: Exchange) -> UsageRecord:
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    return make_record(
        request_id=new_usage_id(),  # never the client's X-Request-Id: that may repeat
        started_at=ex.wall_start,
        model=ex.model,
        endpoint=ex.endpoint.label,
        route=ex.route,
        node=ex.node,
        status=ex.status,
        duration_s=time.perf_counter() - ex.started,
        ttfb_s=ttfb,
        usage=ex.usage,
        key_id=ex.key_id,
        error=ex.error,
    )


def _finish(ctx: NodeContext, ex: Exchange) -> None:
    end = time.perf_counter()
    duration = end - ex.started
    ttfb = None if ex.first_byte is None else ex.first_byte - ex.started
    label = ex.endpoint.label
    m = ctx.metrics
    m.observe(label, ex.model, ex.route, ex.status, duration, ttfb)
    if ex.error is not None or ex.status >= 400:
        m.errors.labels(label, ex.model, ex.route, ex.error or str(ex.status)).inc()
    ctx.recent.append(
        RequestRecord(
            id=ex.id,
            time=time.time(),
            endpoint=label,
            model=ex.model,
            route=ex.route,
            node=ex.node,
            status=ex.status,
            ttfb_ms=None if ttfb is None else round(ttfb * 1000, 2),
            duration_ms=round(duration * 1000, 2),
            error=ex.error,
        )
    )
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s model=%s route=%s node=%s status=%s ttfb=%s dur=%.1fms%s",
            ex.id[:12],
            label,
            ex.model,
            ex.route,
            ex.node,
            ex.status,
            _Millis(ttfb),
            duration * 1000,
            _ErrorSuffix(ex.error),
        )


class _Millis:
    """``ttfb=`` of the access line, formatted only if the line is written."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __str__(self) -> str:
        return "-" if self.seconds is None else f"{self.seconds * 1000:.1f}ms"


class _ErrorSuffix:
    __slots__ = ("error",)

    def __init__(self, error: str | None) -> None:
        self.error = error

    def __str__(self) -> str:
        return f" error={self.error}" if self.error else ""
