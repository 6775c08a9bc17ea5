"""A node-side and a relay-side Connection joined by an in-memory link.

Frames move only when a test says so, which is how tests model latency:
frames queued on one side have not "arrived" until ``deliver`` is called.
"""

from __future__ import annotations

from quorum.protocol import (
    Connection,
    DataReceived,
    Event,
    Limits,
    RequestHead,
    ResponseHead,
    Role,
)

START = 1000.0
HEAD = RequestHead(
    "POST",
    "/v1/chat/completions",
    (("content-type", "application/json"),),
    node="studio",
    model="qwen3",
    deadline_ms=30_000,
)
OK = ResponseHead(200, (("content-type", "text/event-stream"),))


class Pair:
    """Both ends of one tunnel. ``now`` is the injected clock for ``receive_frame``."""

    def __init__(
        self,
        node_limits: Limits | None = None,
        relay_limits: Limits | None = None,
        *,
        handshake: bool = True,
    ) -> None:
        self.node = Connection(Role.NODE, node_limits)
        self.relay = Connection(Role.RELAY, relay_limits)
        self.now = START
        if handshake:
            self.node.send_hello("studio", ["presence"])
            self.relay.send_hello("relay-1")
            self.exchange()

    def peer(self, conn: Connection) -> Connection:
        return self.relay if conn is self.node else self.node

    def deliver(self, sender: Connection) -> list[Event]:
        """Move every frame ``sender`` has queued to its peer; return the peer's events."""
        return self._move(sender)[1]

    def exchange(self) -> tuple[list[Event], list[Event]]:
        """Deliver both ways until the link is quiet; return (node's, relay's) events."""
        node_events: list[Event] = []
        relay_events: list[Event] = []
        while True:
            to_relay, got_relay = self._move(self.node)
            to_node, got_node = self._move(self.relay)
            relay_events += got_relay
            node_events += got_node
            if not to_relay and not to_node:
                return node_events, relay_events

    def _move(self, sender: Connection) -> tuple[int, list[Event]]:
        receiver = self.peer(sender)
        frames = sender.data_to_send()
        events: list[Event] = []
        for frame in frames:
            events += receiver.receive_frame(frame, self.now)
        return len(frames), events


def body(events: list[Event], stream_id: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id
    )


def consume_all(conn: Connection, events: list[Event]) -> None:
    """Act as an app that hands on every received byte at once."""
    for event in events:
        if isinstance(event, DataReceived):
            conn.consumed(event.stream_id, len(event.data))
