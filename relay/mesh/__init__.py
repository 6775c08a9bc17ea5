"""Several relays serving the same clusters, joined through NATS (DESIGN.md, "Growing past
one relay"). No state lives in one relay alone: the store is shared (PostgreSQL), and
what is only in memory (which relay holds which node's tunnel) is broadcast here.

Rules:

- **Presence and location** (``directory``): every relay announces on
  ``<prefix>.presence`` each node that says hello or heartbeats on its tunnel,
  each departure, and every ``ALIVE_EVERY_S`` that it is alive. Every relay
  keeps a ``Directory`` of the nodes the others hold: the latest relay to
  announce a node online holds it; an offline counts only from its holder; a
  relay silent for ``RELAY_EXPIRES_S`` holds nothing. A node on this relay's
  own tunnel always wins over the directory.
- **Stream hand-off** (``peers``): between two relays runs one tunnel
  connection (``quorum.protocol.Connection`` through a ``quorum.link.Pump``)
  whose frames are NATS messages on ``<prefix>.mesh.<to>.<from>.<session>`` (one
  over 63 KiB in pieces between relays that both join them: a message stays under
  64 KiB, far cheaper for NATS). A session says which of the peer's it answers, so
  each connection takes exactly one peer session, from its start (``sessions``). A
  stream for a node another relay holds is opened on that connection, tagged
  with its cluster and node (``wire``); the relay holding the node joins it to
  the node's tunnel with a ``relay.pipes.Pipe``. So the tunnel's credit flow
  control holds across the hop: a slow reader stops its writer, a relay holds
  at most one window per stream direction. A relay opens a handed-off stream
  only on its own nodes' tunnels, never onward: at most one relay-to-relay hop.
- **Removals** are broadcast (``<prefix>.drop``): every relay closes the
  removed node's tunnel if it holds it. A node that proved its key is
  announced as bound: no relay lets a connection without a proof take its id.
  API keys are read from the shared store at each request; when credentials
  of a cluster stop counting (a key revoked, a member removed, a user disabled),
  ``revocations`` on ``<prefix>.revoke`` has every relay tell its nodes of that
  cluster to drop their cached key checks, or close their tunnels when the
  cluster's owner was disabled.

``wire``, ``sessions``, ``directory`` and ``handoffs`` are pure; ``bus`` is the thin NATS adapter;
``connections`` runs the relay-to-relay connections over it; ``mesh`` joins them to the hub.
"""
