"""Node-to-node streams through a real relay hub, encrypted end to end (in memory).

What the relay sees is tapped on each node's link (every frame both ways): the
prompt, the answer and the token must not be in it; a node without the cluster
token gets nothing from a member and tells it nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from quorum.errors import UpstreamFailed
from quorum.link import Transport, TunnelStream
from quorum.protocol import ModelInfo, RequestHead, ResponseHead
from quorum.secure import ClusterTLS, Identity
from quorum.tunnel import StreamHandler, TunnelClient, e2e
from tests.link.helpers import read_all, until
from tests.tunnel.helpers import MemoryRelay, ZeroRandom

TOKEN = "qc_" + "e2e-token-" * 4
OTHER = "qc_" + "not-ours--" * 4
PROMPT = b"the-distinctive-prompt-7f3a"
ANSWER = b"the-distinctive-answer-91c2"
QWEN = (ModelInfo("qwen3", "llm"),)


class Tap:
    """A transport that keeps a copy of every frame: what the relay gets and sends."""

    def __init__(self, inner: Transport, seen: bytearray) -> None:
        self._inner, self._seen = inner, seen

    async def send(self, frame: bytes) -> None:
        self._seen += frame
        await self._inner.send(frame)

    async def receive(self) -> bytes:
        frame = await self._inner.receive()
        self._seen += frame
        return frame

    async def close(self) -> None:
        await self._inner.close()

    def stop_reading(self) -> None:
        self._inner.stop_reading()

    async def abort(self) -> None:
        await self._inner.abort()


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.relay = MemoryRelay()
        self.seen = bytearray()
        self.served: list[RequestHead] = []
        self.clients: list[TunnelClient] = []
        self.tasks: list[asyncio.Task[None]] = []

    def tls(self, name: str, token: str) -> ClusterTLS:
        where = self.tmp / name
        return ClusterTLS(Identity.load_or_create(where), name, token, where)

    async def dial(self) -> Transport:
        return Tap(await self.relay.dial(), self.seen)

    def node(
        self, name: str, tls: ClusterTLS | None, serve: StreamHandler | None = None
    ) -> TunnelClient:
        client = TunnelClient(
            url="memory://relay/tunnel",
            token="unused",
            node_id=name,
            node_name=name,
            on_fleet=lambda event: None,
            local_models=lambda: list(QWEN) if serve else [],
            max_body=1 << 24,
            serve_stream=serve or self.answer,
            dial=self.dial,
            rng=ZeroRandom(),
            tls=tls,
        )
        self.clients.append(client)
        self.tasks.append(asyncio.create_task(client.run(), name=f"tunnel-{name}"))
        return client

    async def answer(self, head: RequestHead, stream: TunnelStream) -> None:
        body = await read_all(stream)
        self.served.append(head)
        assert PROMPT in body
        stream.send_response(ResponseHead(200, (("Content-Type", "application/json"),)))
        for _ in range(3):
            await stream.send_all(ANSWER + b" " * (len(body) // 3))
        await stream.send_eof()

    async def connected(self) -> None:
        await until(lambda: all(c.status.connected for c in self.clients))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.relay.close()


async def ask(client: TunnelClient, target: str, body: bytes) -> tuple[int, str, bytes]:
    response = await client.request(
        target, "POST", "/v1/chat/completions", [("Content-Type", "application/json")], body, 5
    )
    try:
        chunks = b"".join([c async for c in response.chunks()])
        return response.status, response.headers.get("Content-Type", ""), chunks
    finally:
        response.release()


def chat(size: int = 0) -> bytes:
    return json.dumps({"model": "qwen3", "prompt": PROMPT.decode(), "pad": "x" * size}).encode()


@pytest.mark.parametrize("size", [0, 3 * 1024 * 1024])
async def test_the_relay_sees_neither_prompt_nor_answer(tmp_path: Path, size: int) -> None:
    rig = Rig(tmp_path)
    a = rig.node("node-a", rig.tls("node-a", TOKEN))
    rig.node("node-b", rig.tls("node-b", TOKEN), serve=rig.answer)
    try:
        await rig.connected()
        status, kind, body = await ask(a, "node-b", chat(size))
        assert (status, kind) == (200, "application/json")
        assert body.count(ANSWER) == 3 and len(body) >= size
        assert [h.path for h in rig.served] == ["/v1/chat/completions"]  # inside, as sent
        seen = bytes(rig.seen)
        assert b"/quorum/v1/e2e" in seen  # the tap saw the stream ...
        assert PROMPT not in seen and ANSWER not in seen  # ... and none of its content
        assert b"/v1/chat/completions" not in seen and TOKEN.encode() not in seen
    finally:
        await rig.close()


async def test_the_tap_sees_plaintext_without_tls(tmp_path: Path) -> None:
    """The control: the same exchange without end-to-end TLS shows the prompt to the relay."""
    rig = Rig(tmp_path)
    a = rig.node("node-a", None)
    rig.node("node-b", None, serve=rig.answer)
    try:
        await rig.connected()
        status, _, body = await ask(a, "node-b", chat())
        assert status == 200 and ANSWER in body
        assert PROMPT in bytes(rig.seen) and ANSWER in bytes(rig.seen)
    finally:
        await rig.close()


async def test_a_node_without_the_token_gets_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    stranger = rig.node("node-x", rig.tls("node-x", OTHER))
    member = rig.node("node-a", rig.tls("node-a", TOKEN))
    rig.node("node-b", rig.tls("node-b", TOKEN), serve=rig.answer)
    try:
        await rig.connected()
        # A stranger asking a member: the member's certificate is no cluster's it knows.
        with pytest.raises(UpstreamFailed, match="did not prove"):
            await ask(stranger, "node-b", chat())
        # A member asking for the stranger's node id, answered by the stranger: refused too.
        with pytest.raises(UpstreamFailed, match="did not prove"):
            await ask(member, "node-x", chat())
        assert rig.served == []  # no handler ran
        assert PROMPT not in bytes(rig.seen)
        # The member still reaches the member.
        status, _, body = await ask(member, "node-b", chat())
        assert status == 200 and ANSWER in body
    finally:
        await rig.close()


async def test_requests_share_one_channel_until_the_node_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(e2e, "SERVER_IDLE_S", 0.2)  # the node closes an idle channel soon
    rig = Rig(tmp_path)
    a = rig.node("node-a", rig.tls("node-a", TOKEN))
    rig.node("node-b", rig.tls("node-b", TOKEN), serve=rig.answer)
    hub = rig.relay.hub
    try:
        await rig.connected()
        for _ in range(3):
            status, _, body = await ask(a, "node-b", chat())
            assert status == 200 and body.count(ANSWER) == 3
        assert hub.streams_piped == 1  # one handshake, three requests
        await until(lambda: hub.open_streams == 0)  # idle: the node closed it, and so did A
        status, _, _ = await ask(a, "node-b", chat())
        assert status == 200 and hub.streams_piped == 2  # a new channel, transparently
        assert len(rig.served) == 4
    finally:
        await rig.close()


async def test_a_client_hanging_up_resets_only_its_channel(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    a = rig.node("node-a", rig.tls("node-a", TOKEN))
    rig.node("node-b", rig.tls("node-b", TOKEN), serve=rig.answer)
    hub = rig.relay.hub
    try:
        await rig.connected()
        response = await a.request("node-b", "POST", "/v1/chat/completions", [], chat(), 5)
        async for _ in response.chunks():
            break  # one chunk, then the client goes away
        response.release()
        await until(lambda: hub.open_streams == 0)
        status, _, body = await ask(a, "node-b", chat())  # a new channel
        assert status == 200 and ANSWER in body and hub.streams_piped == 2
    finally:
        await rig.close()
