"""Fake llama-cpp-python server (``python -m llama_cpp.server``, default port 8000).

Shapes follow abetlen/llama-cpp-python 0.3.x: ``llama_cpp/server/app.py``, ``errors.py``,
``types.py``, ``model.py`` and the dicts built in ``llama.py`` / ``llama_chat_format.py``:
- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "owned_by":
  "me", "permissions": []}]}``, one entry per model alias (``--model_alias``, else the
  ``--model`` path);
- the request's ``model`` only picks among the configured aliases; any other name, or none,
  silently gets the default model. Answers echo the requested name, or the model *path*
  when none was given;
- chat: id ``chatcmpl-<uuid4>``; streamed, a first chunk ``delta {"role": "assistant"}``,
  content chunks ``delta {"content"}``, a last chunk ``delta {}`` with the finish_reason,
  every choice with ``logprobs: null``; no usage chunk (``stream_options`` is not a field);
- completions: id ``cmpl-<uuid4>``; ``max_tokens`` defaults to 16; chat messages and the
  prompt default to empty;
- embeddings need the model loaded with ``--embedding true`` (``embedding``); without it
  the call fails with 500 ``Llama model must be created with embedding=True to call this
  method``; ``encoding_format`` is not a field (floats always);
- errors: ``RouteErrorHandler`` turns every exception of a route -- a request body that
  fails validation included -- into 500 ``{"error": {"message", "type":
  "internal_server_error", "param": null, "code": null}}``; a body that is not JSON at all
  is a bare 500 ``Internal Server Error``; FastAPI's own errors are ``{"detail": ...}``
  (unknown path 404 ``Not Found``, wrong method 405 ``Method Not Allowed``);
- whole answers are Starlette JSONResponses (compact JSON); streams come from sse-starlette:
  ``text/event-stream; charset=utf-8``, ``Cache-Control: no-cache``, ``X-Accel-Buffering:
  no``, events ``data: <json.dumps(chunk)>\\n\\n`` (default separators), and a comment
  ``: ping - <UTC time>\\r\\n\\r\\n`` every 15 s (``ping_interval``) for as long as the
  response is open.

Concurrency (``get_llama_proxy`` in app.py): two global locks guard the model. Every route
that depends on it -- chat, completions, embeddings, *and* ``GET /v1/models`` -- takes the
outer lock, then the inner one, lets the outer go, and holds the inner until it is done.
So the server answers one such request at a time; the others, a model listing included,
wait in arrival order. A non-streamed answer holds the lock ``gen_delay`` seconds. A
streamed answer sends its 200 and headers at once, then takes the locks in its event
publisher; with ``--interrupt_requests`` on (``interrupt_requests``, the default), after
each chunk it looks whether the outer lock is held -- whether another request is waiting
-- and if so sends ``data: [DONE]`` and stops: the client sees a clean end of stream in
which no chunk carries a finish_reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from ._openai import DONE_FRAME, Generation, JSONDict, OpenAICompatEngine
from ._slots import SlotPool

ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")
NO_EMBEDDING = "Llama model must be created with embedding=True to call this method"


def validation_message(field: str, kind: str, message: str, given: Any) -> str:
    """How ``str()`` of FastAPI's RequestValidationError reads (a list of pydantic errors)."""
    return repr([{"type": kind, "loc": ("body", field), "msg": message, "input": given}])


