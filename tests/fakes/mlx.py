"""Fake ``mlx_lm.server`` (default port 8080).

Shapes follow ml-explore/mlx-lm ``mlx_lm/server.py`` (APIHandler):
- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created"}]}``
  -- no ``owned_by``; ids are the MLX repos in the Hugging Face cache, plus the resolved
  absolute path of ``--model`` when that is a local directory; ``/v1/models/<repo>``
  filters the same list;
- ``GET /health``: ``{"status": "ok"}``; other paths: 404 with body ``Not Found`` (yet
  ``Content-type: application/json``); every answer has ``Access-Control-Allow-*: *``;
- chat: id ``chatcmpl-<uuid4>``, ``model`` echoes the request (``default_model`` when
  absent), ``system_fingerprint`` is ``<mlx_lm>-<mlx>-<platform>-<gpu>``, message/delta is
  ``{"role": "assistant", "content", "reasoning", "tool_calls": []}``; every stream chunk
  has the role; the last chunk has ``content: ""`` + finish_reason; the include_usage chunk
  has ``"object": "chat.completion"`` (sic) and ``choices: []``; JSON uses Python's default
  separators (``", "``, ``": "``);
- failures while loading/generating: 500 ``{"error": "<message>"}``. No embeddings endpoint.

Capacity: one generation at a time, the others wait in arrival order (``concurrency``).
That is mlx_lm >= 0.29 with a model it cannot batch or ``--decode-concurrency 1``; with
a batchable model those versions decode up to 32 at once. mlx_lm <= 0.28 ran a
single-threaded ``http.server.HTTPServer``: it answered one *request* at a time, so even
``/v1/models`` and ``/health`` waited for a running generation -- ``single_threaded=True``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from ._core import Handler
from ._openai import Generation, JSONDict, OpenAICompatEngine
from ._slots import SlotPool

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "*",
    "Access-Control-Allow-Headers": "*",
}


class FakeMLX(OpenAICompatEngine):
    kind: ClassVar[str] = "mlx"
    default_port: ClassVar[int] = 8080
    default_models: ClassVar[tuple[str, ...]] = ("mlx-community/Llama-3.2-1B-Instruct-4bit",)

    def __init__(
        self,
        *,
        system_fingerprint: str = "0.28.0-0.29.1-macOS-15.6-arm64-arm-64bit-applegpu_g15s",
        concurrency: int = 1,
        single_threaded: bool = False,
        **kwargs: Any,
    ) -> None:
        self.system_fingerprint = system_fingerprint
        self.created = int(time.time())
        super().__init__(**kwargs)
        self._generations = self.new_pool(concurrency)
        self.single_threaded = single_threaded
        """Answer one request of any kind at a time (mlx_lm <= 0.28's HTTPServer)."""
        self._server = self.new_pool(1)

    def pool_for(self, model: str) -> SlotPool:
        return self._generations

    def slot_pools(self) -> list[SlotPool]:
        return [self._generations]

    async def _apply_mode(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.single_threaded:
            return await super()._apply_mode(request, handler)
        async with self._server.slot():
            return await super()._apply_mode(request, handler)

    @property
    def waiting(self) -> int:
        """Generations waiting for their turn, plus (single-threaded) requests waiting for
        the server to take them."""
        return super().waiting + self._server.waiting

    def build_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/v1/models/{repo:.+}", self.handle_models)
        for path in ("/v1/chat/completions", "/chat/completions"):
            app.router.add_post(path, self.handle_chat)
        app.router.add_post("/v1/completions", self.handle_completions)
        app.router.add_route("OPTIONS", "/{tail:.*}", self.handle_options)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    def dumps(self, obj: Any) -> str:
        return json.dumps(obj)

    def json_body(self, data: Any, status: int = 200) -> web.Response:
        return self.json_response(data, status, dumps=json.dumps, headers=CORS)

    def sse_headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **CORS}

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        return self.json_body({"status": "ok"})

    async def handle_options(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"Content-Type": "application/json", **CORS})

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=404, body=b"Not Found", headers={"Content-Type": "application/json", **CORS}
        )

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        wanted = request.match_info.get("repo")
        data = [
            {"id": m, "object": "model", "created": self.created}
            for m in self.model_ids
            if wanted is None or m == wanted
        ]
        return self.json_body({"object": "list", "data": data})

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.json_body({"error": message}, status)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        if requested is None or requested == "default_model":
            return "default_model"
        if not isinstance(requested, str):
            return self.error_response(request, 400, "model must be a string")
        if self.find_model(requested) is None:
            # mlx_lm would try to download it from the Hugging Face hub and fail.
            message = (
                f"404 Client Error. Repository Not Found for url: "
                f"https://huggingface.co/api/models/{requested}/revision/main."
            )
            return self.error_response(request, 500, message)
        return requested

    def on_generation(self, model: str) -> None:
        ids = self.model_ids
        self.load(ids[0] if model == "default_model" and ids else model)

    def chat_id(self) -> str:
        return f"chatcmpl-{uuid.uuid4()}"

    def completion_id(self) -> str:
        return f"cmpl-{uuid.uuid4()}"

    def _response(
        self, g: Generation, cid: str, obj: str, choice: JSONDict, *, usage: bool
    ) -> JSONDict:
        out: JSONDict = {
            "id": cid,
            "system_fingerprint": self.system_fingerprint,
            "object": obj,
            "model": g.model,
            "created": g.created,
            "choices": [choice],
        }
        if usage:
            out["usage"] = g.usage
        return out

    def _usage_chunk(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "system_fingerprint": self.system_fingerprint,
            "object": "chat.completion",
            "model": g.model,
            "created": g.created,
            "choices": [],
            "usage": g.usage,
        }

    @staticmethod
    def _message(text: str) -> JSONDict:
        return {"role": "assistant", "content": text, "reasoning": "", "tool_calls": []}

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        choice = {"index": 0, "finish_reason": g.finish_reason, "message": self._message(g.text)}
        return self._response(g, cid, "chat.completion", choice, usage=True)

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        obj = "chat.completion.chunk"
        out = [
            self._response(
                g,
                cid,
                obj,
                {"index": 0, "finish_reason": None, "delta": self._message(p)},
                usage=False,
            )
            for p in g.pieces
        ]
        last = {"index": 0, "finish_reason": g.finish_reason, "delta": self._message("")}
        out.append(self._response(g, cid, obj, last, usage=False))
        if g.include_usage:
            out.append(self._usage_chunk(g, cid))
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        choice = {"index": 0, "finish_reason": g.finish_reason, "text": g.text}
        return self._response(g, cid, "text_completion", choice, usage=True)

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        out = [
            self._response(
                g,
                cid,
                "text_completion",
                {"index": 0, "finish_reason": None, "text": p},
                usage=False,
            )
            for p in g.pieces
        ]
        last = {"index": 0, "finish_reason": g.finish_reason, "text": ""}
        out.append(self._response(g, cid, "text_completion", last, usage=False))
        if g.include_usage:
            out.append(self._usage_chunk(g, cid))
        return out
