"""Failed authentication attempts, limited per source with a token bucket (node and relay).

Each failed attempt takes one token from the source's bucket, which refills
at ``rate`` tokens per second up to ``burst``. A source whose bucket is empty
has its *failures* answered with 429 and ``Retry-After`` instead of 401.
A valid credential is never refused because of failures from the same place
(another client behind the same NAT or reverse proxy): callers check the
credential first, and consult the bucket only for one that failed. Secrets
are long random values, so this bounds load, not guessing odds. Successful
attempts cost nothing. A source is whatever the caller keys it by: an
address and a credential kind, a cluster and a client. The bucket arithmetic
is a pure function of an immutable value and an injected ``now``;
``FailureLimiter`` only keeps one bucket per source (bounded: full buckets
carry no information and are dropped first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


def refill(bucket: Bucket | None, now: float, rate: float, burst: float) -> Bucket:
    """The bucket at ``now``; a clock that goes backwards counts as no time passing."""
    if bucket is None:
        return Bucket(burst, now)
    elapsed = max(0.0, now - bucket.updated)
    return Bucket(min(burst, bucket.tokens + elapsed * rate), max(now, bucket.updated))


def take(bucket: Bucket | None, now: float, rate: float, burst: float) -> tuple[bool, Bucket]:
    """Take one token if there is one: ``(True, after)``; else ``(False, unchanged)``."""
    current = refill(bucket, now, rate, burst)
    if current.tokens >= 1.0:
        return True, Bucket(current.tokens - 1.0, current.updated)
    return False, current


def wait_s(bucket: Bucket | None, now: float, rate: float, burst: float) -> float:
    """Seconds until the bucket holds a whole token again (0 when it does now)."""
    current = refill(bucket, now, rate, burst)
    return 0.0 if current.tokens >= 1.0 else (1.0 - current.tokens) / rate


class FailureLimiter:
    """One bucket per address; ``retry_after(addr)`` before checking, ``failed(addr)`` after."""

    def __init__(
        self,
        *,
        rate: float = 0.2,
        burst: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1 or max_addresses < 1:
            raise ValueError("rate > 0, burst >= 1 and max_addresses >= 1 are required")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._max = max_addresses
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds this address must wait before trying again, or None: go ahead."""
        wait = wait_s(self._buckets.get(address), self._clock(), self.rate, self.burst)
        return math.ceil(wait) if wait > 0 else None

    def failed(self, address: str) -> None:
        _, bucket = take(self._buckets.get(address), self._clock(), self.rate, self.burst)
        self._buckets[address] = bucket
        self._buckets.move_to_end(address)
        if len(self._buckets) > self._max:
            self._prune()

    def _prune(self) -> None:
        now = self._clock()
        for address, bucket in list(self._buckets.items()):
            if refill(bucket, now, self.rate, self.burst).tokens >= self.burst:
                del self._buckets[address]
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def client_address(remote: str | None, forwarded_for: str | None, trust_forwarded: bool) -> str:
    """The address to rate-limit: the socket's peer, or behind a trusted reverse proxy
    the address that proxy appended last to ``X-Forwarded-For``."""
    if trust_forwarded and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return remote or "unknown"
