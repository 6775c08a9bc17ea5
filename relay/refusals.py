"""The node connections the relay refused lately, for the dashboard: bounded, in memory.

A refusal is kept per (cluster, node id, key fingerprint): the address it last
came from, when it came first and last, how many times, and why. The record
holds at most ``MAX_KEPT`` entries; the one refused longest ago goes first. It
lives in this process (a restarted relay starts empty; the log keeps every
refusal). Nothing here is a secret: node ids and key fingerprints are public.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

MAX_KEPT = 200


@dataclass(frozen=True, slots=True)
class Refusal:
    cluster_id: str
    node_id: str
    fingerprint: str | None
    """The key it presented (SHA-256 of its public key); None: it presented no certificate."""
    remote: str
    why: str
    first_at: float
    last_at: float
    count: int = 1


class Refusals:
    def __init__(self, clock: Callable[[], float] = time.time, max_kept: int = MAX_KEPT) -> None:
        if max_kept < 1:
            raise ValueError("max_kept >= 1")
        self._clock = clock
        self._max = max_kept
        self._kept: OrderedDict[tuple[str, str, str | None], Refusal] = OrderedDict()

    def add(
        self, cluster_id: str, node_id: str, fingerprint: str | None, remote: str, why: str
    ) -> Refusal:
        now = self._clock()
        key = (cluster_id, node_id, fingerprint)
        seen = self._kept.pop(key, None)
        made = (
            Refusal(cluster_id, node_id, fingerprint, remote, why, now, now)
            if seen is None
            else replace(seen, remote=remote, why=why, last_at=now, count=seen.count + 1)
        )
        self._kept[key] = made
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)
        return made

    def latest(self, cluster_id: str | None = None) -> list[Refusal]:
        """The refusals kept (of one cluster), most recent first."""
        return [
            r
            for r in reversed(self._kept.values())
            if cluster_id is None or r.cluster_id == cluster_id
        ]

    def __len__(self) -> int:
        return len(self._kept)
