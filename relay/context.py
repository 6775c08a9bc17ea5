"""What the relay's HTTP handlers share: state, error shapes, and the three credentials.

Credentials, each only in ``Authorization: Bearer ...`` and never logged:

- the **admin token** (relay config) for ``/api/*``;
- a **cluster token** (a node's join token) for ``/tunnel`` and for the two
  endpoints nodes call: key verification and usage ingestion;
- an **API key** for the public ``/v1``.

Every check compares hashes in constant time. A failed attempt takes a token
from the client address's bucket (``ratelimit``); an address with none left
gets 429 before its credential is looked at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry, Counter

from quorum.api.body import check_content_encoding
from quorum.api.endpoints import Dialect, dialect
from quorum.api.errors import error_body, framework_error
from quorum.errors import ApiError, Forbidden, RateLimited, Unauthorized
from quorum.ratelimit import FailureLimiter, client_address
from quorum.secure.cluster import ClusterCA, ca_id
from quorum.secure.join import (
    CERT_HEADER,
    PROOF_HEADER,
    Joiner,
    JoinRefused,
    issuer_ca_id,
    verify_join,
)
from relay.hub import Hub
from relay.keys import KeyState, same_secret
from relay.node_keys import Binding
from relay.presence import Candidate
from relay.recorder import Recorder
from relay.store import ApiKey, Cluster, Store

log = logging.getLogger("relay.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Counters:
    registry: CollectorRegistry
    public: Counter = field(init=False)
    auth_failures: Counter = field(init=False)
    usage_ingested: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.public = Counter(
            "quorum_relay_public_requests",
            "Requests to the relay's public /v1, by status.",
            ["status"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "quorum_relay_auth_failures",
            "Refused credentials, by kind (admin, cluster, key) and rate-limited attempts.",
            ["kind"],
            registry=self.registry,
        )
        self.usage_ingested = Counter(
            "quorum_relay_usage_records",
            "Usage records received from nodes, by outcome (accepted, duplicate).",
            ["outcome"],
            registry=self.registry,
        )


@dataclass
class RelayState:
    store: Store
    hub: Hub
    recorder: Recorder
    admin_token: str | None
    counters: Counters
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    verify_limiter: FailureLimiter = field(
        default_factory=lambda: FailureLimiter(rate=10.0, burst=200.0)
    )
    trust_forwarded: bool = False
    max_body: int = 100 * 1024 * 1024
    header_timeout_s: float = 300.0

    @property
    def clock(self) -> Callable[[], float]:
        return self.hub.clock

    def candidates(self, cluster_id: str) -> list[Candidate]:
        """Connected nodes of one cluster (here or at another relay), as routing sees them."""
        return [
            Candidate(
                node_id=link.node_id or "",
                name=link.name or (link.node_id or "")[:8],
                models=link.presence.models if link.presence else (),
                last_seen=link.last_seen,
                load=link.conn.active_streams,
                draining=link.draining,
            )
            for link in self.hub.reachable(cluster_id)  # other relays' nodes too
        ]


STATE: web.AppKey[RelayState] = web.AppKey("relay_state", RelayState)


def shape_of(path: str) -> Dialect:
    """The dialect of a relay path: the client's API on ``/v1``; OpenAI's shape elsewhere
    (the relay's ``/api`` is its control plane, not Ollama's API)."""
    return dialect(path) if path.startswith("/v1/") else Dialect.OPENAI


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client sees has its API's shape (``quorum.api.errors``; see
    ``shape_of``). A compressed body is refused before it is read."""
    try:
        check_content_encoding(request.headers.getall("Content-Encoding", ()))
        return await handler(request)
    except web.HTTPException as exc:
        allowed = exc.allowed_methods if isinstance(exc, web.HTTPMethodNotAllowed) else ()
        err = framework_error(
            exc.status, request.method, request.path, allowed=allowed, detail=exc.text or ""
        )
        if err is None:
            raise
    except ApiError as refused:
        err = refused
    return web.json_response(
        error_body(err, shape_of(request.path)), status=err.status, headers=err.headers()
    )


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def address(request: web.Request) -> str:
    state = request.app[STATE]
    return client_address(
        request.remote, request.headers.get("X-Forwarded-For"), state.trust_forwarded
    )


