"""Fake llama.cpp ``llama-server`` (single-model mode, default port 8080).

Shapes follow ggml-org/llama.cpp ``tools/server`` (server.cpp / server-context.cpp, README):
- ``/v1/models`` and ``/models`` answer one body carrying *both* conventions: an
  Ollama-style ``models: [{name, model, modified_at: "", size: "", digest: "", type,
  description, tags: [""], capabilities, parameters, details}]`` and OpenAI-style
  ``object: "list", data: [{id, aliases, tags, object: "model", created, owned_by:
  "llamacpp", meta: {vocab_type, n_vocab, n_ctx, n_ctx_train, n_embd, n_params, size}}]``.
  The id is the ``-m`` model *path* unless ``--alias`` is given (README: "By default, model
  `id` field is the path to model file");
- the request's ``model`` is not checked (one model is served whatever is asked);
- errors ``{"error": {"code", "message", "type"}}`` (``server_error``, ``not_found_error``,
  ``invalid_request_error``, ``unavailable_error``); unknown paths 404 ``File Not Found``;
  while loading, every route answers 503 ``Loading model``;
- ``/apply-template`` renders ``messages`` with the model's template (``{"prompt"}``) and
  ``/tokenize`` turns ``content`` into token ids (``add_special``, ``parse_special``,
  ``with_pieces``), as the server's own routes do;
- ``/health`` ``{"status": "ok"}``; ``/props`` default_generation_settings, total_slots,
  model_alias, model_path, modalities, chat_template, build_info;
- capacity: ``--parallel`` slots (``total_slots``; ``-np -1``, the default of recent
  builds, makes 4). A completion, chat or embedding task takes a free slot; the rest are
  *deferred* and start in arrival order as slots free up, never refused. A streamed
  answer sends its headers only once its task runs (the server waits for the first
  result). ``/slots`` (on by default, ``--no-slots``: 501) lists each slot's
  ``is_processing``; ``/slots?fail_on_no_slot=1`` is 503 when none is idle; ``/metrics``
  (only with ``--metrics``, else 501) has the ``llamacpp:requests_processing`` and
  ``llamacpp:requests_deferred`` gauges;
- chat stream: first chunk ``delta {"role": "assistant", "content": null}``, content
  chunks, a finish chunk ``delta {}`` carrying ``timings``, then (include_usage) a usage
  chunk with ``choices: []``; ids are ``chatcmpl-`` + 32 random alphanumerics and
  ``system_fingerprint`` is the build (e.g. ``b6000-1a2b3c4d``).
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from aiohttp import web

from ._core import Handler, ModelSpec
from ._openai import (
    MIXED_ALNUM,
    Generation,
    JSONDict,
    OpenAICompatEngine,
    content_text,
    random_alnum,
)
from ._slots import SlotPool

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
LLAMA_JSON = "application/json; charset=utf-8"
SPECIAL = re.compile(r"<start_of_turn>|<end_of_turn>|[^\s<]+|<")  # special tokens, words
WORD = re.compile(r"\S+")


class FakeLlamaCpp(OpenAICompatEngine):
    kind: ClassVar[str] = "llamacpp"
    default_port: ClassVar[int] = 8080

    def __init__(
        self,
        *,
        model_path: str = "/models/gemma-3-270m-Q4_K_M.gguf",
        alias: str | None = None,
        n_ctx: int = 4096,
        total_slots: int = 4,
        slots_endpoint: bool = True,
        metrics: bool = False,
        build: str = "b6000-1a2b3c4d",
        multimodal: bool = False,
        loading: bool = False,
        **kwargs: Any,
    ) -> None:
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.slots_endpoint = slots_endpoint
        self.metrics = metrics
        self.build = build
        self.multimodal = multimodal
        self.loading = loading
        """While True every route answers 503 ``Loading model`` (settable at runtime)."""
        kwargs.setdefault("models", [ModelSpec(id=alias or model_path, family="gemma3")])
        super().__init__(**kwargs)
        self._slots = self.new_pool(total_slots)

    @property
    def total_slots(self) -> int:
        """``--parallel``: tasks processed at once; the rest are deferred."""
        return self._slots.size or 0

    def pool_for(self, model: str) -> SlotPool:
        return self._slots

    def slot_pools(self) -> list[SlotPool]:
        return [self._slots]

    @property
    def model_name(self) -> str:
        ids = self.model_ids
        return ids[0] if ids else (self.alias or self.model_path)

    def build_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/props", self.handle_props)
        app.router.add_get("/slots", self.handle_slots)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/models", self.handle_models)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.handle_chat)
            app.router.add_post(f"{prefix}/completions", self.handle_completions)
            app.router.add_post(f"{prefix}/embeddings", self.handle_embeddings)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/apply-template", self.handle_apply_template)
        app.router.add_post("/tokenize", self.handle_tokenize)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    async def handle_apply_template(self, request: web.Request) -> web.StreamResponse:
        """``POST /apply-template``: the chat's ``messages`` through the model's template
        (Gemma's turns), ending with the generation prompt: ``{"prompt"}``."""
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error_response(request, 400, "'messages' is required")
        turns = []
        for m in messages:
            if not isinstance(m, dict):
                return self.error_response(request, 400, "each message must be an object")
            role = {"assistant": "model"}.get(str(m.get("role")), str(m.get("role")))
            turns.append(f"<start_of_turn>{role}\n{content_text(m.get('content'))}<end_of_turn>\n")
        return self.json_body({"prompt": "".join(turns) + "<start_of_turn>model\n"})

    async def handle_tokenize(self, request: web.Request) -> web.StreamResponse:
        """``POST /tokenize``: ``content`` to token ids; ``add_special`` (default false)
        puts the BOS first, ``parse_special`` (default true) reads ``<start_of_turn>`` and
        ``<end_of_turn>`` as one token each, ``with_pieces`` gives ``{id, piece}``s. The
        fake's other tokens are words."""
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        content = body.get("content")
        if not isinstance(content, str):
            return self.error_response(request, 400, "'content' must be a string")
        special = body.get("parse_special", True) is not False
        pieces = (SPECIAL if special else WORD).findall(content)
        if body.get("add_special") is True:
            pieces.insert(0, "<bos>")
        ids = [2 if p == "<bos>" else 100 + len(p) for p in pieces]
        if body.get("with_pieces") is True:
            pairs = zip(ids, pieces, strict=True)
            return self.json_body({"tokens": [{"id": i, "piece": p} for i, p in pairs]})
        return self.json_body({"tokens": ids})

    async def _apply_mode(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.loading:
            return self.error_response(request, 503, "Loading model")
        return await super()._apply_mode(request, handler)

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        return self.json_body({"status": "ok"})

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return self.error_response(request, 404, "File Not Found")

    async def handle_props(self, request: web.Request) -> web.StreamResponse:
        params = {
            "n_predict": -1,
            "seed": 4294967295,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "min_p": 0.05,
            "max_tokens": -1,
            "stream": True,
        }
        return self.json_body(
            {
                "default_generation_settings": {
                    "id": 0,
                    "id_task": -1,
                    "n_ctx": self.n_ctx,
                    "speculative": False,
                    "is_processing": self.processing > 0,
                    "params": params,
                },
                "total_slots": self.total_slots,
                "model_alias": self.alias or self.model_path,
                "model_path": self.model_path,
                "modalities": {"vision": self.multimodal, "audio": False},
                "chat_template": "{% for message in messages %}{{ message['content'] }}"
                "{% endfor %}",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "build_info": self.build,
            }
        )

    async def handle_slots(self, request: web.Request) -> web.StreamResponse:
        if not self.slots_endpoint:
            message = "This server does not support slots endpoint. Start it with `--slots`"
            return self.error_response(request, 501, message)
        busy = self.processing
        if request.query.get("fail_on_no_slot") and busy >= self.total_slots:
            return self.error_response(request, 503, "no slot available")
        slots = [
            {
                "id": index,
                "id_task": index if index < busy else -1,
                "n_ctx": self.n_ctx,
                "speculative": False,
                "is_processing": index < busy,
            }
            for index in range(self.total_slots)
        ]
        return self.json_body(slots)

    async def handle_metrics(self, request: web.Request) -> web.StreamResponse:
        if not self.metrics:
            message = "This server does not support metrics endpoint. Start it with `--metrics`"
            return self.error_response(request, 501, message)
        gauges = (
            ("requests_processing", "Number of requests processing.", self.processing),
            ("requests_deferred", "Number of requests deferred.", self.waiting),
        )
        text = "".join(
            f"# HELP llamacpp:{name} {help_text}\n"
            f"# TYPE llamacpp:{name} gauge\n"
            f"llamacpp:{name} {value}\n"
            for name, help_text, value in gauges
        )
        return web.Response(
            body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    def json_body(self, data: Any, status: int = 200) -> web.Response:
        return self.json_response(data, status, content_type=LLAMA_JSON)

    def models_response(self) -> JSONDict:
        name = self.model_name
        spec = self.find_model(name) or ModelSpec(id=name)
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion", "multimodal"]
                    if self.multimodal
                    else ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
            "object": "list",
            "data": [
                {
                    "id": name,
                    "aliases": [self.alias] if self.alias else [],
                    "tags": [],
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 2,
                        "n_vocab": 262144,
                        "n_ctx": self.n_ctx,
                        "n_ctx_train": spec.max_context_length,
                        "n_embd": 640,
                        "n_params": 268_098_176,
                        "size": spec.size,
                    },
                }
            ],
        }

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        kind = ERROR_TYPES.get(status, "server_error")
        return self.json_body({"error": {"code": status, "message": message, "type": kind}}, status)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        # Single-model mode: the requested name is echoed back but never checked.
        return requested if isinstance(requested, str) and requested else self.model_name

    def chat_id(self) -> str:
        return f"chatcmpl-{random_alnum(32, MIXED_ALNUM)}"

    def completion_id(self) -> str:
        return self.chat_id()

    def sse_headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream"}

    @staticmethod
    def timings(g: Generation) -> JSONDict:
        prompt_ms = 2.5 * max(1, g.prompt_tokens)
        predicted_ms = 12.5 * max(1, g.completion_tokens)
        return {
            "cache_n": 0,
            "prompt_n": g.prompt_tokens,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": 2.5,
            "prompt_per_second": 400.0,
            "predicted_n": g.completion_tokens,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": 12.5,
            "predicted_per_second": 80.0,
        }

    def _wrap(self, g: Generation, cid: str, choices: list[JSONDict], obj: str) -> JSONDict:
        return {
            "choices": choices,
            "created": g.created,
            "id": cid,
            "model": g.model,
            "system_fingerprint": self.build,
            "object": obj,
        }

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        choice = {
            "finish_reason": g.finish_reason,
            "index": 0,
            "message": {"role": "assistant", "content": g.text},
        }
        return {
            **self._wrap(g, cid, [choice], "chat.completion"),
            "usage": {
                "completion_tokens": g.completion_tokens,
                "prompt_tokens": g.prompt_tokens,
                "total_tokens": g.prompt_tokens + g.completion_tokens,
            },
            "timings": self.timings(g),
        }

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        obj = "chat.completion.chunk"

        def choice(delta: JSONDict, finish: str | None) -> list[JSONDict]:
            return [{"finish_reason": finish, "index": 0, "delta": delta}]

        out = [self._wrap(g, cid, choice({"role": "assistant", "content": None}, None), obj)]
        out += [self._wrap(g, cid, choice({"content": p}, None), obj) for p in g.pieces]
        finish = self._wrap(g, cid, choice({}, g.finish_reason), obj)
        out.append({**finish, "timings": self.timings(g)})
        if g.include_usage:
            usage = {**self._wrap(g, cid, [], obj), "usage": g.usage}
            out.append({**usage, "timings": self.timings(g)})
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        choice = {"text": g.text, "index": 0, "logprobs": None, "finish_reason": g.finish_reason}
        return {
            **self._wrap(g, cid, [choice], "text_completion"),
            "usage": {
                "completion_tokens": g.completion_tokens,
                "prompt_tokens": g.prompt_tokens,
                "total_tokens": g.prompt_tokens + g.completion_tokens,
            },
            "timings": self.timings(g),
        }

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        def choice(text: str, finish: str | None) -> list[JSONDict]:
            return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

        out = [self._wrap(g, cid, choice(p, None), "text_completion") for p in g.pieces]
        final = self._wrap(g, cid, choice("", g.finish_reason), "text_completion")
        out.append({**final, "timings": self.timings(g)})
        if g.include_usage:
            out.append({**self._wrap(g, cid, [], "text_completion"), "usage": g.usage})
        return out

    def embeddings_response(
        self, model: str, vectors: list[list[float]] | list[str], prompt_tokens: int
    ) -> JSONDict:
        return {
            "model": model,
            "object": "list",
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            "data": [
                {"embedding": v, "index": i, "object": "embedding"} for i, v in enumerate(vectors)
            ],
        }
