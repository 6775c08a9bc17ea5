"""Which relay a node dials next, when it knows several (``relay.url`` and ``relay.urls``).

Several relays sharing one store and one NATS serve the same clusters, so any of
them will do. Rules, as a pure value: the node dials the first; it stays on the
relay it reached for as long as that connection lives; after a lost connection
or a failed dial it moves on to the next one in the list (round robin), within
the reconnect backoff (``quorum.protocol.backoff``: the first try after a loss
waits under a second). A relay that drains (SIGTERM) sends GOAWAY and closes
the tunnel once its streams are done: that is a loss, so the node moves too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


def relay_list(first: str, others: Sequence[str] = ()) -> tuple[str, ...]:
    """``first``, then ``others``, each once, in order."""
    return tuple(dict.fromkeys((first, *others)))


@dataclass(frozen=True, slots=True)
class RelayChoice:
    urls: tuple[str, ...]
    index: int = 0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a node needs at least one relay URL")

    @property
    def current(self) -> str:
        """The relay to dial now."""
        return self.urls[self.index % len(self.urls)]

    def moved_on(self) -> RelayChoice:
        """The connection to ``current`` was lost, or could not be made: the next one."""
        return replace(self, index=(self.index + 1) % len(self.urls))
