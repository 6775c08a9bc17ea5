"""TLS over any async byte stream (a tunnel stream), through the stdlib's ``ssl.MemoryBIO``.

The TLS state machine (``ssl.SSLObject``) never touches a socket: what it
wants to send is taken from its outgoing BIO and handed to the byte stream,
what the byte stream delivers is put in its incoming BIO. trio's ``SSLStream``
(``src/trio/_ssl.py``) is the model; this is its small subset for streams
that are used by one reader and one writer at a time.

Errors: TLS failures (a certificate that is not the cluster's, a wrong node
id, a record that does not authenticate) raise :class:`TLSFailed`; the byte
stream's own errors (a reset tunnel stream) go through unchanged.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol, TypeVar

from quorum.errors import QuorumError
from quorum.secure.tls import peer_node_id

T = TypeVar("T")
RECEIVE_SIZE = 64 * 1024


class TLSFailed(QuorumError):
    """The TLS handshake or a record failed: the other end is no member, or not the one meant."""


class ByteStream(Protocol):
    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...


class TLSStream:
    """One TLS connection over ``inner``: ``handshake``, then ``send_all`` / ``receive_some``."""

    __slots__ = ("_in", "_inner", "_nowait", "_out", "_receiving", "_sending", "_ssl")

    def __init__(
        self,
        inner: ByteStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self._inner = inner
        # What the stream below already holds, taken without waiting (a tunnel stream has it).
        self._nowait: Callable[[int], bytes | None] | None = getattr(inner, "receive_nowait", None)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in,
            self._out,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self._sending = asyncio.Lock()  # bytes leave in the order the TLS engine made them
        self._receiving = asyncio.Lock()

    @property
    def session(self) -> ssl.SSLSession | None:
        """What resumes this connection's session on the next one to the same peer (a client's,
        once a ticket arrived: after the first bytes read past the handshake)."""
        return self._ssl.session

    @property
    def session_reused(self) -> bool:
        return self._ssl.session_reused

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The TLS state (after the handshake: the peer's certificate, the cipher)."""
        return self._ssl

    @property
    def peer_node_id(self) -> str | None:
        """The node id in the other end's verified certificate (after the handshake)."""
        return peer_node_id(self._ssl)

    async def handshake(self) -> None:
        await self._retry(self._ssl.do_handshake)

    async def send_all(self, data: bytes) -> None:
        if data:
            await self._retry(lambda: self._ssl.write(data))

    async def receive_some(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        """Up to ``max_bytes`` of plaintext; ``b""`` once the other end closed.

        Every record already here is read, not only the first: a burst of small records
        (an answer's chunks) reaches the reader as one piece, so it writes on once."""
        first = await self._retry(lambda: self._ssl.read(max_bytes), eof=b"")
        if not first or len(first) >= max_bytes:
            return first
        return self._read_arrived(first, max_bytes)

    def _read_arrived(self, first: bytes, max_bytes: int) -> bytes:
        """``first`` and the plaintext of the records that arrived whole after it (in the
        incoming BIO, or buffered in the stream below), up to ``max_bytes``; never waits.
        A failure or the end is left for the next call to meet."""
        parts, size = [first], len(first)
        nowait = self._nowait
        while size < max_bytes:
            try:
                data = self._ssl.read(max_bytes - size)
            except ssl.SSLWantReadError:
                if nowait is None or self._receiving.locked():
                    break
                try:
                    more = nowait(RECEIVE_SIZE)
                except Exception:  # a reset stream: the next read raises it
                    break
                if more is None:  # nothing more yet
                    break
                if not more:  # the end: the next read meets it
                    self._in.write_eof()
                    break
                self._in.write(more)
                continue
            except ssl.SSLError:  # the close, or a bad record: the next read meets it
                break
            if not data:
                break
            parts.append(data)
            size += len(data)
        return first if len(parts) == 1 else b"".join(parts)

    async def _retry(self, step: Callable[[], T], eof: T | None = None) -> T:
        while True:
            want_read = False
            try:
                result = step()
            except ssl.SSLWantReadError:
                want_read = True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                if eof is None:
                    raise TLSFailed("the other end closed during the TLS handshake") from None
                return eof
            except ssl.SSLError as exc:
                await self._flush()  # the alert, so the other end learns why
                raise TLSFailed(f"TLS failed: {exc.reason or exc}") from None
            except ssl.CertificateError as exc:
                await self._flush()
                raise TLSFailed(f"TLS failed: {exc}") from None
            await self._flush()
            if not want_read:
                return result
            async with self._receiving:
                if self._in.pending:
                    continue  # another caller fed it meanwhile
                data = await self._inner.receive_some(RECEIVE_SIZE)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()

    async def _flush(self) -> None:
        async with self._sending:
            data = self._out.read()
            if data:
                await self._inner.send_all(data)
