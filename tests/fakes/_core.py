"""FakeEngine: one aiohttp server per fake, with recording, failure modes and cancel detection.

Thread model: a fake runs in whichever event loop calls :meth:`FakeEngine.start` (the
test's own loop, or a background thread's, see :class:`tests.fakes.net.LoopThread`).
Everything a test reads or flips while it runs -- ``requests``, ``cancelled``,
``cancelled_count``, ``mode``, ``gen_delay``, the model list, ``loaded``,
``processing``, ``waiting`` -- is safe to use from any thread: lists are guarded by a lock
and copied on read, events are ``threading.Event``, and every change of state is announced
on one condition, so :meth:`FakeEngine.wait_until` / :meth:`FakeEngine.until` wait for a
state instead of sleeping.

Concurrency: a generation (chat, completion, embedding) takes a slot from the engine's
:class:`~tests.fakes._slots.SlotPool` and holds it for ``gen_delay`` seconds (non-streamed)
or while its chunks go out, ``chunk_delay`` apart (streamed). Each engine sizes its pools
like the real one (see its module docstring); the base class never makes anyone wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, Self, get_args

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ._slots import SlotPool

Mode = Literal[
    "ok",
    "garbage",  # answer bytes that are not HTTP, then close
    "bad_json",  # 200, application/json, body is not JSON
    "error_500",  # 500 with the engine's own error shape
    "slow_headers",  # sleep `delay` seconds, then answer normally
    "die_midstream",  # send part of the body (some SSE events), then abort the connection
    "stall_midstream",  # send part of the body, then go silent, connection open
    "hang",  # accept the request, never answer
]
MODES: Final[tuple[str, ...]] = get_args(Mode)

GARBAGE: Final = b"\x16\x03\x01\x02\x00 SSH-2.0-not-http \xff\xfe\r\n\x00\x00\r\n\r\n"
BAD_JSON: Final = b'{"object": "list", "data": [{"id": "trunc'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def iso_now(offset_seconds: float = 0.0) -> str:
    """RFC 3339 with the local offset, like Go's time.Time JSON (``...T...+02:00``)."""
    return datetime.fromtimestamp(time.time() + offset_seconds, UTC).astimezone().isoformat()


