"""API keys presented to a node, checked against the relay (the keys live only there).

``KeyVerifier.verify(key, model)`` returns the key's ``KeyInfo`` or raises:

- ``Unauthorized`` (401): the relay says the key is unknown, revoked,
  expired, or another cluster's (it does not say which of the last);
- ``Forbidden`` (403, ``model_not_allowed``): the key may not use ``model``;
- ``NoReachableHolder`` (503, ``key_check_unavailable``): the relay could not
  be asked and nothing recent is known of the key. 503, not 401: the key may
  well be good, and the client should retry rather than give up on it.

Caching (``clock`` injected, seconds):
- a good answer is reused for ``ttl_s`` (3 s), for one relay call per key in use
  every few seconds; expiry is checked on every call against the cached
  ``expires_at``. A revocation (a revoked key, a disabled user, a removed
  member) is pushed by the relay down the tunnel (REVOCATION) and ``forget``
  drops every answer at once, so the very next request is checked again; the
  TTL bounds what is missed without the push (an older relay, a change written
  to the store by hand) while the relay is reachable;
- a 401 is reused for ``negative_ttl_s`` (10 s), so a client retrying a bad
  key does not hammer the relay;
- when the relay cannot be reached, the last answer about a key stays in
  force for ``offline_grace_s`` (5 min) after the relay gave it (the relay is
  asked again every ``negative_ttl_s`` meanwhile): a relay outage does not
  lock every app out of a LAN that still works. Set it to 0 to fail closed.
  A key the relay never answered for gets 503 while it is unreachable.

Only the SHA-256 of a key is kept in memory; keys never reach a log line.
Concurrent checks of one key share a single request to the relay.

Floods of made-up keys (``source`` is the client's address): each source
that presented unknown keys lately is limited on its own (``FailureLimiter``:
429 with ``Retry-After``, the relay not asked), and the relay limits per
cluster *and* client too, so unauthenticated traffic from one place never
spends the budget of the cluster's other clients. A good key is never
refused because of such failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from quorum.errors import Forbidden, NoReachableHolder, RateLimited, Unauthorized
from quorum.ratelimit import FailureLimiter

log = logging.getLogger("quorum.keys")

KEY_SCHEME = "qk_"


Credentials = Callable[[], Mapping[str, str]]
"""The headers that say who this node is to the relay, made afresh for each request: its
certificate and a signed proof (``quorum.secure.join``), so the token never travels."""


def as_credentials(value: str | Credentials) -> Credentials:
    """A cluster token (older relays, tests) as ``Credentials``; callables as they are."""
    if callable(value):
        return value
    header = {"Authorization": f"Bearer {value}"}
    return lambda: header


def looks_like_key(credential: str) -> bool:
    """Whether a bearer credential is shaped like an API key (else: maybe a cluster token)."""
    return credential.startswith(KEY_SCHEME)


def http_base_of(base: str | Callable[[], str]) -> str:
    """The relay's HTTP base now: ``base``, or what it returns (the node's current relay)."""
    return (base() if callable(base) else base).rstrip("/")


def relay_http_base(relay_url: str) -> str:
    """``wss://relay.example.com/tunnel`` -> ``https://relay.example.com``."""
    base = relay_url.rstrip("/").removesuffix("/tunnel")
    if base.startswith("wss://"):
        return "https://" + base[6:]
    if base.startswith("ws://"):
        return "http://" + base[5:]
    return base


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    prefix: str
    models: tuple[str, ...] | None
    """The only models the key may use; None: every model."""
    expires_at: float | None

    def allows(self, model: str | None) -> bool:
        return self.models is None or model is None or model in self.models


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo | None  # None: the relay said 401
    message: str
    checked_at: float  # when the relay last answered for this key
    next_check: float  # when to ask it again


class _Unavailable(Exception):
    pass