class FakeLlamaCppPython(OpenAICompatEngine):
    kind: ClassVar[str] = "llamacpp_python"
    default_port: ClassVar[int] = 8000
    owned_by = "me"
    headers_before_slot: ClassVar[bool] = True

    def __init__(
        self,
        *,
        model_path: str = "/models/gemma-3-270m-it-Q4_K_M.gguf",
        alias: str | None = None,
        interrupt_requests: bool = True,
        embedding: bool = False,
        ping_interval: float | None = 15.0,
        **kwargs: Any,
    ) -> None:
        self.model_path = model_path
        self.alias = alias
        self.interrupt_requests = interrupt_requests
        """End a running stream early when another request waits (settable at runtime)."""
        self.embedding = embedding
        self.ping_interval = ping_interval
        """Seconds between sse-starlette's ping comments (None: none)."""
        kwargs.setdefault("models", [alias or model_path])
        super().__init__(**kwargs)
        self._outer = self.new_pool(1)
        self._inner = self.new_pool(1)

    # -- the two locks ------------------------------------------------------------------

    def slot_pools(self) -> list[SlotPool]:
        return [self._inner]

    @property
    def waiting(self) -> int:
        """Requests waiting for the model: the one holding the outer lock, and those in
        line for it."""
        with self._lock:
            return self._outer.running + self._outer.waiting

    @contextlib.asynccontextmanager
    async def llama_proxy(self) -> AsyncIterator[None]:
        """``get_llama_proxy``: outer lock, inner lock, let the outer go, hold the inner."""
        await self._outer.acquire()
        try:
            await self._inner.acquire()
        finally:
            self._outer.release()
        try:
            yield
        finally:
            self._inner.release()

    @contextlib.asynccontextmanager
    async def generation_slot(self, request: web.Request, model: str) -> AsyncIterator[bool]:
        async with self.llama_proxy():
            gone = self.client_gone(request)
            if gone and not self._stopping:
                self._note_cancel()
            yield not gone

    def _interrupt(self) -> Sequence[bytes] | None:
        if self.interrupt_requests and self._outer.running:
            return [DONE_FRAME]
        return None

    async def run_stream(
        self,
        request: web.Request,
        model: str,
        frames: Sequence[bytes],
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        response = await self.open_sse(request, headers or self.sse_headers())
        pinging = asyncio.create_task(self._ping(response), name="llamacpp-python-ping")
        ends_cleanly = False
        try:
            async with self.generation_slot(request, model) as present:
                if present:
                    ends_cleanly = await self.write_sse(
                        request, response, frames, cut_short=self._interrupt
                    )
        finally:
            pinging.cancel()
            await asyncio.wait([pinging])
        if ends_cleanly:
            await self.end_sse(response)
        return response

    async def _ping(self, response: web.StreamResponse) -> None:
        interval = self.ping_interval
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            stamp = datetime.now(UTC).replace(tzinfo=None)
            try:
                await response.write(f": ping - {stamp}\r\n\r\n".encode())
            except ConnectionError:
                return

    # -- app ----------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = self.new_app()
        self.add_openai_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        if request.path in ROUTES:
            return self.json_body({"detail": "Method Not Allowed"}, 405)
        return self.json_body({"detail": "Not Found"}, 404)

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        async with self.llama_proxy():
            return self.json_body(self.models_response())

    async def handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        if self.embedding:
            return await super().handle_embeddings(request)
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        async with self.llama_proxy():
            return self.error_response(request, 500, NO_EMBEDDING)

    def model_entry(self, spec_id: str, created: int) -> JSONDict:
        return {"id": spec_id, "object": "model", "owned_by": "me", "permissions": []}

    def models_response(self) -> JSONDict:
        return {"object": "list", "data": [self.model_entry(m, 0) for m in self.model_ids]}

    # -- requests and errors ------------------------------------------------------------

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }
        return self.json_body(body, 500)

    async def read_json(self, request: web.Request) -> JSONDict | web.Response:
        """The body as the pydantic request model leaves it (defaults filled in)."""
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return web.Response(status=500, text="Internal Server Error")
        if not isinstance(body, dict):
            message = validation_message(
                "", "model_attributes_type", "Input should be a valid dictionary", body
            )
            return self.error_response(request, 500, message)
        problem: str | None = None
        if request.path == "/v1/chat/completions":
            body.setdefault("messages", [])
            if not isinstance(body["messages"], list):
                problem = validation_message(
                    "messages", "list_type", "Input should be a valid list", body["messages"]
                )
        elif request.path == "/v1/completions":
            body.setdefault("prompt", "")
            body.setdefault("max_tokens", 16)
        elif request.path == "/v1/embeddings":
            body.pop("encoding_format", None)
            given = body.get("input")
            if "input" not in body:
                problem = validation_message("input", "missing", "Field required", body)
            elif not (
                isinstance(given, str)
                or (isinstance(given, list) and all(isinstance(x, str) for x in given))
            ):
                problem = validation_message(
                    "input", "string_type", "Input should be a valid string", given
                )
        return body if problem is None else self.error_response(request, 500, problem)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        # LlamaProxy falls back to the default model for any name it does not know.
        return requested if isinstance(requested, str) and requested else self.model_path

    # -- shapes -------------------------------------------------------------------------

    def chat_id(self) -> str:
        return f"chatcmpl-{uuid.uuid4()}"

    def completion_id(self) -> str:
        return f"cmpl-{uuid.uuid4()}"

    def sse_frame(self, obj: Any) -> bytes:
        return f"data: {json.dumps(obj)}\n\n".encode()

    def sse_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "Connection": "keep-alive",
            "X-Accel-Buffering": "no",
        }

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"content": g.text, "role": "assistant"},
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                }
            ],
            "usage": g.usage,
        }

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = {
            "id": cid,
            "model": g.model,
            "created": g.created,
            "object": "chat.completion.chunk",
        }

        def chunk(delta: JSONDict, finish: str | None) -> JSONDict:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        out = [chunk({"role": "assistant"}, None)]
        out += [chunk({"content": p}, None) for p in g.pieces]
        out.append(chunk({}, g.finish_reason))
        return out

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = {"id": cid, "object": "text_completion", "created": g.created, "model": g.model}

        def chunk(text: str, finish: str | None) -> JSONDict:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        return [chunk(p, None) for p in g.pieces] + [chunk("", g.finish_reason)]

    def embeddings_response(
        self, model: str, vectors: list[list[float]] | list[str], prompt_tokens: int
    ) -> JSONDict:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }


LlamaCppPythonEngine = FakeLlamaCppPython
"""The same fake under the name the issue uses."""
