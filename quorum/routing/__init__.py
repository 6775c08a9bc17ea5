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
- Order, each key breaking the ties of the one before:
  1. a holder with a free slot (in flight below its concurrency limit) before
     one at its limit, so a full first candidate means every one is full and
     the request queues. A request whose body is over the replay limit cannot
     fail over, so it does not probe a half-open holder while a closed one is
     free (the half-open one comes after the free ones);
  2. a holder with the model loaded (or an engine that does not say, as vLLM
     and llama.cpp, whose models are always loaded) before one that reports
     it must load it (``loaded=False``);
  3. route cost: local, then LAN, then relay;
  4. score = recent time to first byte x (in flight + 1) / limit
     x (1 + consecutive failures), in tiers: a holder within a factor
     ``TIER_FACTOR`` (2) of the best score of its group (same keys 1-3) is in
     tier 0, within 2^2 tier 1, and so on. Latency noise between equal
     holders therefore never orders them, while a holder twice as slow, twice
     as loaded or with a recent failure yields to a better one. A holder with
     no fresh latency counts as the best known in its group;
  5. the holder that started a request least recently first (rotation:
     ``Health.seq``), so equal holders take turns;
  6. node name, node id, service and type, so the order is total.
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
from quorum.routing.choose import TIER_FACTOR, RouteRequest, choose, next_reopen
from quorum.routing.endpoints import ENDPOINTS, BodyKind, Endpoint
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
    Cooling,
    Health,
    HealthPolicy,
    HolderHealth,
    HolderKey,
    abandoned,
    available,
    circuit,
    cooling,
    finished,
    key_of,
    limit_of,
    released,
    reserved,
    retain,
    set_limits,
    started,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ENDPOINTS",
    "MAX_ATTEMPTS",
    "NO_ALIASES",
    "REPLAY_LIMIT_BYTES",
    "TIER_FACTOR",
    "Action",
    "Admission",
    "BodyKind",
    "Circuit",
    "Cooling",
    "Endpoint",
    "FailoverPolicy",
    "Health",
    "HealthPolicy",
    "HolderHealth",
    "HolderKey",
    "Outcome",
    "QueuePolicy",
    "RouteRequest",
    "Step",
    "Verdict",
    "abandoned",
    "admission",
    "available",
    "choose",
    "circuit",
    "cooling",
    "estimated_wait_s",
    "finished",
    "is_failure",
    "key_of",
    "limit_of",
    "listed",
    "next_reopen",
    "next_step",
    "outcome_of_status",
    "released",
    "reserved",
    "resolve_alias",
    "retain",
    "retry_after",
    "set_limits",
    "started",
]