_CODES = {
    "admin": "invalid_admin_token",
    "cluster": "invalid_token",
    "key": "invalid_api_key",
    "node": "invalid_node_certificate",
}


def _refuse(request: web.Request, kind: str, message: str) -> ApiError:
    """A failed credential of ``kind``: 401, or 429 once this address failed too often
    with that kind lately. Only failures are limited, per kind and address: a valid
    credential is never refused for others' failures (a NAT, a reverse proxy)."""
    state = request.app[STATE]
    addr = address(request)
    source = f"{kind}|{addr}"
    wait = state.limiter.retry_after(source)
    if wait is not None:
        state.counters.auth_failures.labels("rate_limited").inc()
        return RateLimited(
            "Too many failed attempts from this address; try again later.", retry_after_s=wait
        )
    state.limiter.failed(source)
    state.counters.auth_failures.labels(kind).inc()
    log.warning("refused %s credential from %s for %s", kind, addr, request.path)
    return Unauthorized(message, code=_CODES[kind])


def require_admin(request: web.Request) -> None:
    check_admin_token(
        request,
        bearer(request),
        "The control plane needs the relay's admin token (Authorization: Bearer ...).",
    )


def check_admin_token(request: web.Request, presented: str | None, message: str) -> None:
    """Pass if ``presented`` is the admin token; else 401 with ``message``, counted as a failed
    admin attempt of the client's address (429 once it has none left)."""
    state = request.app[STATE]
    if (
        presented is None
        or state.admin_token is None
        or not same_secret(presented, state.admin_token)
    ):
        raise _refuse(request, "admin", message)


async def require_cluster(request: web.Request) -> Cluster:
    """The cluster whose join token the caller presented (a node)."""
    state = request.app[STATE]
    presented = bearer(request)
    cluster = (
        await asyncio.to_thread(_cluster_of_token, state.store, presented) if presented else None
    )
    if cluster is None:
        raise _refuse(
            request,
            "cluster",
            "A valid cluster token is required (Authorization: Bearer ...).",
        )
    return cluster


def _cluster_of_token(store: Store, token: str) -> Cluster | None:
    """The cluster of its current token, or of a previous one still in its grace."""
    cluster = store.cluster_for_token(token)
    if cluster is not None:
        return cluster
    previous = store.cluster_for_previous_token(token, now=time.time())
    return None if previous is None else store.cluster(previous)


def _cluster_of_ca(store: Store, named: str) -> tuple[str, str, float, str] | None:
    """(id, name, created_at, CA key PEM) of the cluster whose current CA, or previous CA
    still in its grace, is ``named``."""
    found = store.cluster_for_ca(named)
    if found is not None:
        return found
    previous = store.previous_ca(named, now=time.time())
    cluster = None if previous is None else store.cluster(previous[0])
    if previous is None or cluster is None:
        return None
    return cluster.id, cluster.name, cluster.created_at, previous[1]


