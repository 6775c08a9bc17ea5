"""What one relay tells the others when credentials of clusters stop counting. Pure.

On ``<prefix>.revoke``, one small JSON object::

    {"t": "revoke", "relay", "clusters": [cluster id, ...], "why", "suspend"}

Every other relay then does what the sender did on its own nodes
(``relay.hub.Hub.revoke``): tells each node of those clusters it holds to drop its
cached key checks (a key revoked, a member removed, a user disabled or enabled),
or, with ``suspend``, closes those nodes' tunnels (the clusters' owner was
disabled). Nothing here names a key or a user: only which clusters, and why in
words for the log. Anything malformed is ``RemoteProtocolError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from quorum.errors import RemoteProtocolError

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CLUSTERS = 10_000
MAX_WHY = 1024


def subject(prefix: str) -> str:
    return f"{prefix}.revoke"


@dataclass(frozen=True, slots=True)
class ClustersRevoked:
    relay: str
    clusters: tuple[str, ...]
    why: str
    suspend: bool = False


def encode(message: ClustersRevoked) -> bytes:
    body = {
        "t": "revoke",
        "relay": message.relay,
        "clusters": list(message.clusters),
        "why": message.why[:MAX_WHY],
        "suspend": message.suspend,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes) -> ClustersRevoked:
    try:
        body = json.loads(data)
        relay, clusters, why = body["relay"], body["clusters"], body["why"]
        suspend = body.get("suspend", False)
        if body["t"] != "revoke" or not isinstance(relay, str) or not _TOKEN.fullmatch(relay):
            raise ValueError("relay")
        if not isinstance(clusters, list) or len(clusters) > MAX_CLUSTERS:
            raise ValueError("clusters")
        if not all(isinstance(c, str) and 0 < len(c) <= 256 for c in clusters):
            raise ValueError("clusters")
        if not isinstance(why, str) or len(why) > MAX_WHY or not isinstance(suspend, bool):
            raise ValueError("why")
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteProtocolError(f"a malformed revocation from the mesh ({exc})") from None
    return ClustersRevoked(relay, tuple(clusters), why, suspend)
