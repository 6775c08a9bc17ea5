"""Pure routing: which holders may serve a request, best first.

Rules (everything that decides a route lives in this package):
- The endpoint decides the service types that may serve it (``ENDPOINTS``):
  a chat only goes to an ``llm`` service, a transcription only to an ``stt``
  one, embeddings to an ``embedding`` service or an ``llm`` one (most LLM
  servers also embed). Model names match exactly, case included.
- No holder of the name at all: ``ModelNotFound`` (404). Holders of the name
  but none of an accepted type: ``ModelNotFound`` too, saying which type it is.
- A request that was already forwarded once (hop header) is only served by
  this node's own engines, so no loop is possible.
- Only online holders are returned; if the model is known but none is online,
  ``NoReachableHolder`` (503).
- Order: route cost (local, lan, relay), then a holder with the model already
  loaded before one that may have to load it, then node name and service name
  so the order is the same for the same snapshot.
- No I/O, no clock reads, no awaits.
"""

from quorum.routing.choose import RouteRequest, choose
from quorum.routing.endpoints import ENDPOINTS, BodyKind, Endpoint

__all__ = ["ENDPOINTS", "BodyKind", "Endpoint", "RouteRequest", "choose"]
