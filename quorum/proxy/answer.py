"""One attempt on one holder: open the upstream, then pass its answer to the sink.

- Nothing is written before the first byte of the answer: until then a
  failure can still be retried on another holder, and the client never sees it.
- A JSON answer is read whole and checked (an engine answering garbage is a
  502, not a parse error in the client's SDK); a chat or completion answer
  without a ``finish_reason`` was cut (:mod:`quorum.answers.cut`): a 502.
- SSE and binary bodies go through chunk by chunk, never buffered. A chat or
  completion stream passes through :class:`quorum.answers.cut.StreamCheck`.
- After the answer started, a failure ends an SSE stream with an ``error``
  event and no ``[DONE]``, and any body is cut short (``Sink.abort``), so
  the client can never mistake a failure for a complete answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

from quorum.answers import cut as cuts
from quorum.answers import verbose
from quorum.api.errors import stream_error
from quorum.api.headers import RESPONSE_DROP
from quorum.errors import ApiError, EngineTimeout, NoReachableHolder, UpstreamFailed
from quorum.fleet import Holder, Load, Route
from quorum.fleet.remote import LOAD_HEADER, parse_load
from quorum.proxy import foreign as foreigns
from quorum.proxy.exchange import Exchange, usage_record
from quorum.proxy.foreign import Foreign
from quorum.proxy.sink import Sink
from quorum.proxy.upstream import Headers, Opener, Upstream
from quorum.routing import Outcome, outcome_of_status
from quorum.usage import SseUsageScanner, Usage, usage_from_object
from quorum.usage.outbox import Outbox

log = logging.getLogger("quorum.proxy")

MAX_JSON_ANSWER = 64 * 1024 * 1024
MAX_ERROR_BODY = 1024 * 1024
GENERATIONS = frozenset({"chat", "completion"})  # answers that end with a finish_reason


@dataclass(slots=True)
class Attempt:
    """How one try on one holder ended: answered (the sink has it), or an error to weigh."""

    outcome: Outcome
    error: ApiError | None = None
    load: Load | None = None  # the serving peer's load, from its answer's header

    @property
    def answered(self) -> bool:
        return self.error is None


async def attempt(
    opener: Opener,
    sink: Sink,
    holder: Holder,
    method: str,
    path_qs: str,
    headers: Headers,
    payload: bytes,
    ex: Exchange,
    extra: dict[str, str],
    outbox: Outbox | None,
    foreign: Foreign | None = None,
    on_load: Callable[[Load], None] | None = None,
) -> Attempt:
    """Try ``holder``; with ``foreign``, the engine speaks chat completions and its answer
    is translated back into the client's API (:mod:`quorum.proxy.foreign`). ``on_load``
    gets a peer's load as soon as its answer's head came (it describes that moment)."""
    began = time.monotonic_ns()
    try:
        upstream = await opener(holder, method, path_qs, headers, payload)
    except EngineTimeout as err:
        return Attempt(Outcome.HEADER_TIMEOUT, err)
    except NoReachableHolder as err:
        return Attempt(Outcome.REFUSED, err)
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET if holder.route is Route.RELAY else Outcome.BAD_RESPONSE, err)
    load = None if holder.route is Route.LOCAL else parse_load(upstream.headers.get(LOAD_HEADER))
    if load is not None and on_load is not None:
        on_load(load)
    try:
        result = await _answer(sink, upstream, holder, ex, extra, outbox, foreign, began)
    finally:
        upstream.release()
    result.load = load
    return result


async def _answer(
    sink: Sink,
    upstream: Upstream,
    holder: Holder,
    ex: Exchange,
    extra: dict[str, str],
    outbox: Outbox | None,
    foreign: Foreign | None,
    began: int,
) -> Attempt:
    """The answer of an engine that sent a response head, into the sink."""
    if upstream.status >= 400:
        return Attempt(outcome_of_status(upstream.status), await engine_error(upstream, holder))
    out = response_headers(upstream.headers, holder, ex, extra)
    ctype = upstream.headers.get("Content-Type", "")
    if foreign is not None:
        if ctype.startswith("application/json"):
            return await _translated_whole(sink, upstream, holder, out, ex, foreign, began)
        return await _translated_stream(sink, upstream, holder, out, ex, foreign, outbox)
    if ctype.startswith("application/json"):
        return await _json_answer(sink, upstream, holder, out, ex)
    return await _stream_answer(sink, upstream, holder, out, ex, ctype, outbox)


def response_headers(
    upstream: Mapping[str, str], holder: Holder, ex: Exchange, extra: dict[str, str]
) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in RESPONSE_DROP)
    headers.popall(LOAD_HEADER, None)  # for the node that forwarded, not for its client
    # A peer already named itself as the serving node; a local engine did not.
    headers.setdefault("X-Quorum-Node", holder.node_name)
    headers["X-Quorum-Route"] = holder.route.value
    headers["X-Request-Id"] = ex.id
    headers["X-Quorum-Attempts"] = str(ex.attempts)
    headers.update(extra)
    return headers


def _broken_json(holder: Holder, exc: Exception) -> Attempt:
    return Attempt(
        Outcome.BAD_RESPONSE,
        UpstreamFailed(
            f"The engine '{holder.service}' on {holder.node_name} answered with a broken "
            f"JSON body ({type(exc).__name__})."
        ),
    )


async def _json_answer(
    sink: Sink, upstream: Upstream, holder: Holder, headers: CIMultiDict[str], ex: Exchange
) -> Attempt:
    """A JSON answer is read whole and checked: nothing reached the client yet, so a
    broken one can still go to another holder."""
    try:
        raw = await upstream.read(MAX_JSON_ANSWER)
        parsed = json.loads(raw)
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET, err)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _broken_json(holder, exc)
    ex.first_byte = time.perf_counter()
    ex.status = upstream.status
    if ex.endpoint.label in GENERATIONS and not cuts.finished(parsed):
        return Attempt(
            Outcome.BAD_RESPONSE,
            UpstreamFailed(
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
    usage = usage_from_object(parsed)
    if ex.scanner is not None:
        ex.usage = usage
    ex.tokens = None if usage is None else usage.completion_tokens
    await sink.whole(upstream.status, headers, raw)
    ex.last_byte = time.perf_counter()
    return Attempt(Outcome.ANSWERED)


async def _stream_answer(
    sink: Sink,
    upstream: Upstream,
    holder: Holder,
    headers: CIMultiDict[str],
    ex: Exchange,
    ctype: str,
    outbox: Outbox | None,
) -> Attempt:
    sse = ctype.startswith("text/event-stream")
    lines = sse or ctype.startswith("application/x-ndjson")  # Ollama's native stream
    if sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    chunks = upstream.chunks()
    check = cuts.StreamCheck() if sse and ex.endpoint.label in GENERATIONS else None
    # Nothing is sent before the first byte of the answer: until then, a failure can
    # still be retried on another holder, and the client never sees it.
    try:
        first = await anext(chunks, b"")
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET, err)
    if check is not None:
        first = check.feed(first)
    length = upstream.content_length if not sse else None
    await sink.start(upstream.status, headers, length)
    ex.status = upstream.status
    ex.first_byte = time.perf_counter()
    scanner = ex.scanner if lines else None
    try:
        await _pass(sink, first, chunks, check, scanner, holder, ex)
        if ex.last_byte is None:  # no [DONE] (Ollama's lines, other bodies): at their end
            ex.last_byte = time.perf_counter()
            if check is not None:
                ex.tokens = check.events
        if scanner is not None:
            ex.usage = scanner.close()
            if ex.usage is not None and ex.usage.completion_tokens is not None:
                ex.tokens = ex.usage.completion_tokens  # the stream said its count
            # Committed before the stream's end goes out: an answer the client got
            # always has its record, even if this node dies right after.
            if outbox is not None:
                ex.recorded = True  # before the await: a cancel here must not count it twice
                await asyncio.shield(outbox.append(usage_record(ex)))
    except UpstreamFailed as exc:
        ex.error = exc.code if exc.code == "answer_cut" else "engine_stream_broken"
        log.warning(
            "request %s: %s on %s broke off mid-answer: %s",
            ex.id,
            holder.service,
            holder.node_name,
            exc,
        )
        if lines:  # the stream's own error event, in the client's API (never a clean end)
            await sink.write(stream_error(exc, ex.endpoint.dialect))
        # Close without the terminating chunk: the client sees a truncated body, not an end.
        sink.abort()
        return Attempt(Outcome.BROKEN_MID_ANSWER)
    await sink.end()
    return Attempt(Outcome.ANSWERED)


async def _translated_whole(
    sink: Sink,
    upstream: Upstream,
    holder: Holder,
    headers: CIMultiDict[str],
    ex: Exchange,
    foreign: Foreign,
    began_ns: int,
) -> Attempt:
    try:
        raw = await upstream.read(MAX_JSON_ANSWER)
        parsed = json.loads(raw)
        made = foreigns.whole(foreign, parsed, time.monotonic_ns() - began_ns)
    except UpstreamFailed as err:
        return Attempt(Outcome.BAD_RESPONSE, err)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _broken_json(holder, exc)
    ex.first_byte = time.perf_counter()
    ex.status = upstream.status
    if ex.scanner is not None:
        ex.usage = usage_from_object(parsed)
    headers["Content-Type"] = "application/json; charset=utf-8"
    await sink.whole(upstream.status, headers, json.dumps(made, ensure_ascii=False).encode())
    return Attempt(Outcome.ANSWERED)


async def _translated_stream(
    sink: Sink,
    upstream: Upstream,
    holder: Holder,
    headers: CIMultiDict[str],
    ex: Exchange,
    foreign: Foreign,
    outbox: Outbox | None,
) -> Attempt:
    """The engine's chat stream, as the client's API streams; a cut one ends in that API's
    error event (the translator decides), a broken one too."""
    translator = foreigns.stream(foreign)
    chunks = upstream.chunks()
    try:
        first = await anext(chunks, b"")
    except UpstreamFailed as err:
        return Attempt(Outcome.RESET, err)
    headers["Content-Type"] = translator.media_type
    if translator.media_type == "text/event-stream":
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    await sink.start(upstream.status, headers)
    ex.status = upstream.status
    ex.first_byte = time.perf_counter()
    outcome = Outcome.ANSWERED
    try:
        await sink.write(translator.feed_sse(first))
        async for chunk in chunks:
            out = translator.feed_sse(chunk)
            if out:
                await sink.write(out)
        await sink.write(translator.end())
    except UpstreamFailed as exc:
        log.warning(
            "request %s: %s on %s broke off mid-answer: %s",
            ex.id,
            holder.service,
            holder.node_name,
            exc,
        )
        await sink.write(translator.fail(exc.message, code="engine_stream_broken"))
        ex.error, outcome = "engine_stream_broken", Outcome.BROKEN_MID_ANSWER
    if translator.error is not None and ex.error is None:
        ex.error = "answer_cut"
        outcome = Outcome.BROKEN_MID_ANSWER
    counts = translator.usage
    if outcome is Outcome.ANSWERED:
        ex.last_byte = time.perf_counter()
        ex.tokens = None if counts is None else counts.output
    if ex.scanner is not None and counts is not None:
        ex.usage = Usage(counts.input, counts.output)
    if ex.scanner is not None and outbox is not None:
        ex.recorded = True
        await asyncio.shield(outbox.append(usage_record(ex)))
    await sink.end()
    return Attempt(outcome)


def _whole_out(ex: Exchange, check: cuts.StreamCheck) -> None:
    """A finished answer's ``[DONE]`` went out: the client has it all (an SDK hangs up
    there, before the stream's very end); when, and about how many tokens (one an event)."""
    ex.last_byte = time.perf_counter()
    ex.tokens = max(0, check.events - 1)


