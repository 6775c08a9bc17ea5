"""Large blocks go back to the system when freed, so a node's or relay's memory returns to its
baseline after a burst of large request bodies.

glibc serves blocks of 128 KiB and more with their own mappings, which ``free`` unmaps, but
after freeing such a block it raises that threshold (up to 32 MiB), so later large blocks
(request bodies of several megabytes, the buffers that grow while they are read, what
parsing them builds) come from the heap. Interleaved with small blocks that stay, they leave
the heap fragmented and its pages resident for good: a burst of 8 MB bodies left a relay
150 MiB above its baseline. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also
turns the raising off) keeps every block of ``THRESHOLD`` or more in its own mapping, and
:class:`LargeBodies` frees what failed requests keep in reference cycles and returns the
heap's free pages after large bodies.

Elsewhere (musl, macOS, Windows) this does nothing: those allocators differ, and none of
them raises a threshold this way.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
import warnings
from collections.abc import AsyncIterable, Callable, Iterator
from contextlib import contextmanager

from quorum.errors import InvalidRequest

log = logging.getLogger("quorum.memory")

THRESHOLD = 256 * 1024
"""Blocks this large or larger get a mapping of their own (glibc's default starts at 128 KiB)."""
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
LARGE_BYTES = 1 << 20
"""A request body at least this large counts as large (:class:`LargeBodies`)."""
MIN_INTERVAL_S = 0.5
"""At most one trim per this many seconds (a trim walks the heap: milliseconds)."""


def return_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    log.debug("large blocks are mapped on their own: %s", done)
    return done


def _glibc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def _collect() -> None:
    """A full collection. What it finds unclosed (a socket someone dropped) would warn from
    its finaliser here, at a moment that has nothing to do with it: those warnings are the
    natural collections' to give, not this forced one's (ResourceWarning is ignored by
    default anyway; a test run that makes warnings errors would otherwise fail whichever
    test sent a large body)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


class LargeBodies:
    """Counts large request bodies as they are released; then, at most every
    ``MIN_INTERVAL_S``, collects garbage and asks glibc to hand the heap's free pages back.

    The collection matters most: a request that failed keeps its body in a reference cycle
    (the request, its handler's frames and the exception's traceback), which only a full
    collection frees, and a quiet process may not run one for a long time; 300 MiB of 8 MB
    bodies were still held after a flood of bad ones. The trim (``malloc_trim``) returns
    what reading and parsing left in the heap below ``THRESHOLD``.
    """

    def __init__(
        self,
        trim: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] | None = None,
    ) -> None:
        self._trim = trim if trim is not None else _glibc_trim()
        self._clock = clock
        self._collect = collect if collect is not None else _collect
        self._last = float("-inf")
        self._owed = False
        self._scheduled = False
        self.settled = 0

    @contextmanager
    def holding(self, size: int | None) -> Iterator[None]:
        """Around a request whose body is ``size`` bytes (None: unknown, not counted)."""
        try:
            yield
        finally:
            if size is not None and size >= LARGE_BYTES:
                self._owed = True
                self.settle()

    def settle(self) -> None:
        """Collect and trim if a large body was released since the last time; within
        ``MIN_INTERVAL_S`` of that, once the interval has passed (under a flood of large
        bodies, twice a second at most)."""
        self._scheduled = False
        if not self._owed:
            return
        wait = self._last + MIN_INTERVAL_S - self._clock()
        if wait > 0:
            self._later(wait)
            return
        self._last, self._owed = self._clock(), False
        self._collect()
        if self._trim is not None:
            self._trim()
        self.settled += 1
        log.debug("collected and gave free memory back after large request bodies")

    def _later(self, wait: float) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a pure test): the next release settles
            return
        self._scheduled = True
        loop.call_later(wait, self.settle)


PROCESS = LargeBodies()
"""The process's own: the heap it trims is the whole process's, whoever read the body."""


async def read_sized(chunks: AsyncIterable[bytes], declared: int) -> bytes:
    """A body of ``declared`` bytes (its ``Content-Length``, within the limit already), held
    once: read straight into a buffer of that size, not into a growing one copied again at
    the end. 400 if the chunks come to more or fewer bytes than declared."""
    buffer = bytearray(declared)
    view = memoryview(buffer)
    got = 0
    async for chunk in chunks:
        end = got + len(chunk)
        if end > declared:
            raise InvalidRequest("The request body is longer than its Content-Length.")
        view[got:end] = chunk
        got = end
    if got != declared:
        raise InvalidRequest(
            f"The request body ended after {got} of its {declared} bytes (Content-Length)."
        )
    # A bytearray reads as bytes everywhere a body goes (parsers, sockets, TLS).
    return buffer  # type: ignore[return-value]
