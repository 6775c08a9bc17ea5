"""What relays say to each other, as values: subjects, announcements and tagged heads.
Pure: no I/O, no clock of its own. (Which session of a peer's a frame belongs to:
``sessions``.)

Announcements are small JSON objects on ``<prefix>.presence``:

- ``{"t": "node", "relay", "cluster", "presence": {...}, "seen", "bound", "fp",
  "caps"}``: a node this relay holds said hello or heartbeat
  (``presence.online``), or left it (``online`` false); ``seen`` is its last
  heartbeat (the relay's wall clock); ``bound``: it proved its key, so its id
  is bound to that key (every relay then refuses that id to a connection
  without a proof); ``fp``: that key's fingerprint (or null), ``caps``: what its
  hello said it can do (another relay's public ``/v1`` reaches it in TLS when it
  serves ``relay-hop``, checking ``fp`` against the store's binding first).
- ``{"t": "alive", "relay"}``: the relay lives (every ``ALIVE_EVERY_S``);
- ``{"t": "hello", "relay"}``: a relay started: the others announce their nodes again;
- ``{"t": "draining", "relay"}``: a relay drains (SIGTERM): its nodes move to
  other relays while the streams running through it finish there;
- ``{"t": "gone", "relay"}``: a relay stopped: it holds nothing any more.

Removals are ``{"t": "drop", "relay", "cluster", "node", "why"}`` on ``<prefix>.drop``.
Anything malformed is refused with ``RemoteProtocolError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from quorum.errors import RemoteProtocolError
from quorum.protocol import Presence, RequestHead

CLUSTER_HEADER = "X-Quorum-Mesh-Cluster"
NODE_HEADER = "X-Quorum-Mesh-Node"
_TAGS = {CLUSTER_HEADER.lower(), NODE_HEADER.lower()}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # as a hello's (quorum.protocol)
_MAX_CAPABILITIES = 64
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")


def check_prefix(prefix: str) -> str:
    """A subject prefix: one to four dot-separated tokens; else ValueError."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"a NATS subject prefix is dot-separated tokens, not {prefix!r}")
    return prefix


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects of one mesh (relays sharing ``prefix``)."""

    prefix: str

    @property
    def presence(self) -> str:
        return f"{self.prefix}.presence"

    @property
    def drop(self) -> str:
        return f"{self.prefix}.drop"

    def probe(self, relay: str) -> str:
        """Where ``relay`` answers requests while it lives (NATS answers "no responders"
        at once for a relay whose connection is gone)."""
        return f"{self.prefix}.probe.{relay}"

    def inbox(self, relay: str) -> str:
        """Where every peer's frames to ``relay`` arrive (a wildcard subscription)."""
        return f"{self.prefix}.mesh.{relay}.*.*"

    def frames(self, to: str, sender: str, session: int) -> str:
        return f"{self.prefix}.mesh.{to}.{sender}.{session}"

    def parse_frames(self, subject: str) -> tuple[str, int]:
        """(sender, session) of a frame's subject."""
        parts = subject.rsplit(".", 2)
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[1]) or not parts[2].isdigit():
            raise RemoteProtocolError(f"not a mesh frame subject: {subject[:100]!r}")
        return parts[1], int(parts[2])


@dataclass(frozen=True, slots=True)
class NodeAnnounced:
    relay: str
    cluster_id: str
    presence: Presence
    seen: float
    bound: bool = False
    fingerprint: str | None = None
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RelayAlive:
    relay: str


@dataclass(frozen=True, slots=True)
class RelayHello:
    relay: str


@dataclass(frozen=True, slots=True)
class RelayDraining:
    relay: str


@dataclass(frozen=True, slots=True)
class RelayGone:
    relay: str


@dataclass(frozen=True, slots=True)
class NodeDropped:
    relay: str
    cluster_id: str
    node_id: str
    why: str


Announcement = NodeAnnounced | RelayAlive | RelayHello | RelayDraining | RelayGone | NodeDropped


def encode(message: Announcement) -> bytes:
    body: dict[str, Any]
    match message:
        case NodeAnnounced(relay, cluster, presence, seen, bound, fingerprint, capabilities):
            body = {
                "t": "node",
                "relay": relay,
                "cluster": cluster,
                "presence": json.loads(presence.encode()),
                "seen": seen,
                "bound": bound,
                "fp": fingerprint,
                "caps": list(capabilities),
            }
        case NodeDropped(relay, cluster, node, why):
            body = {"t": "drop", "relay": relay, "cluster": cluster, "node": node, "why": why}
        case RelayAlive(relay):
            body = {"t": "alive", "relay": relay}
        case RelayHello(relay):
            body = {"t": "hello", "relay": relay}
        case RelayDraining(relay):
            body = {"t": "draining", "relay": relay}
        case RelayGone(relay):
            body = {"t": "gone", "relay": relay}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes) -> Announcement:
    try:
        body = json.loads(data)
        kind, relay = body["t"], body["relay"]
        if not isinstance(relay, str) or not _TOKEN.fullmatch(relay):
            raise ValueError("relay")
        match kind:
            case "node":
                seen, bound = body["seen"], body.get("bound", False)
                if not isinstance(seen, int | float) or not isinstance(body["cluster"], str):
                    raise ValueError("node")
                if not isinstance(bound, bool):
                    raise ValueError("bound")
                presence = Presence.decode(json.dumps(body["presence"]).encode())
                fingerprint, capabilities = _key_of(body)
                return NodeAnnounced(
                    relay, body["cluster"], presence, float(seen), bound, fingerprint, capabilities
                )
            case "drop":
                fields = (body["cluster"], body["node"], body["why"])
                if not all(isinstance(f, str) for f in fields):
                    raise ValueError("drop")
                return NodeDropped(relay, *fields)
            case "alive":
                return RelayAlive(relay)
            case "hello":
                return RelayHello(relay)
            case "draining":
                return RelayDraining(relay)
            case "gone":
                return RelayGone(relay)
    except (ValueError, KeyError, TypeError, RemoteProtocolError) as exc:
        raise RemoteProtocolError(f"a malformed mesh announcement ({exc})") from None
    raise RemoteProtocolError(f"an unknown mesh announcement {str(kind)[:20]!r}")


def _key_of(body: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """A node announcement's key fingerprint and capabilities (absent from older relays')."""
    fingerprint, capabilities = body.get("fp"), body.get("caps", [])
    if fingerprint is not None and (
        not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint)
    ):
        raise ValueError("fp")
    if (
        not isinstance(capabilities, list)
        or len(capabilities) > _MAX_CAPABILITIES
        or not all(isinstance(c, str) and _CAPABILITY.fullmatch(c) for c in capabilities)
    ):
        raise ValueError("caps")
    return fingerprint, tuple(capabilities)


def tag(head: RequestHead, cluster_id: str, node_id: str) -> RequestHead:
    """``head`` as it crosses to the relay holding ``node_id``: where it goes."""
    headers = (*untagged(head).headers, (CLUSTER_HEADER, cluster_id), (NODE_HEADER, node_id))
    return replace(head, headers=headers)


def untagged(head: RequestHead) -> RequestHead:
    return replace(head, headers=tuple(h for h in head.headers if h[0].lower() not in _TAGS))


def destination(head: RequestHead) -> tuple[str, str] | None:
    """(cluster, node) a handed-off stream is for, or None if it does not say."""
    found = {k.lower(): v for k, v in head.headers if k.lower() in _TAGS}
    cluster, node = found.get(CLUSTER_HEADER.lower()), found.get(NODE_HEADER.lower())
    return None if not cluster or not node else (cluster, node)
