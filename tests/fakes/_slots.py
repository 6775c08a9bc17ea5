"""SlotPool: how many requests an engine works on at once, and who waits for the next slot.

Rules (every fake's capacity model is built from these):
- a pool has ``size`` slots (None: unlimited); a request either takes a free slot at once
  or waits in line, strictly first come first served;
- a finished request hands its slot straight to the first in line (the slot never looks
  free in between, so nobody can overtake the line);
- a waiter whose handler is cancelled (client gone, fake stopped) leaves the line; if it
  was handed a slot in the same instant, the slot goes on to the next in line.

A pool lives on the fake's event loop: ``acquire`` and ``release`` are called there only.
``running`` and ``waiting`` may be read from any thread; every change is announced on the
fake's ``threading.Condition`` so a test can wait for a state instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SlotPool:
    def __init__(self, size: int | None, changed: threading.Condition) -> None:
        if size is not None and size < 1:
            raise ValueError(f"a pool needs at least one slot, not {size}")
        self._size = size
        self._changed = changed
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def running(self) -> int:
        """Requests holding a slot."""
        with self._changed:
            return self._running

    @property
    def waiting(self) -> int:
        """Requests in line for a slot."""
        with self._changed:
            return sum(1 for w in self._waiters if not w.done())

    @property
    def free(self) -> bool:
        """Whether a request arriving now would get a slot without waiting."""
        with self._changed:
            return self._has_room() and not self._waiters

    def _has_room(self) -> bool:
        return self._size is None or self._running < self._size

    async def acquire(self) -> None:
        with self._changed:
            if self._has_room() and not self._waiters:
                self._running += 1
                self._changed.notify_all()
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._changed.notify_all()
        try:
            await waiter
        except asyncio.CancelledError:
            with self._changed:
                handed = waiter.done() and not waiter.cancelled()
                if waiter in self._waiters:  # a release may already have skipped it
                    self._waiters.remove(waiter)
                self._changed.notify_all()
            if handed:
                self.release()
            raise

    def release(self) -> None:
        with self._changed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot changes hands; running is unchanged
                    break
            else:
                self._running -= 1
            self._changed.notify_all()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()
