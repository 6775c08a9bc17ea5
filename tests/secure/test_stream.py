"""``TLSStream`` reads every record that already arrived, not one record per call: a burst
of an answer's small chunks reaches the reader as one piece (and never more than asked)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from quorum.secure import ClusterTLS, Identity
from quorum.secure.hop import RelayIdentity, hop_server_context
from quorum.secure.stream import TLSStream
from tests.harness import timeout
from tests.secure.pipes import End, pipe

TOKEN = "tok-" + "s" * 28


class NowaitEnd(End):
    """With ``receive_nowait``, as a tunnel stream has."""

    def receive_nowait(self, max_bytes: int | None = None) -> bytes | None:
        return None if self._in.empty() else self._in.get_nowait()


async def _pair(tmp: Path, end: type[End] = NowaitEnd) -> tuple[TLSStream, TLSStream]:
    left, right = pipe(end)
    relay = RelayIdentity.generate()
    node = ClusterTLS(Identity.load_or_create(tmp / "n"), "n", TOKEN, tmp / "n")
    der = relay.cert.public_bytes(serialization.Encoding.DER)
    client = TLSStream(left, relay.client, server_side=False)
    server = TLSStream(right, hop_server_context(node, der), server_side=True)
    await asyncio.gather(client.handshake(), server.handshake())
    await server.send_all(b"ready")  # the client reads its session ticket with this
    assert await client.receive_some() == b"ready"
    return client, server


async def test_records_that_arrived_are_read_at_once(tmp_path: Path) -> None:
    async with asyncio.timeout(timeout(10)):
        client, server = await _pair(tmp_path)
        pieces = [b"data: %d\n\n" % i for i in range(50)]
        for piece in pieces:
            await client.send_all(piece)  # a record each
        assert await server.receive_some() == b"".join(pieces)
        # Never more than asked; the rest comes next.
        for piece in pieces:
            await client.send_all(piece)
        first = await server.receive_some(100)
        assert len(first) <= 100 and first == b"".join(pieces)[: len(first)]
        rest = b""
        while len(first) + len(rest) < len(b"".join(pieces)):
            rest += await server.receive_some()
        assert first + rest == b"".join(pieces)


async def test_the_end_after_a_burst_is_met_by_the_next_read(tmp_path: Path) -> None:
    async with asyncio.timeout(timeout(10)):
        client, server = await _pair(tmp_path)
        await client.send_all(b"one")
        await client.send_all(b"two")
        ends = server._inner
        assert isinstance(ends, End)
        ends._in.put_nowait(b"")  # the stream below ends right after the records
        assert await server.receive_some() == b"onetwo"
        assert await server.receive_some() == b""


async def test_a_stream_without_receive_nowait_reads_what_its_engine_holds(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(timeout(10)):
        client, server = await _pair(tmp_path, End)
        await client.send_all(b"one")
        await client.send_all(b"two")
        got = await server.receive_some()
        while got != b"onetwo":
            assert b"onetwo".startswith(got)
            got += await server.receive_some()