class KeyVerifier:
    def __init__(
        self,
        relay_http_base: str | Callable[[], str],
        cluster_token: str | Credentials,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
        *,
        ttl_s: float = 3.0,
        negative_ttl_s: float = 10.0,
        offline_grace_s: float = 300.0,
        timeout_s: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        # A callable: the relay the node's tunnel is on now (it moves between relays).
        self._base = relay_http_base
        self._credentials = as_credentials(cluster_token)
        self._session = session
        self._clock = clock
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._grace = offline_grace_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max = max_entries
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}
        self._epoch = 0  # forget() calls: a check started before one is not cached
        self.relay_calls = 0
        self.failures = FailureLimiter(rate=1.0, burst=20.0, clock=clock)

    async def verify(
        self, key: str, model: str | None = None, source: str | None = None
    ) -> KeyInfo:
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = self._clock()
        entry = self._cache.get(digest)
        if entry is None or now >= entry.next_check:
            if entry is None and source is not None:
                wait = self.failures.retry_after(source)
                if wait is not None:  # this client sent unknown keys lately: ask nobody
                    raise RateLimited(
                        "Too many unknown API keys from this address; try again later.",
                        retry_after_s=wait,
                    )
            entry = await self._refresh(digest, key, entry, source)
        if entry.info is None and source is not None:
            self.failures.failed(source)
        return self._decide(entry, model, self._clock())

    def forget(self) -> None:
        """Drop every cached answer (the relay said a key, user or member was revoked, or the
        cluster token changed). A check running now still answers the request that waits for
        it, but is not cached: the next request asks the relay again."""
        self._cache.clear()
        self._inflight.clear()
        self._epoch += 1

    def _decide(self, entry: _Entry, model: str | None, now: float) -> KeyInfo:
        info = entry.info
        if info is None:
            raise Unauthorized(entry.message)
        if info.expires_at is not None and now >= info.expires_at:
            raise Unauthorized(f"The API key {info.prefix} has expired.")
        if not info.allows(model):
            raise Forbidden(
                f"The API key {info.prefix} may not use the model '{model}'.",
                code="model_not_allowed",
            )
        return info

    async def _refresh(
        self, digest: str, key: str, stale: _Entry | None, source: str | None
    ) -> _Entry:
        """Ask the relay once per key however many requests wait; a waiter that is
        cancelled (its client went away) does not cancel the check for the others."""
        task = self._inflight.get(digest)
        if task is None:
            lookup = self._lookup(digest, key, stale, source, self._epoch)
            task = asyncio.create_task(lookup, name="key-verify")
            self._inflight[digest] = task

            def done(t: asyncio.Task[_Entry]) -> None:
                if self._inflight.get(digest) is t:
                    del self._inflight[digest]
                if not t.cancelled():
                    t.exception()  # retrieved here; the waiters re-raise it

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _lookup(
        self, digest: str, key: str, stale: _Entry | None, source: str | None, epoch: int
    ) -> _Entry:
        """``epoch``: ``forget`` calls when the check started (a later one: not kept)."""
        try:
            entry = await self._ask(key, source)
        except _Unavailable as exc:
            offline = self._offline(stale, str(exc))
            if offline is not None and epoch == self._epoch:
                # Served from memory; ask the relay again soon, not on every request.
                self._store(digest, replace(offline, next_check=self._clock() + self._negative_ttl))
            else:
                raise NoReachableHolder(
                    "API keys cannot be checked now (the relay is unreachable); try again shortly.",
                    code="key_check_unavailable",
                ) from None
            return offline
        if epoch == self._epoch:  # else forgotten meanwhile: answer, but do not keep it
            self._store(digest, entry)
        return entry

    def _offline(self, stale: _Entry | None, why: str) -> _Entry | None:
        now = self._clock()
        if stale is not None and now - stale.checked_at < self._grace:
            age = now - stale.checked_at
            log.warning("relay unreachable (%s): using a key check %.0f s old", why, age)
            return stale
        log.warning("relay unreachable (%s): cannot check an API key", why)
        return None

    def _store(self, digest: str, entry: _Entry) -> None:
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def _ask(self, key: str, source: str | None) -> _Entry:
        self.relay_calls += 1
        headers = dict(self._credentials())
        body = {"key": key} if source is None else {"key": key, "client": source}
        try:
            async with self._session.post(
                http_base_of(self._base) + "/api/v1/keys/verify",
                json=body,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                retry = resp.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Unavailable(type(exc).__name__) from None
        now = self._clock()
        data = _json(raw)
        if resp.status == 200 and isinstance(data, dict) and data.get("valid") is True:
            models = data.get("models")
            expires = data.get("expires_at")
            return _Entry(
                KeyInfo(
                    key_id=str(data.get("key_id", "")),
                    name=str(data.get("name") or ""),
                    prefix=str(data.get("prefix") or KEY_SCHEME),
                    models=tuple(str(m) for m in models) if isinstance(models, list) else None,
                    expires_at=float(expires) if isinstance(expires, int | float) else None,
                ),
                "",
                now,
                now + self._ttl,
            )
        if resp.status == 401 and isinstance(data, dict) and isinstance(data.get("error"), dict):
            code = data["error"].get("code")
            if code == "invalid_api_key":
                message = str(data["error"].get("message") or "Incorrect API key provided.")
                return _Entry(None, message, now, now + self._negative_ttl)
            # The relay refused *our* cluster token: that says nothing about the key.
            raise _Unavailable("the relay refused this node's cluster token")
        if resp.status == 429:
            # This client (only) sent too many unknown keys: it waits, nobody else does.
            raise RateLimited(
                "Too many unknown API keys from this address; try again later.",
                retry_after_s=int(retry) if retry.isdigit() else 10,
            )
        raise _Unavailable(f"the relay answered {resp.status}")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
