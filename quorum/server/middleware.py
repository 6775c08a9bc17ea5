"""Errors in the caller's API shape, bodies the node refuses unread, and who may call it."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from quorum.api.body import check_content_encoding
from quorum.api.endpoints import Dialect, dialect
from quorum.api.errors import error_body, framework_error
from quorum.errors import ApiError, Forbidden, Unauthorized
from quorum.keys import looks_like_key
from quorum.secure import peer_node_id
from quorum.server import origin
from quorum.server.context import ATTEMPTS, CALLER, CONTEXT, KEY_INFO, Caller

log = logging.getLogger("quorum.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths anyone may read: liveness for supervisors and load balancers.
OPEN_PATHS = frozenset({"/healthz"})


def error_response(err: ApiError, shape: Dialect = Dialect.OPENAI) -> web.Response:
    return web.json_response(error_body(err, shape), status=err.status, headers=err.headers())


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client sees has its API's shape (``quorum.api.errors``): OpenAI's
    ``{"error": {"message", "type", "param", "code"}}`` on ``/v1``, Anthropic's on
    ``/v1/messages``, Ollama's on ``/api``. A compressed body is refused before it is read.
    """
    try:
        check_content_encoding(request.headers.getall("Content-Encoding", ()))
        return await handler(request)
    except ApiError as err:
        response = error_response(err, dialect(request.path))
        attempts = request.get(ATTEMPTS)
        if attempts:
            response.headers["X-Quorum-Attempts"] = str(attempts)
        return response
    except web.HTTPException as exc:
        refusal = framework_error(
            exc.status,
            request.method,
            request.path,
            allowed=exc.allowed_methods if isinstance(exc, web.HTTPMethodNotAllowed) else (),
            detail=exc.text or "",
        )
        if refusal is None:
            raise
        return error_response(refusal, dialect(request.path))


@functools.lru_cache(maxsize=1024)
def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return remote == "unix"


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is calling (``CALLER``): a peer node, this machine (loopback, through a browser
    only with this machine's Host and no foreign origin), or an app with an API key.
    Anyone else gets 401.

    A peer proved membership in the TLS handshake: its client certificate chains to
    the cluster CA (``netguard`` verified it; the transport's ``ssl_object`` has it).
    The cluster token as a bearer counts only on loopback (the relay tunnel's
    forwarder on this machine): it never travels the LAN.
    """
    ctx = request.app[CONTEXT]
    if request.path in OPEN_PATHS:
        return await handler(request)
    transport = request.transport
    if transport is not None and peer_node_id(transport.get_extra_info("ssl_object")):
        request[CALLER] = Caller.PEER
        return await handler(request)
    node = ctx.config.node
    # Anthropic's SDKs send their key as x-api-key; everyone else as a bearer token.
    presented = bearer(request.headers.get("Authorization")) or request.headers.get("x-api-key")
    token = ctx.config.cluster.token
    local = is_loopback(request.remote)
    if presented and token and local and hmac.compare_digest(presented.encode(), token.encode()):
        request[CALLER] = Caller.PEER
        return await handler(request)
    if node.loopback_trusted and local:
        origin_header = request.headers.get("Origin")
        why = origin.refusal(
            request.headers.get("Host"),
            origin_header,
            request.headers.get("Sec-Fetch-Site"),
            ctx.bind,
            node.allowed_origins,
        )
        if why is not None:
            raise Forbidden(why, code="origin_not_allowed")
        request[CALLER] = Caller.LOCAL
        if origin_header is None:
            return await handler(request)
        return await _cors(request, handler, origin_header)
    if presented and looks_like_key(presented):
        if ctx.keys is None:
            raise Unauthorized("This node has no relay to check API keys with.")
        # Unknown, revoked or expired: 401; relay unreachable and key never seen: 503.
        request[KEY_INFO] = await ctx.keys.verify(presented, source=request.remote)
        request[CALLER] = Caller.KEY
        return await handler(request)
    raise Unauthorized(
        "This node only answers other machines that are members of its cluster (mutual "
        "TLS) or present an API key as 'Authorization: Bearer ...'."
        if presented is None
        else "The credential presented is not valid for this cluster."
    )


_CORS_METHODS = "GET, POST, DELETE, OPTIONS"


async def _cors(request: web.Request, handler: Handler, allowed: str) -> web.StreamResponse:
    """A request from an allowed browser origin: answer its preflight, mark its answer."""
    if request.method == "OPTIONS":
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": allowed,
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Vary"] = "Origin"
    return response
