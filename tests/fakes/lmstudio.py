"""Fake LM Studio server (default port 1234).

Shapes follow LM Studio's docs (lmstudio.ai/docs, REST API v0 "endpoints" page, LM Studio
>= 0.3.6) and captures in lmstudio-ai/lmstudio-bug-tracker issues:
- ``/v1/models``: ``{"data": [{"id", "object": "model", "owned_by": "organization_owner"}],
  "object": "list"}`` -- ids only, no state; with JIT loading on (the default) it lists every
  downloaded model, with JIT off only the loaded ones;
- ``/api/v0/models``: ``{"object": "list", "data": [{id, object: "model", type:
  "llm"|"vlm"|"embeddings", publisher, arch, compatibility_type, quantization, state:
  "loaded"|"not-loaded", max_context_length}]}`` (+ ``loaded_context_length`` when loaded);
- chat: ids ``chatcmpl-`` + 20 lowercase alphanumerics, ``system_fingerprint`` is the model
  id, non-streamed bodies carry ``"stats": {}``; every chunk's delta has ``role`` and the
  finish chunk has ``delta: {}`` (issue #676 capture);
- unknown model: 404 ``{"error": {"message": "Model \\"x\\" not found. Please specify a valid
  model.\\n\\nYour models:\\n\\n...", "type": "invalid_request_error", "param": "model",
  "code": "model_not_found"}}`` -- except that with exactly one model loaded LM Studio
  ignores the requested name and answers with that model (issue #619, 0.3.14);
  ``single_loaded_quirk=False`` turns that off;
- unknown endpoint: **200** ``{"error": "Unexpected endpoint or method. (GET /x)"}`` (Express,
  issue #618). Bodies for other errors (500) are not documented; OpenAI's shape is used.

Capacity: a loaded model makes one prediction at a time and queues the others in arrival
order, never refusing them (LM Studio 0.3.x; 0.4 added "Max Concurrent Predictions", 4 by
default for llama.cpp models -- ``max_concurrent_predictions``). Embeddings queue on their
embedding model the same way. Listing routes never wait.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from ._openai import Generation, JSONDict, OpenAICompatEngine, random_alnum
from ._slots import SlotPool

EXPRESS_JSON = "application/json; charset=utf-8"


class FakeLMStudio(OpenAICompatEngine):
    kind: ClassVar[str] = "lmstudio"
    default_port: ClassVar[int] = 1234
    default_models: ClassVar[tuple[str, ...]] = ("qwen2.5-0.5b-instruct",)
    owned_by = "organization_owner"

    def __init__(
        self,
        *,
        jit: bool = True,
        single_loaded_quirk: bool = True,
        max_concurrent_predictions: int = 1,
        **kwargs: Any,
    ) -> None:
        self.jit = jit
        self.single_loaded_quirk = single_loaded_quirk
        self.max_concurrent_predictions = max_concurrent_predictions
        """Predictions each loaded model makes at once; the rest wait."""
        self._pools: dict[str, SlotPool] = {}
        super().__init__(**kwargs)

    def pool_for(self, model: str) -> SlotPool:
        with self._lock:
            pool = self._pools.get(model)
            if pool is None:
                pool = self._pools[model] = self.new_pool(self.max_concurrent_predictions)
            return pool

    def slot_pools(self) -> list[SlotPool]:
        with self._lock:
            return list(self._pools.values())

    def build_app(self) -> web.Application:
        app = self.new_app()
        self.add_openai_routes(app)
        app.router.add_get("/api/v0/models", self.handle_v0_models)
        app.router.add_get("/api/v0/models/{model:.+}", self.handle_v0_model)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    def json_body(self, data: Any, status: int = 200) -> web.Response:
        return self.json_response(
            data, status, content_type=EXPRESS_JSON, headers={"X-Powered-By": "Express"}
        )

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        target = request.rel_url.raw_path_qs
        return self.json_body(
            {"error": f"Unexpected endpoint or method. ({request.method} {target})"}
        )

    # -- models -------------------------------------------------------------------------

    def models_response(self) -> JSONDict:
        loaded = self.loaded
        ids = [m for m in self.model_ids if self.jit or m in loaded]
        return {
            "data": [{"id": m, "object": "model", "owned_by": self.owned_by} for m in ids],
            "object": "list",
        }

    def _v0_entry(self, model_id: str) -> JSONDict | None:
        spec = self.find_model(model_id)
        if spec is None:
            return None
        entry: JSONDict = {
            "id": spec.id,
            "object": "model",
            "type": spec.type,
            "publisher": spec.publisher,
            "arch": spec.arch,
            "compatibility_type": spec.format,
            "quantization": spec.quantization,
            "state": "loaded" if spec.id in self.loaded else "not-loaded",
            "max_context_length": spec.max_context_length,
        }
        if entry["state"] == "loaded":
            entry["loaded_context_length"] = spec.context_length
        return entry

    async def handle_v0_models(self, request: web.Request) -> web.StreamResponse:
        entries = [self._v0_entry(m) for m in self.model_ids]
        return self.json_body({"object": "list", "data": [e for e in entries if e is not None]})

    async def handle_v0_model(self, request: web.Request) -> web.StreamResponse:
        entry = self._v0_entry(request.match_info["model"])
        if entry is None:  # not documented; the same body as /v1's unknown model
            return self.model_not_found(request, request.match_info["model"])
        return self.json_body(entry)

    # -- errors and model matching ------------------------------------------------------

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return self.json_body(body, status)

    def model_not_found(self, request: web.Request, model: str) -> web.Response:
        listed = "\n".join(self.model_ids)
        message = (
            f'Model "{model}" not found. Please specify a valid model.\n\nYour models:\n\n{listed}'
        )
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        return self.json_body(body, 404)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        loaded = sorted(self.loaded)
        name = requested if isinstance(requested, str) else ""
        spec = self.find_model(name) if name else None
        if spec is not None and (self.jit or spec.id in loaded):
            return spec.id  # JIT loads it if needed (on_generation)
        if self.single_loaded_quirk and len(loaded) == 1:
            return loaded[0]
        return self.model_not_found(request, name)

    # -- shapes -------------------------------------------------------------------------

    def chat_id(self) -> str:
        return f"chatcmpl-{random_alnum(20)}"

    def completion_id(self) -> str:
        return f"cmpl-{random_alnum(20)}"

    def sse_headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                    "message": {"role": "assistant", "content": g.text},
                }
            ],
            "usage": g.usage,
            "stats": {},
            "system_fingerprint": g.model,
        }

    def chunk_base(self, g: Generation, cid: str) -> JSONDict:
        return {**super().chunk_base(g, cid), "system_fingerprint": g.model}

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = self.chunk_base(g, cid)
        out = [
            {**base, "choices": [self.chat_choice({"role": "assistant", "content": p}, None)]}
            for p in g.pieces
        ]
        out.append({**base, "choices": [self.chat_choice({}, g.finish_reason)]})
        if g.include_usage:
            out.append({**base, "choices": [], "usage": g.usage})
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            **super().completion_response(g, cid),
            "stats": {},
            "system_fingerprint": g.model,
        }
