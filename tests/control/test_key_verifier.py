"""A node's ``KeyVerifier`` against a real (in-process) relay, with one injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from quorum.errors import Forbidden, NoReachableHolder, Unauthorized
from quorum.keys import KeyVerifier, looks_like_key, relay_http_base
from relay.store import Cluster
from tests.control.harness import FakeClock, InProcessRelay


@dataclass
class Setup:
    relay: InProcessRelay
    clock: FakeClock
    session: aiohttp.ClientSession
    home: Cluster
    token: str
    other_token: str

    def verifier(self, token: str | None = None, **kw: Any) -> KeyVerifier:
        return KeyVerifier(self.relay.http, token or self.token, self.session, self.clock, **kw)

    def key(self, cluster: Cluster | None = None, **kw: object) -> str:
        c = cluster or self.home
        _, secret = self.relay.store.create_key(
            c.id,
            name=str(kw.get("name", "")),
            models=kw.get("models"),  # type: ignore[arg-type]
            expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
            now=self.clock(),
        )
        return secret


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = FakeClock()
    relay = await InProcessRelay(tmp_path, clock).start()
    home, token = relay.store.create_cluster("home", now=clock())
    _, other_token = relay.store.create_cluster("other", now=clock())
    async with aiohttp.ClientSession() as session:
        yield Setup(relay, clock, session, home, token, other_token)
    await relay.close()


def test_relay_http_base_and_key_shape() -> None:
    assert relay_http_base("wss://relay.example.com/tunnel") == "https://relay.example.com"
    assert relay_http_base("ws://127.0.0.1:8443/tunnel/") == "http://127.0.0.1:8443"
    assert relay_http_base("https://r.example") == "https://r.example"
    assert looks_like_key("qk_1a2b3c4d_xyz") and not looks_like_key("qc_token")


async def test_a_good_key_is_checked_once_then_cached(setup: Setup) -> None:
    key = setup.key(name="phone")
    verifier = setup.verifier()
    info = await verifier.verify(key, "any-model")
    assert info.name == "phone" and info.models is None and info.prefix.startswith("qk_")
    for _ in range(5):
        await verifier.verify(key, "another")
    assert verifier.relay_calls == 1


async def test_revocation_is_honoured_within_the_ttl(setup: Setup) -> None:
    key = setup.key()
    verifier = setup.verifier(ttl_s=30)
    info = await verifier.verify(key)
    setup.relay.store.revoke_key(info.key_id, now=setup.clock())
    setup.clock.now += 29
    await verifier.verify(key)  # still cached
    setup.clock.now += 1
    with pytest.raises(Unauthorized, match="revoked"):
        await verifier.verify(key)


async def test_unknown_keys_are_refused_and_briefly_remembered(setup: Setup) -> None:
    verifier = setup.verifier(negative_ttl_s=10)
    bogus = "qk_00000000_" + "x" * 43
    for _ in range(3):
        with pytest.raises(Unauthorized, match="Incorrect API key"):
            await verifier.verify(bogus)
    assert verifier.relay_calls == 1
    setup.clock.now += 10
    with pytest.raises(Unauthorized):
        await verifier.verify(bogus)
    assert verifier.relay_calls == 2


async def test_a_key_of_another_cluster_looks_unknown(setup: Setup) -> None:
    other = setup.relay.store.cluster("other")
    assert other is not None
    foreign = setup.key(other)
    with pytest.raises(Unauthorized) as refused:
        await setup.verifier().verify(foreign)
    assert refused.value.message == "Incorrect API key provided."
    assert (await setup.verifier(setup.other_token).verify(foreign)).key_id


async def test_a_model_limited_key_is_forbidden_other_models(setup: Setup) -> None:
    key = setup.key(models=("qwen3",))
    verifier = setup.verifier()
    assert (await verifier.verify(key, "qwen3")).models == ("qwen3",)
    with pytest.raises(Forbidden) as refused:
        await verifier.verify(key, "llama")
    assert refused.value.status == 403 and refused.value.code == "model_not_allowed"


async def test_expiry_is_checked_on_every_call(setup: Setup) -> None:
    key = setup.key(expires_at=setup.clock() + 100)
    verifier = setup.verifier(ttl_s=1000)
    await verifier.verify(key)
    setup.clock.now += 100
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(key)
    assert verifier.relay_calls == 1


async def test_concurrent_checks_share_one_request(setup: Setup) -> None:
    key = setup.key()
    verifier = setup.verifier()
    results = await asyncio.gather(*(verifier.verify(key) for _ in range(20)))
    assert len({r.key_id for r in results}) == 1
    assert verifier.relay_calls == 1


async def test_relay_unreachable_keeps_recent_answers_then_fails_with_503(setup: Setup) -> None:
    good = setup.key()
    verifier = setup.verifier(ttl_s=30, offline_grace_s=300, negative_ttl_s=10)
    await verifier.verify(good)
    await setup.relay.runner.cleanup()  # the relay goes away
    setup.clock.now += 31
    assert (await verifier.verify(good)).key_id  # within the grace: still accepted
    calls = verifier.relay_calls
    await verifier.verify(good)
    assert verifier.relay_calls == calls  # and not asked again on every request
    with pytest.raises(NoReachableHolder) as down:
        await verifier.verify("qk_11111111_" + "y" * 43)  # never seen: cannot tell
    assert down.value.status == 503 and down.value.code == "key_check_unavailable"
    setup.clock.now += 300
    with pytest.raises(NoReachableHolder):
        await verifier.verify(good)


async def test_a_refused_node_token_is_not_a_verdict_on_the_key(setup: Setup) -> None:
    key = setup.key()
    verifier = setup.verifier("qc_not-the-cluster-token-000000")
    with pytest.raises(NoReachableHolder):
        await verifier.verify(key)


async def test_forget_drops_every_answer_and_a_check_running_through_it(setup: Setup) -> None:
    """What the relay's REVOCATION triggers: the next request asks the relay again, and a
    check that was on its way when it came answers its request but is not kept."""
    key = setup.key()
    verifier = setup.verifier(ttl_s=3600)
    info = await verifier.verify(key)
    setup.relay.store.revoke_key(info.key_id, now=setup.clock())
    await verifier.verify(key)  # cached: the relay was not asked
    verifier.forget()
    with pytest.raises(Unauthorized, match="revoked"):
        await verifier.verify(key)
    assert verifier.relay_calls == 2

    other = setup.key()
    running = asyncio.create_task(verifier.verify(other))
    await asyncio.sleep(0)  # its request to the relay is under way
    verifier.forget()
    assert (await running).key_id  # answered...
    await verifier.verify(other)  # ... but not kept: asked again
    assert verifier.relay_calls == 4
