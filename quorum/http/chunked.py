"""Reading a chunked body fast (RFC 9112, section 7.1): the whole chunks a read starts with,
checked and joined at C speed; what is left is for the caller's loop, chunk by chunk."""

from __future__ import annotations

from quorum.errors import HttpProtocolError


def whole_chunks(data: bytes, pos: int, end: int) -> tuple[bytes, int] | None:
    """The bodies of the whole non-empty chunks that ``data[pos:end]`` starts with, joined,
    and where they end; None when it starts with none. What follows them (the last chunk
    and trailers, a chunk cut short by the read, a size with an extension, a chunk with a
    CRLF inside) is left to the caller's loop, which parses it chunk by chunk.

    One ``split`` and a few ``map`` calls check every chunk's size against its body at C
    speed, where a loop in Python costs about a microsecond per chunk: the hot case is a
    burst of an SSE stream's events, often ending with the stream's last chunk."""
    parts = data[pos:end].split(b"\r\n")
    # A size and its body are a whole chunk only when a CRLF follows the body.
    pairs = (len(parts) - 1) // 2
    if not pairs:
        return None
    sizes = parts[0 : 2 * pairs : 2]
    bodies = parts[1 : 2 * pairs : 2]
    lengths = list(map(len, bodies))
    wanted = list(map(b"%x".__mod__, lengths))
    whole = _agreeing(sizes, wanted, lengths.index(0) if 0 in lengths else pairs)
    if not whole:
        return None
    if whole < pairs:
        del bodies[whole:], sizes[whole:], lengths[whole:]
    used = sum(map(len, sizes)) + sum(lengths) + 4 * whole
    return b"".join(bodies), pos + used


def _agreeing(sizes: list[bytes], wanted: list[bytes], limit: int) -> int:
    """How many of the first ``limit`` sizes are, as written, the lengths of their bodies
    (all of them, but for a size in capitals, an extension or a CRLF inside a chunk)."""
    if sizes[:limit] == wanted[:limit]:
        return limit
    return next(
        i for i, (size, want) in enumerate(zip(sizes, wanted, strict=False)) if size != want
    )


def chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip(b" \t")
    if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
        raise HttpProtocolError(f"bad chunk size: {line[:20]!r}")
    return int(size, 16)
