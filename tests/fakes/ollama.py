"""Fake Ollama (default port 11434).

Shapes follow ollama/ollama:
- ``api/types.go`` (ListModelResponse, ProcessModelResponse incl. ``context_length``) and
  ``docs/api.md`` examples for ``/api/tags``, ``/api/ps``, ``/api/version``;
- ``openai/openai.go`` + ``middleware/openai.go`` for ``/v1``: ids ``chatcmpl-<0..998>`` /
  ``cmpl-<n>``, ``system_fingerprint: "fp_ollama"``, every chunk's delta carries
  ``role: "assistant"``, the last chunk has ``content: ""`` and the finish_reason, and with
  ``stream_options.include_usage`` a copy of it with ``choices: []`` + ``usage`` follows;
  ``/v1/models`` owner is the name's namespace (``library``) and ``data`` is ``null`` when
  no model is pulled (Go nil slice);
- ``server/routes.go`` handleScheduleError: unknown model -> 404
  ``model "x" not found, try pulling it first``, wrapped on ``/v1`` as
  ``{"error": {"message", "type": "api_error", "param": null, "code": null}}`` (as reported
  by users of Ollama 0.3-0.11; newer builds say ``"type": "not_found_error"``).
Unknown paths get gin's ``404 page not found`` (text/plain). The native generation API
(``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``) is in
``_ollama_native``.

Capacity (``server/sched.go``, ``envconfig``, docs/faq.md "How does Ollama handle
concurrent requests?"): each loaded model works on ``OLLAMA_NUM_PARALLEL`` requests at once
(``num_parallel``; 1 by default in current builds -- older ones picked 4 or 1 by free
memory), the rest of the requests, for any model, queue in arrival order up to
``OLLAMA_MAX_QUEUE`` (``max_queue``, 512); one more is refused at once with 503
``server busy, please try again.  maximum pending requests exceeded`` (``ErrMaxQueue``,
two spaces; ``{"error": "..."}`` natively, wrapped in the OpenAI shape on ``/v1``).
Embeddings wait for a slot like generations. A streamed answer sends its headers with its
first chunk, so a queued stream has not answered yet. (In the real scheduler the bound
applies to requests the scheduler has not handed a runner yet; with the model loaded those
are few, so the fake counts every waiting request -- what the FAQ describes.)
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web

from ._core import ModelSpec, iso_now
from ._ollama_native import add_native_routes
from ._openai import Generation, JSONDict, OpenAICompatEngine
from ._slots import SlotPool

GIN_JSON = "application/json; charset=utf-8"
SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"


def ollama_namespace(name: str) -> str:
    """model.ParseName(name).Namespace: ``library`` for plain names."""
    parts = name.split("/")
    return "library" if len(parts) == 1 else parts[-2]


class FakeOllama(OpenAICompatEngine):
    kind: ClassVar[str] = "ollama"
    default_port: ClassVar[int] = 11434
    default_models: ClassVar[tuple[str, ...]] = ("llama3.2:1b",)

    def __init__(
        self,
        *,
        version: str = "0.9.6",
        keep_alive: float = 300.0,
        num_parallel: int = 1,
        max_queue: int = 512,
        **kwargs: Any,
    ) -> None:
        self.version = version
        self.keep_alive = keep_alive
        self.num_parallel = num_parallel
        """``OLLAMA_NUM_PARALLEL``: requests each model works on at once."""
        self.max_queue = max_queue
        """``OLLAMA_MAX_QUEUE``: requests that may wait; one more is refused with 503."""
        self._pools: dict[str, SlotPool] = {}
        super().__init__(**kwargs)

    # -- capacity -----------------------------------------------------------------------

    def pool_for(self, model: str) -> SlotPool:
        key = self.normalize_model_id(model)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self.new_pool(self.num_parallel)
            return pool

    def slot_pools(self) -> list[SlotPool]:
        with self._lock:
            return list(self._pools.values())

    def processing_for(self, model: str) -> int:
        return self.pool_for(model).running

    def refuse(self, request: web.Request, model: str) -> web.Response | None:
        if self.pool_for(model).free or self.waiting < self.max_queue:
            return None
        return self.error_response(request, 503, SERVER_BUSY)

    def normalize_model_id(self, model_id: str) -> str:
        """``llama3.2`` -> ``llama3.2:latest`` (Ollama's default tag)."""
        return model_id if ":" in model_id.rsplit("/", 1)[-1] else f"{model_id}:latest"

    # -- app ----------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/", self.handle_root)
        app.router.add_get("/api/version", self.handle_version)
        app.router.add_get("/api/tags", self.handle_tags)
        app.router.add_get("/api/ps", self.handle_ps)
        add_native_routes(self, app)
        self.add_openai_routes(app)
        app.router.add_get("/v1/models/{model:.+}", self.handle_retrieve)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    async def handle_root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Ollama is running", content_type="text/plain", charset="utf-8")

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="404 page not found", content_type="text/plain")

    async def handle_version(self, request: web.Request) -> web.StreamResponse:
        return self.json_response({"version": self.version}, content_type=GIN_JSON)

    @staticmethod
    def _details(m: ModelSpec) -> JSONDict:
        return {
            "parent_model": "",
            "format": m.format,
            "family": m.family,
            "families": [m.family],
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization,
        }

    async def handle_tags(self, request: web.Request) -> web.StreamResponse:
        models = [
            {
                "name": m.id,
                "model": m.id,
                "modified_at": m.modified_at,
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
            }
            for m in self.models
        ]
        return self.json_response({"models": models}, content_type=GIN_JSON)

    async def handle_ps(self, request: web.Request) -> web.StreamResponse:
        loaded = self.loaded
        models = [
            {
                "name": m.id,
                "model": m.id,
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
                "expires_at": iso_now(self.keep_alive),
                "size_vram": m.size,
                "context_length": m.context_length,
            }
            for m in self.models
            if m.id in loaded
        ]
        return self.json_response({"models": models}, content_type=GIN_JSON)

    # -- /v1 ----------------------------------------------------------------------------

    @staticmethod
    def _created(m: ModelSpec) -> int:
        return int(datetime.fromisoformat(m.modified_at).timestamp())

    def models_response(self) -> JSONDict:
        data = [
            {
                "id": m.id,
                "object": "model",
                "created": self._created(m),
                "owned_by": ollama_namespace(m.id),
            }
            for m in self.models
        ]
        return {"object": "list", "data": data or None}

    async def handle_retrieve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        spec = self.find_model(name)
        if spec is None:
            return self.error_response(request, 404, f"model {json.dumps(name)} not found")
        return self.json_body(
            {
                "id": name,
                "object": "model",
                "created": self._created(spec),
                "owned_by": ollama_namespace(name),
            }
        )

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        if not request.path.startswith("/v1/"):
            return self.json_response({"error": message}, status, content_type=GIN_JSON)
        kind = "invalid_request_error" if status == 400 else "api_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return self.json_body(body, status)

    def model_not_found(self, request: web.Request, model: str) -> web.Response:
        message = f"model {json.dumps(model)} not found, try pulling it first"
        return self.error_response(request, 404, message)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        if not isinstance(requested, str) or not requested:
            return self.error_response(request, 400, "model is required")
        if self.find_model(requested) is None:
            return self.model_not_found(request, requested)
        return requested  # Ollama echoes the name as the client spelled it

    def chat_id(self) -> str:
        return f"chatcmpl-{random.randint(0, 998)}"

    def completion_id(self) -> str:
        return f"cmpl-{random.randint(0, 998)}"

    def sse_headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream"}

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": g.text},
                    "finish_reason": g.finish_reason,
                }
            ],
            "usage": g.usage,
        }

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": g.created,
            "model": g.model,
            "system_fingerprint": "fp_ollama",
        }

        def choice(text: str, finish: str | None) -> JSONDict:
            delta = {"role": "assistant", "content": text}
            return {"index": 0, "delta": delta, "finish_reason": finish}

        out = [{**base, "choices": [choice(p, None)]} for p in g.pieces]
        final = {**base, "choices": [choice("", g.finish_reason)]}
        out.append(final)
        if g.include_usage:
            out.append({**final, "choices": [], "usage": g.usage})
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "text_completion",
            "created": g.created,
            "model": g.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": g.text, "index": 0, "finish_reason": g.finish_reason}],
            "usage": g.usage,
        }

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        def chunk(text: str, finish: str | None) -> JSONDict:
            return {
                "id": cid,
                "object": "text_completion",
                "created": g.created,
                "choices": [{"text": text, "index": 0, "finish_reason": finish}],
                "model": g.model,
                "system_fingerprint": "fp_ollama",
            }

        out = [chunk(p, None) for p in g.pieces]
        final = chunk("", g.finish_reason)
        out.append(final)
        if g.include_usage:
            out.append({**final, "choices": [], "usage": g.usage})
        return out

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
