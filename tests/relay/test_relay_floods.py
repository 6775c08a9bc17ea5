"""Floods at a real relay process: each is refused or bounded, a valid client keeps working
throughout, the relay stays healthy, and its memory returns to its baseline afterwards.

One relay, one node (a fake vLLM) and one API key for the module. Every flood is bounded in
count and time and stays on loopback. Memory is the relay's resident set: Python keeps some
freed memory in its arenas, so "returns to baseline" means within ``SLACK_MIB`` of what it
was after a warm-up of the same requests, never growing with the flood's size.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from quorum.app import Node
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

MODEL = "Qwen/Qwen3-0.6B"
SLACK_MIB = 24.0
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


class Site:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg = bg
        self.data = tmp / "relay"
        self.data.mkdir()
        token = create_cluster(self.data, "home")
        self.admin = relay_cli(self.data, "admin-token").strip()
        self.key = json.loads(relay_cli(self.data, "key", "create", "--cluster", "home", "--json"))[
            "key"
        ]
        self.relay = Relay(self.data).start()
        self.vllm = FakeVLLM(models=[MODEL])
        url = bg.run(self.vllm.start())
        config = node_config(
            tmp / "a",
            node={"name": "a"},
            cluster={"token": token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=[{"name": "vllm", "url": url}],
        )
        self.node: Node = bg.run(start_node(config))

    def rss_mib(self) -> float:
        assert self.relay.proc is not None
        status = Path(f"/proc/{self.relay.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def back_to(self, before: float) -> None:
        """The resident set comes back within ``SLACK_MIB`` of ``before`` (quorum.memory)."""
        wait_until(lambda: self.rss_mib() - before < SLACK_MIB, 5, f"RSS back to {before:.0f} MiB")

    def works(self) -> None:
        """The valid key gets its answer, and /healthz says the relay is well."""
        with openai.OpenAI(
            base_url=self.relay.http + "/v1", api_key=self.key, max_retries=0, timeout=timeout(20)
        ) as c:
            done = c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "ok"}]
            )
        assert done.choices[0].message.content == "You said: ok"
        with urllib.request.urlopen(self.relay.http + "/healthz", timeout=timeout(5)) as resp:
            assert resp.status == 200

    def close(self) -> None:
        self.bg.run(self.node.stop())
        self.bg.run(self.vllm.stop())
        self.relay.kill()


@pytest.fixture(scope="module")
def site(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(bg, tmp_path_factory.mktemp("floods"))
    try:
        wait_until(lambda: _models(s) == [MODEL], 15, "the node's model at the relay")
        yield s
    finally:
        s.close()


def _models(s: Site) -> list[str]:
    with openai.OpenAI(base_url=s.relay.http + "/v1", api_key=s.key, max_retries=0) as c:
        return [m.id for m in c.models.list()]


async def _statuses(
    url: str, count: int, headers: list[dict[str, str]], data: bytes, concurrency: int
) -> list[int]:
    gate = asyncio.Semaphore(concurrency)
    out: list[int] = []
    timeout_ = aiohttp.ClientTimeout(total=timeout(30))
    async with aiohttp.ClientSession(timeout=timeout_) as session:

        async def one(i: int) -> None:
            body = io.BytesIO(data)  # (aiohttp warns of large raw bytes)
            async with gate, session.post(url, headers=headers[i % len(headers)], data=body) as r:
                await r.read()
                out.append(r.status)

        await asyncio.gather(*(one(i) for i in range(count)))
    return out


def _chat_statuses(s: Site, count: int, keys: list[str], data: bytes | None = None) -> list[int]:
    body = data if data is not None else json.dumps(CHAT).encode()
    headers = [{"Authorization": f"Bearer {k}", "Content-Type": "application/json"} for k in keys]
    return asyncio.run(_statuses(s.relay.http + "/v1/chat/completions", count, headers, body, 16))


def made_up_keys(n: int) -> list[str]:
    return [f"qk_{secrets.token_hex(4)}_{secrets.token_urlsafe(30)}" for _ in range(n)]


HEAD_DEADLINE_S = 10.0  # the relay's netguard: a request head must be whole within this


def test_an_idle_tunnel_outlives_the_head_deadline(site: Site) -> None:
    """The node's tunnel is an upgraded connection: its WebSocket frames are never taken for an
    unfinished request head, so the relay does not cut it at the head deadline (it did, every
    10 s, and the node reconnected)."""
    tunnel = site.node.ctx.tunnel
    assert tunnel is not None
    since = tunnel.status.since
    assert since is not None
    deadline = since + timeout(HEAD_DEADLINE_S) + 3
    while time.time() < deadline:  # a span of time is what is tested: watch it pass
        assert tunnel.status.connected and tunnel.status.since == since, "the tunnel was cut"
        time.sleep(0.2)
    assert "disconnected" not in site.relay.log.read_text()
    site.works()


def test_made_up_api_keys(site: Site) -> None:
    """800 requests with made-up keys: refused (401, then 429), the relay's memory stays put."""
    warm = _chat_statuses(site, 100, made_up_keys(100))  # the same path, allocated once
    assert set(warm) <= {401, 429} and 401 in warm, sorted(set(warm))
    site.works()
    before = site.rss_mib()
    statuses = _chat_statuses(site, 800, made_up_keys(800))
    assert set(statuses) <= {401, 429}, sorted(set(statuses))
    site.works()
    site.back_to(before)