async def require_member(request: web.Request) -> tuple[Cluster, Joiner | None]:
    """A node joining the tunnel: its cluster, and who it proved to be.

    Without a token, its certificate and proof alone (``quorum.secure.join``), checked
    against the CA public key the relay keeps for the cluster the certificate names.
    With the token (older nodes, or a cluster whose CA the relay has not seen yet), the
    token's cluster, and the certificate checked against the CA derived from the token;
    that CA's public key is then kept, so the node's next join needs no token. After a
    rotation (``relay.cluster_tokens``) the previous token and its CA count as the
    cluster's until the grace ends, and never after.
    JoinRefused: a certificate or proof that does not hold, alongside a valid token.
    """
    state = request.app[STATE]
    cert, proof = request.headers.get(CERT_HEADER), request.headers.get(PROOF_HEADER)
    now = time.time()
    presented = bearer(request)
    if presented is None and cert is not None:
        named = issuer_ca_id(cert)
        found = await asyncio.to_thread(_cluster_of_ca, state.store, named) if named else None
        if found is None:
            raise _refuse(request, "node", "This relay knows no cluster of this certificate.")
        cluster_id, name, created_at, pem = found
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise _refuse(request, "node", "This cluster's CA key is not usable.")
        try:
            joiner = verify_join(cert, proof or "", key, now)
        except JoinRefused as exc:
            raise _refuse(request, "node", f"This node's certificate is refused: {exc}.") from None
        return Cluster(cluster_id, name, created_at), joiner
    cluster = await require_cluster(request)
    if cert is None and proof is None:
        return cluster, None
    assert presented is not None  # require_cluster checked it
    derived = ClusterCA.from_token(presented)
    joiner = verify_join(cert or "", proof or "", derived.key.public_key(), now)
    current = await asyncio.to_thread(state.store.cluster_for_token, presented)
    if current is not None and await asyncio.to_thread(state.store.cluster_ca, cluster.id) is None:
        public = derived.key.public_key()
        await asyncio.to_thread(
            state.store.set_cluster_ca, cluster.id, ca_id(public), derived.public_key_pem
        )
    return cluster, joiner


def key_usable(store: Store, key: ApiKey) -> bool:
    """Whether a key's owner (if it has one, ``relay.users``) is enabled and still in the
    key's cluster: read on every use, so a disabled or removed user's keys stop at once."""
    holder = store.key_holder(key.id)
    return holder is None or holder.allowed


def suspended_message(key: ApiKey) -> str:
    return (
        f"The cluster of the API key {key.shown} is suspended: its owner's account is "
        "disabled. It is served again once an operator enables the account."
    )


async def require_key(request: web.Request) -> ApiKey:
    """The active API key the caller presented (an app): ``Authorization: Bearer``, or
    ``x-api-key`` as Anthropic's SDKs send it."""
    state = request.app[STATE]
    presented = bearer(request) or request.headers.get("x-api-key") or None
    key = await asyncio.to_thread(state.store.key_for_secret, presented) if presented else None
    if key is None:
        raise _refuse(
            request,
            "key",
            "A valid API key is required (Authorization: Bearer qk_...)."
            if presented is None
            else "Incorrect API key provided.",
        )
    now = state.clock()
    match key.state(now):
        case KeyState.REVOKED:
            raise _refuse(request, "key", f"The API key {key.shown} has been revoked.")
        case KeyState.EXPIRED:
            raise _refuse(request, "key", f"The API key {key.shown} has expired.")
    if not await asyncio.to_thread(key_usable, state.store, key):
        raise _refuse(request, "key", f"The API key {key.shown} is of a disabled or removed user.")
    if await asyncio.to_thread(state.store.suspended_clusters, key.cluster_id):
        raise Forbidden(suspended_message(key), code="cluster_suspended")
    state.recorder.key_used(key.id, now)
    return key


async def require_node(request: web.Request) -> Cluster:
    """A node calling the control plane (key checks, usage): its certificate and a fresh
    proof, as at its tunnel's join, so no token is sent; a bound node id must use its key
    and a removed node is refused. The token is still accepted from older nodes."""
    state = request.app[STATE]
    try:
        cluster, joiner = await require_member(request)
    except JoinRefused as exc:
        raise _refuse(request, "node", f"This node's certificate is refused: {exc}.") from None
    if joiner is not None:
        binding = await asyncio.to_thread(
            state.store.bind_node_key,
            cluster.id,
            joiner.node_id,
            joiner.fingerprint,
            now=time.time(),
        )
        if binding in (Binding.OTHER, Binding.REMOVED):
            why = "another key than the one bound" if binding is Binding.OTHER else "removed"
            state.hub.refusals.add(
                cluster.id, joiner.node_id, joiner.fingerprint, address(request), why
            )
            raise Forbidden(
                "This node id is bound to another key, or this node was removed.",
                code="node_key_refused",
            )
    return cluster