def compact_json(obj: Any) -> str:
    """Go / pydantic / nlohmann style: no spaces."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ModelSpec:
    """One model an engine holds. Engines render the fields they know about."""

    id: str
    type: Literal["llm", "vlm", "embeddings"] = "llm"  # LM Studio's `type`
    family: str = "llama"
    parameter_size: str = "1.2B"
    quantization: str = "Q4_K_M"
    size: int = 807_694_464
    publisher: str = "lmstudio-community"
    arch: str = "llama"
    format: str = "gguf"
    context_length: int = 4096  # loaded context (Ollama /api/ps, LM Studio loaded_context_length)
    max_context_length: int = 131_072
    modified_at: str = field(default_factory=iso_now)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.id.encode()).hexdigest()


def as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(id=model)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


def echo_reply(prompt: str) -> str:
    """Default generation: deterministic, derived from the last user message."""
    return f"You said: {prompt}" if prompt else "You said nothing."


class FakeEngine:
    """Base of every fake. Subclasses provide :meth:`build_app` and :meth:`error_response`."""

    kind: ClassVar[str] = "engine"
    default_port: ClassVar[int] = 0
    default_models: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        models: Iterable[str | ModelSpec] | None = None,
        loaded: Iterable[str] = (),
        mode: Mode = "ok",
        mode_paths: Collection[str] | None = None,
        delay: float = 0.5,
        chunks: int = 4,
        chunk_delay: float = 0.0,
        gen_delay: float = 0.0,
        die_after: int | None = None,
        reply: Callable[[str], str] = echo_reply,
        embedding_dims: int = 8,
        handler_cancellation: bool = False,
        shutdown_timeout: float = 0.5,
    ) -> None:
        self.mode: Mode = mode
        """Failure mode, switchable at runtime from any thread."""
        self.mode_paths: Collection[str] | None = mode_paths
        """If set, `mode` applies only to request paths starting with one of these."""
        self.delay = delay
        """Seconds `slow_headers` waits before answering."""
        self.chunks = chunks
        """How many content-bearing SSE events a streamed generation has."""
        self.chunk_delay = chunk_delay
        """Seconds between SSE events (a streamed generation holds its slot meanwhile)."""
        self._gen_delay = gen_delay
        self.die_after = die_after
        """SSE events sent before die/stall_midstream strikes (None: half of them)."""
        self.reply = reply
        self.embedding_dims = embedding_dims
        self.handler_cancellation = handler_cancellation
        self.shutdown_timeout = shutdown_timeout

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        """Notified on every change a test may wait for (requests, slots, streams)."""
        self._models: dict[str, ModelSpec] = {}
        for model in self.default_models if models is None else models:
            self._put_model(as_spec(model))
        self._loaded: set[str] = {self.normalize_model_id(m) for m in loaded}
        self._requests: list[RecordedRequest] = []
        self._cancelled_count = 0
        self._streams_started = 0
        self._streams_completed = 0
        self._streams_cut_short = 0
        self.cancelled = threading.Event()
        """Set when a client goes away while a generation (POST) is still in progress.

        Noticed by a failing write (streamed answers, with a chunk_delay so the stream
        outlives the client) or, with ``handler_cancellation=True``, by aiohttp cancelling
        the handler -- which also covers ``hang``/``slow_headers`` and non-streamed POSTs.
        """
        self.stream_started = threading.Event()
        """Set when a streamed response has sent its headers."""

        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._stopping = False
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gen_wakeup = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        """The engine's own error body for ``status``."""
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started at {self.url}")
        self._stopping = False
        self._release = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._gen_wakeup = asyncio.Event()
        runner = web.AppRunner(
            self.build_app(),
            handler_cancellation=self.handler_cancellation,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        address = runner.addresses[0]
        self._runner, self._host, self._port = runner, host, int(address[1])
        return self.url

    async def stop(self) -> None:
        """Close the listener and every connection; in-flight handlers are cut short."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        if self._release is not None:
            self._release.set()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} was never started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a path, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self._host}:{self.port}"

    # -- models -------------------------------------------------------------------------

    def normalize_model_id(self, model_id: str) -> str:
        return model_id

    def _put_model(self, spec: ModelSpec) -> ModelSpec:
        model_id = self.normalize_model_id(spec.id)
        if model_id != spec.id:
            spec = dataclasses.replace(spec, id=model_id)
        self._models[model_id] = spec
        return spec

    @property
    def models(self) -> list[ModelSpec]:
        with self._lock:
            return list(self._models.values())

    @property
    def model_ids(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def add_model(self, model: str | ModelSpec) -> ModelSpec:
        """Make a model appear (e.g. `ollama pull`), from any thread."""
        with self._lock:
            return self._put_model(as_spec(model))

    def remove_model(self, model_id: str) -> None:
        """Make a model disappear (e.g. `ollama rm`); also unloads it."""
        model_id = self.normalize_model_id(model_id)
        with self._lock:
            self._models.pop(model_id, None)
            self._loaded.discard(model_id)

    def set_models(self, models: Iterable[str | ModelSpec]) -> None:
        with self._lock:
            self._models.clear()
            for model in models:
                self._put_model(as_spec(model))
            self._loaded &= set(self._models)

    def find_model(self, model_id: str) -> ModelSpec | None:
        with self._lock:
            return self._models.get(self.normalize_model_id(model_id))

    @property
    def loaded(self) -> frozenset[str]:
        """Ids of the models in memory (Ollama /api/ps, LM Studio `state`)."""
        with self._lock:
            return frozenset(self._loaded)

    def load(self, model_id: str) -> None:
        with self._lock:
            self._loaded.add(self.normalize_model_id(model_id))

    def unload(self, model_id: str) -> None:
        with self._lock:
            self._loaded.discard(self.normalize_model_id(model_id))

    # -- recording ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def wait_for_requests(
        self, count: int, timeout: float = 5.0, path: str | None = None
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests (to ``path``, if given) arrived; return them.

        Blocks the calling thread: use it from a thread other than the fake's loop.
        Raises TimeoutError.
        """

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"{len(matching())} of {count} requests after {timeout}s")
            return matching()

    @property
    def cancelled_count(self) -> int:
        with self._lock:
            return self._cancelled_count

    @property
    def streams_started(self) -> int:
        with self._lock:
            return self._streams_started

    @property
    def streams_completed(self) -> int:
        with self._lock:
            return self._streams_completed

    @property
    def streams_cut_short(self) -> int:
        """Streams the engine ended early on purpose (llama-cpp-python's interrupt)."""
        with self._lock:
            return self._streams_cut_short

    def reset(self) -> None:
        """Forget recorded requests and counters; clear the events; mode back to ok."""
        with self._lock:
            self._requests.clear()
            self._cancelled_count = self._streams_started = self._streams_completed = 0
            self._streams_cut_short = 0
        self.cancelled.clear()
        self.stream_started.clear()
        self.mode = "ok"

    # -- capacity -----------------------------------------------------------------------

    def new_pool(self, size: int | None) -> SlotPool:
        """A slot pool whose changes wake :meth:`wait_until`."""
        return SlotPool(size, self._changed)

    def slot_pools(self) -> list[SlotPool]:
        """Every pool a request may hold a slot of (none: nobody ever waits)."""
        return []

    @property
    def processing(self) -> int:
        """Requests the engine is working on now (holding a slot)."""
        with self._lock:
            return sum(pool.running for pool in self.slot_pools())

    @property
    def waiting(self) -> int:
        """Requests accepted but waiting for a slot (llama.cpp's "deferred")."""
        with self._lock:
            return sum(pool.waiting for pool in self.slot_pools())

    @property
    def gen_delay(self) -> float:
        """Seconds a non-streamed generation holds its slot.

        Settable at runtime from any thread, and the change reaches generations already
        under way: set it high to keep slots busy while a test looks, then to 0 to let
        every running generation finish at once.
        """
        return self._gen_delay

    @gen_delay.setter
    def gen_delay(self, seconds: float) -> None:
        self._gen_delay = seconds
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_generations)

    def _wake_generations(self) -> None:
        wakeup, self._gen_wakeup = self._gen_wakeup, asyncio.Event()
        wakeup.set()

    async def hold_generation(self) -> None:
        """Take ``gen_delay`` seconds (re-read whenever it changes), like a real generation."""
        started = asyncio.get_running_loop().time()
        while True:
            remaining = started + self._gen_delay - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            wakeup = self._gen_wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wakeup.wait()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block the calling thread until ``predicate()`` holds; raise TimeoutError after
        ``timeout`` seconds. The predicate may read any of the fake's properties.

        Use it from a thread other than the fake's loop (or through :meth:`until`).
        """
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError(f"{type(self).__name__}: condition not met after {timeout}s")

    async def until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """:meth:`wait_until` for a coroutine (it waits in a worker thread, so the fake
        may run on the caller's own loop)."""
        await asyncio.to_thread(self.wait_until, predicate, within)

    @staticmethod
    def client_gone(request: web.Request) -> bool:
        """Whether the client closed its connection (noticed without writing to it)."""
        transport = request.transport
        return transport is None or transport.is_closing()

    def _record(self, request: web.Request, body: bytes) -> None:
        entry = RecordedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            received_at=time.time(),
        )
        with self._changed:
            self._requests.append(entry)
            self._changed.notify_all()

    def _note_cancel(self) -> None:
        with self._changed:
            self._cancelled_count += 1
            self._changed.notify_all()
        self.cancelled.set()

    # -- request pipeline ---------------------------------------------------------------

    def mode_for(self, path: str) -> Mode:
        mode, paths = self.mode, self.mode_paths
        if mode != "ok" and paths is not None and not any(path.startswith(p) for p in paths):
            return "ok"
        return mode

    def new_app(self) -> web.Application:
        """An Application with the recording / failure-mode middleware installed."""

        @web.middleware
        async def fake_engine_middleware(request: web.Request, handler: Handler) -> Any:
            return await self._dispatch(request, handler)

        return web.Application(middlewares=[fake_engine_middleware], client_max_size=64 << 20)

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self._record(request, body)
        try:
            return await self._apply_mode(request, handler)
        except asyncio.CancelledError:
            # handler_cancellation=True: aiohttp cancels the handler when the client leaves.
            if request.method == "POST" and not self._stopping:
                self._note_cancel()
            raise

    async def _apply_mode(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode = self.mode_for(request.path)
        if mode == "hang":
            await self._wait_for_release()
            self._abort(request)
            return web.Response(status=503)  # never reaches the client
        if mode == "garbage":
            transport = request.transport
            if transport is not None:
                transport.write(GARBAGE)
                transport.close()
            return web.Response(status=500)  # never reaches the client
        if mode == "bad_json":
            return web.Response(body=BAD_JSON, content_type="application/json")
        if mode == "error_500":
            return self.error_response(request, 500, "fake engine failure (mode=error_500)")
        if mode == "slow_headers":
            await asyncio.sleep(self.delay)
        response = await handler(request)
        if (
            mode in ("die_midstream", "stall_midstream")
            and not response.prepared
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
        ):
            return await self._send_truncated(request, response, mode)
        return response

    async def _wait_for_release(self) -> None:
        release = self._release
        if release is not None:
            await release.wait()

    @staticmethod
    def _abort(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _send_truncated(
        self, request: web.Request, response: web.Response, mode: Mode
    ) -> web.StreamResponse:
        body = response.body
        assert isinstance(body, bytes)
        out = web.StreamResponse(status=response.status, reason=response.reason)
        out.headers.extend(response.headers)
        out.content_length = len(body)
        await out.prepare(request)
        try:
            await out.write(body[: len(body) // 2])
        except ConnectionError:
            return out
        if mode == "stall_midstream":
            await self._wait_for_release()
        self._abort(request)
        return out

    # -- response helpers ---------------------------------------------------------------

    def json_response(
        self,
        data: Any,
        status: int = 200,
        *,
        content_type: str = "application/json",
        dumps: Callable[[Any], str] = compact_json,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        response = web.Response(status=status, body=dumps(data).encode(), headers=headers)
        response.headers["Content-Type"] = content_type
        return response

    async def send_sse(
        self,
        request: web.Request,
        frames: Sequence[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Send pre-encoded SSE frames one by one, honouring chunk_delay and the modes.

        A client that disconnects is noticed either by a failing write or, with
        ``handler_cancellation=True``, by this coroutine being cancelled; both count
        as a cancelled generation.
        """
        response = await self.open_sse(request, headers)
        if await self.write_sse(request, response, frames):
            await self.end_sse(response)
        return response

    async def open_sse(
        self, request: web.Request, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        """Send the status line and headers of an SSE answer."""
        response = web.StreamResponse(status=200)
        response.headers.update(headers or {"Content-Type": "text/event-stream"})
        await response.prepare(request)
        with self._changed:
            self._streams_started += 1
            self._changed.notify_all()
        self.stream_started.set()
        return response

    async def write_sse(
        self,
        request: web.Request,
        response: web.StreamResponse,
        frames: Sequence[bytes],
        *,
        cut_short: Callable[[], Sequence[bytes] | None] | None = None,
    ) -> bool:
        """Write ``frames`` ``chunk_delay`` apart; True when the stream may now end cleanly.

        After each frame but the last, ``cut_short()`` may return the frames that end the
        stream early instead (they are written, then the stream ends cleanly).
        """
        mode = self.mode_for(request.path)
        cut = None
        if mode in ("die_midstream", "stall_midstream"):
            cut = self.die_after if self.die_after is not None else max(1, len(frames) // 2)
        try:
            for index, frame in enumerate(frames):
                if index == cut:
                    if mode == "stall_midstream":
                        await self._wait_for_release()
                    self._abort(request)
                    return False
                await response.write(frame)
                ending = cut_short() if cut_short and index < len(frames) - 1 else None
                if ending is not None:
                    for last in ending:
                        await response.write(last)
                    with self._changed:
                        self._streams_cut_short += 1
                        self._changed.notify_all()
                    return True
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
        except ConnectionError:
            if not self._stopping:
                self._note_cancel()
            return False
        return True

    async def end_sse(self, response: web.StreamResponse) -> None:
        """Finish an SSE answer whose frames all went out."""
        try:
            await response.write_eof()
        except ConnectionError:
            if not self._stopping:
                self._note_cancel()
            return
        with self._changed:
            self._streams_completed += 1
            self._changed.notify_all()

    async def send_chunked(
        self,
        request: web.Request,
        body: bytes,
        content_type: str,
        pieces: int = 4,
    ) -> web.StreamResponse:
        """Send a binary body with chunked transfer encoding in ``pieces`` writes."""
        response = web.StreamResponse(status=200)
        response.content_type = content_type
        response.enable_chunked_encoding()
        await response.prepare(request)
        mode = self.mode_for(request.path)
        step = max(1, -(-len(body) // max(1, pieces)))
        offsets = list(range(0, len(body), step))
        cut = None
        if mode in ("die_midstream", "stall_midstream"):
            cut = self.die_after if self.die_after is not None else max(1, len(offsets) // 2)
        try:
            for index, offset in enumerate(offsets):
                if index == cut:
                    if mode == "stall_midstream":
                        await self._wait_for_release()
                    self._abort(request)
                    return response
                await response.write(body[offset : offset + step])
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            await response.write_eof()
        except ConnectionError:
            if not self._stopping:
                self._note_cancel()
        return response