def test_bad_admin_tokens(site: Site) -> None:
    """600 bad admin tokens at /api: refused; the valid key and the admin token still work."""

    async def run(count: int) -> list[int]:
        out: list[int] = []
        async with aiohttp.ClientSession() as session:
            for i in range(count):
                auth = {"Authorization": f"Bearer qa_{i}_{secrets.token_urlsafe(20)}"}
                async with session.get(site.relay.http + "/api/v1/clusters", headers=auth) as r:
                    out.append(r.status)
        return out

    warm = asyncio.run(run(50))
    assert set(warm) <= {401, 429} and 401 in warm, sorted(set(warm))
    before = site.rss_mib()
    statuses = asyncio.run(run(600))
    assert set(statuses) <= {401, 429}, sorted(set(statuses))
    site.works()
    admin = urllib.request.Request(
        site.relay.http + "/api/v1/clusters", headers={"Authorization": f"Bearer {site.admin}"}
    )
    with urllib.request.urlopen(admin, timeout=timeout(5)) as resp:
        assert resp.status == 200
    site.back_to(before)


def test_bodies_declared_too_large(site: Site) -> None:
    """300 requests declaring 2 GB bodies with a valid key: 413 from the head, nothing read."""

    def run(count: int) -> list[int]:
        statuses: list[int] = []
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", site.relay.port), timeout(5)) as sock:
                sock.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
                    b"Authorization: Bearer " + site.key.encode() + b"\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n"
                    + b"{"
                    * 1024
                )
                head = sock.recv(4096)
                statuses.append(int(head.split(b" ", 2)[1]))
        return statuses

    run(20)
    before = site.rss_mib()
    started = time.monotonic()
    assert set(run(300)) == {413}
    assert time.monotonic() - started < timeout(30)  # each refused at once, never read
    site.works()
    site.back_to(before)


def test_large_bad_bodies(site: Site) -> None:
    """40 bodies of 8 MB that are not JSON (an object cut short), with a valid key: each a
    400, and the memory they took is given back."""
    junk = b'{"model": "' + MODEL.encode() + b'", "messages": [' + b"1," * (4 << 20)
    _chat_statuses(site, 4, [site.key], junk)
    before = site.rss_mib()
    statuses = _chat_statuses(site, 40, [site.key], junk)
    assert set(statuses) == {400}, sorted(set(statuses))
    site.works()
    site.back_to(before)


def test_unfinished_heads(site: Site) -> None:
    """200 connections that never finish their request head: the relay closes each at its
    head deadline (10 s) and keeps serving meanwhile; its memory returns."""
    before = site.rss_mib()
    socks = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", site.relay.port), timeout(5))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
            socks.append(sock)
        site.works()  # served while they hang
        deadline = time.monotonic() + timeout(25)
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                leftover = sock.recv(4096)
            except ConnectionResetError:
                leftover = b""
            assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408"), leftover[:80]
    finally:
        for sock in socks:
            sock.close()
    site.works()
    site.back_to(before)
