"""Pure routing: which holders may serve a request, best first.

Rules (everything that decides a route lives in this package; health
transitions in :mod:`.health`, retries in :mod:`.failover`, the wait queue in
:mod:`.admission`, aliases in :mod:`.aliases`, each with its own rules):
- The endpoint decides the service types that may serve it (``ENDPOINTS``):
  a chat only goes to an ``llm`` service, a transcription only to an ``stt``
  one, embeddings to an ``embedding`` service or an ``llm`` one (most LLM
  servers also embed). Model names match exactly, case included, after an
  alias is resolved (one step: ``aliases.resolve_alias``).
- No holder of the name at all: ``ModelNotFound`` (404). Holders of the name
  but none of an accepted type: ``ModelNotFound`` too, saying which type it is.
- A request that was already forwarded once (hop header) is only served by
  this node's own engines, so no loop is possible.
- Only online holders are returned; if the model is known but none is online,
  ``NoReachableHolder`` (503).
- A cooling holder (circuit open, or its one half-open probe running) is never
  returned; if every online holder is cooling, ``NoReachableHolder`` saying
  when the first may be tried again. A holder whose cooldown ran out
  (half-open) is returned; the request that starts on it is its probe.
- Order: by expected completion time (:mod:`.estimate`: wait for a slot,
  run at the holder's learned speed, route, loading the model), each key
  breaking the ties of the one before:
  1. a request whose body is over the replay limit cannot fail over, so it
     does not probe a half-open holder: those come after the others;
  2. expected completion: a holder at its limit whose expected completion
     (waiting included) is under the best free holder's by ``WAIT_MARGIN``
     (1.1) goes first, quickest first: waiting for it is quicker than
     starting elsewhere. Then the free holders within ``EQUAL_FACTOR`` (1.5)
     of the best free one, as equals (latency noise never orders equal
     holders; a holder twice as slow yields). Then the rest, quickest first.
     The requests waiting ahead at this node (``ahead``) drain through the
     full holders first, so a later waiter may start on a slower free holder
     while the first one waits for a faster holder;
  3. among equals, route cost: local, then LAN, then relay;
  4. the holder that started a request least recently first (rotation:
     ``Health.seq``), so equal holders take turns;
  5. node name, node id, service, type, loaded state and engine, so the order
     is total.
  The first candidate may be full: waiting for it is expected to be quicker
  than starting on any other (the request waits in the model's queue).
  A holder that must load the model (``loaded=False``) pays ``LOAD_S``, so a
  warm holder wins unless its queue is longer than a load.
- The same snapshot, health, request and ``now`` give the same order. No I/O,
  no clock reads, no awaits: time comes in as ``now``.
"""

from quorum.routing.admission import (
    Admission,
    QueuePolicy,
    Verdict,
    admission,
    estimated_wait_s,
    retry_after,
)
from quorum.routing.aliases import NO_ALIASES, listed, resolve_alias
from quorum.routing.capacity import NO_SPEED, Speed, learn
from quorum.routing.choose import EQUAL_FACTOR, WAIT_MARGIN, RouteRequest, choose, next_reopen
from quorum.routing.cooling import Cooling, cooling
from quorum.routing.endpoints import ENDPOINTS, BodyKind, Endpoint
from quorum.routing.estimate import LOAD_S, ROUTE_S, Estimate, estimate, known_run_s
from quorum.routing.failover import (
    MAX_ATTEMPTS,
    REPLAY_LIMIT_BYTES,
    Action,
    FailoverPolicy,
    Outcome,
    Step,
    is_failure,
    next_step,
    outcome_of_status,
)
from quorum.routing.health import (
    DEFAULT_LIMITS,
    Circuit,
    Health,
    HealthPolicy,
    HolderHealth,
    HolderKey,
    Report,
    abandoned,
    available,
    circuit,
    finished,
    key_of,
    limit_of,
    released,
    reported,
    reserved,
    retain,
    set_limits,
    started,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ENDPOINTS",
    "EQUAL_FACTOR",
    "LOAD_S",
    "MAX_ATTEMPTS",
    "NO_ALIASES",
    "NO_SPEED",
    "REPLAY_LIMIT_BYTES",
    "ROUTE_S",
    "WAIT_MARGIN",
    "Action",
    "Admission",
    "BodyKind",
    "Circuit",
    "Cooling",
    "Endpoint",
    "Estimate",
    "FailoverPolicy",
    "Health",
    "HealthPolicy",
    "HolderHealth",
    "HolderKey",
    "Outcome",
    "QueuePolicy",
    "Report",
    "RouteRequest",
    "Speed",
    "Step",
    "Verdict",
    "abandoned",
    "admission",
    "available",
    "choose",
    "circuit",
    "cooling",
    "estimate",
    "estimated_wait_s",
    "finished",
    "is_failure",
    "key_of",
    "known_run_s",
    "learn",
    "limit_of",
    "listed",
    "next_reopen",
    "next_step",
    "outcome_of_status",
    "released",
    "reported",
    "reserved",
    "resolve_alias",
    "retain",
    "retry_after",
    "set_limits",
    "started",
]