async def _pass(
    sink: Sink,
    first: bytes,
    chunks: AsyncIterator[bytes],
    check: cuts.StreamCheck | None,
    scanner: SseUsageScanner | None,
    holder: Holder,
    ex: Exchange,
) -> None:
    """Pass the body through (``check`` and ``scanner`` see what goes out); raise if cut."""
    if check is None and scanner is None:
        await sink.write(first)
        async for chunk in chunks:
            await sink.write(chunk)
        return
    if first:
        if scanner is not None:
            scanner.feed(first)
        await sink.write(first)
        if check is not None and check.done and check.finished:
            _whole_out(ex, check)
    async for chunk in chunks:
        out = check.feed(chunk) if check is not None else chunk
        if out:
            if scanner is not None:
                scanner.feed(out)
            await sink.write(out)
            if check is not None and check.done and check.finished and ex.last_byte is None:
                _whole_out(ex, check)
    if check is None:
        return
    rest = check.end()
    if rest:
        if scanner is not None:
            scanner.feed(rest)
        await sink.write(rest)
    if check.cut:
        raise UpstreamFailed(
            f"The engine '{holder.service}' on {holder.node_name} ended the answer without a "
            "finish_reason: it was cut off before it finished.",
            code="answer_cut",
        )


async def engine_error(upstream: Upstream, holder: Holder) -> ApiError:
    """The engine's own error, in OpenAI's shape, with a 5xx reported as our 502."""
    try:
        raw = await upstream.read(MAX_ERROR_BODY)
    except UpstreamFailed:
        raw = b""
    message = ""
    code = None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
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
