"""The streams this relay handed to other relays, per node, and when they are cut.

A stream for a node another relay holds goes over the connection to that relay
(``Mesh.open``); it is kept here under its node until it closes. When the node moves to
another relay (a node has one tunnel: the old one is dead), the streams handed to the old
one are cut, unless that relay drains (they finish there). When a relay is lost, each
stream handed to it is cut too: ``REFUSED`` if it had no answer yet (its caller tries
another holder at once), ``PEER_GONE`` after. A cut stream that is one side of a pipe
tells its listener, so the other side hears it too. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Container

from quorum.link import TunnelStream
from quorum.protocol import ResetCode

Key = tuple[str, str]  # (cluster id, node id)


class HandOffs:
    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: dict[Key, list[tuple[str, TunnelStream]]] = {}

    def add(self, cluster_id: str, node_id: str, relay: str, stream: TunnelStream) -> None:
        """``stream`` for ``node_id`` went to ``relay`` (those that closed are let go)."""
        key = (cluster_id, node_id)
        live = [(r, s) for r, s in self._streams.get(key, ()) if not s.closed]
        self._streams[key] = [*live, (relay, stream)]

    def moved(self, cluster_id: str, node_id: str, relay: str, draining: Container[str]) -> None:
        """``node_id`` is now at ``relay``: cut the streams handed to it elsewhere, unless
        the relay they went to is one of ``draining``."""
        key = (cluster_id, node_id)
        handed = self._streams.pop(key, None)
        for where, stream in handed or ():
            if where != relay and where not in draining:
                _cut(stream, ResetCode.NO_ROUTE, "the node moved to another relay")
            elif not stream.closed:
                self._streams.setdefault(key, []).append((where, stream))

    def lost(self, relay: str) -> None:
        """``relay`` is gone: cut every stream handed to it."""
        for key, handed in list(self._streams.items()):
            kept = []
            for where, stream in handed:
                if where != relay:
                    kept.append((where, stream))
                elif not stream.closed:
                    refused = stream.response_head is None
                    code = ResetCode.REFUSED if refused else ResetCode.PEER_GONE
                    _cut(stream, code, f"relay {relay} is gone")
            if kept:
                self._streams[key] = kept
            else:
                del self._streams[key]


def _cut(stream: TunnelStream, code: ResetCode, why: str) -> None:
    stream.reset(code, why)
    if stream.listener is not None:  # a pipe: its other side hears it too
        stream.listener(stream)
