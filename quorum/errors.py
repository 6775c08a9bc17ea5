"""The one exception tree of Quorum (node, protocol and relay alike).

::

    QuorumError
    ├── ConfigError                 a config file, env var or flag is wrong; names the key
    ├── ApiError                    anything answered to an HTTP client in OpenAI's error shape
    │   ├── InvalidRequest          400 the body or a field is malformed
    │   ├── Unauthorized            401 missing or wrong credential
    │   ├── Forbidden               403 the credential may not do this
    │   ├── NotFound                404 unknown path
    │   ├── MethodNotAllowed        405 wrong HTTP method for the path
    │   ├── ModelNotFound           404 no service in the cluster holds this model (for this type)
    │   ├── BodyTooLarge            413 the request body is over the limit
    │   ├── UpstreamFailed          502 the engine or peer answered, but not usably
    │   │   └── StreamBroken        502 a tunnel stream was reset after its answer had started
    │   ├── NoReachableHolder       503 the model is known, but no holder can be reached now;
    │   │                               carries Retry-After
    │   │   ├── EngineUnreachable   503 the engine refused the connection
    │   │   │   └── EngineTimeout   503 the engine sent no response headers in time
    │   │   └── StreamRefused       503 a tunnel stream was refused before it was processed:
    │   │                               safe to try again, or another holder
    │   ├── Overloaded              503 queues are full; carries Retry-After
    │   └── RateLimited             429 too many failed attempts from this source lately
    ├── EngineError                 an engine's answer is unusable to its adapter (not HTTP)
    │   ├── EngineDown              nothing answers at the engine's address (refused, timed out)
    │   │   └── EngineSilent        it accepted the connection but sent no answer in time
    │   └── EmbeddedEngineError     the embedded llama.cpp engine is missing or failed to start
    ├── DiscoveryError              LAN discovery could not do what was asked
    │   ├── BadAdvert               a TXT record (ours or a peer's) is missing or has a bad field
    │   └── NoInterface             no network interface fits the configuration
    ├── HttpError                   the lean engine client's own failures (quorum.http;
    │   │                               mapped into ApiErrors in server/upstream.py)
    │   ├── HttpProtocolError       the engine's answer is not HTTP/1.1 it understands
    │   ├── ConnectionLost          the connection closed before the answer was complete
    │   └── ConnectTimeout          the engine did not accept the connection in time
    ├── ShipFailed                  usage records did not reach the relay: try again later
    │   └── ShipRefused             the relay refused the cluster token (401/403)
    ├── ShipRejected                the relay refused a usage batch as malformed: never again
    ├── StoreError                  the relay's store refused an operation, or is damaged
    ├── AutostartError              the start-at-login entry could not be written or removed
    ├── PeerError                   a peer node did not give a usable answer
    │   └── PeerRefused             the peer's address refused the connection (it is gone)
    ├── TunnelError                 the tunnel (a node's WebSocket to the relay) cannot carry on
    │   ├── TransportClosed         the socket under a tunnel closed, cleanly or not
    │   └── AuthRefused             the relay refused the cluster credential (401/403):
    │                                   reconnecting cannot help
    └── ProtocolError               the tunnel protocol was broken
        ├── LocalProtocolError      we were asked to do something the protocol forbids
        └── RemoteProtocolError     the peer sent something the protocol forbids

Third-party exceptions (aiohttp, websockets, zeroconf, pydantic) are translated
into this tree once, at the module that calls the library; nothing above the
adapters sees them.
"""

from __future__ import annotations

from typing import Any


class QuorumError(Exception):
    """Root of every error Quorum raises on purpose."""


class ConfigError(QuorumError):
    """A configuration value is missing or wrong.

    ``key`` is the dotted path of the offending key (``services.0.url``), or
    empty when the whole file is at fault (unreadable, not YAML).
    """

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.key = key
        self.source = source
        where = f" in {source}" if source else ""
        at = f" at '{key}'" if key else ""
        super().__init__(f"config error{where}{at}: {message}")


class ApiError(QuorumError):
    """An error answered to an HTTP client as ``{"error": {"message", "type", "code"}}``."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def headers(self) -> dict[str, str]:
        """Extra response headers this error asks for (e.g. ``Retry-After``)."""
        return {}

    def body(self) -> dict[str, Any]:
        """This error in OpenAI's shape; other dialects: ``quorum.api.errors.error_body``."""
        from quorum.api.errors import error_body  # that module imports this one

        return error_body(self)


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class ModelNotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamFailed(ApiError):
    status = 502
    error_type = "server_error"
    code = "engine_error"


class StreamBroken(UpstreamFailed):
    """A tunnel stream was reset (or its tunnel lost) after its answer had started:
    the answer is incomplete and must reach the client visibly cut off."""


class NoReachableHolder(ApiError):
    """503 with ``Retry-After`` (every 503 says when to try again)."""

    status = 503
    error_type = "server_error"
    code = "no_reachable_holder"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: int = 5,
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class EngineUnreachable(NoReachableHolder):
    code = "engine_unreachable"


class EngineTimeout(EngineUnreachable):
    code = "engine_timeout"


class StreamRefused(NoReachableHolder):
    """A tunnel stream was refused before anything processed it (a stream or rate
    limit on the way, a draining node): safe to retry, here or at another holder."""


class Overloaded(ApiError):
    status = 503
    error_type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(ApiError):
    """429 with ``Retry-After``: this source failed too often lately."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class EngineError(QuorumError):
    """An engine adapter failed to list or probe its engine."""


class EngineDown(EngineError):
    """Nothing answers at the engine's address."""


class EngineSilent(EngineDown):
    """The engine took the connection but did not answer in time: down, or only busy."""


class EmbeddedEngineError(EngineError):
    """The embedded engine is not installed or did not start."""


class DiscoveryError(QuorumError):
    """Discovery (mDNS advertising or browsing) failed."""


class BadAdvert(DiscoveryError):
    """An advert is malformed; ``field`` names the TXT key at fault ('' if the whole record)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        self.field = field
        at = f" (key {field!r})" if field else ""
        super().__init__(f"bad advert{at}: {message}")


class NoInterface(DiscoveryError):
    """No network interface matches the discovery configuration."""


class HttpError(QuorumError):
    """The lean engine client (:mod:`quorum.http`) failed."""


class HttpProtocolError(HttpError):
    """The engine's answer is not HTTP/1.1 this client understands."""


class ConnectionLost(HttpError):
    """The connection closed before the answer was complete."""


class ConnectTimeout(HttpError, TimeoutError):
    """The engine did not accept the connection in time."""


class ShipFailed(QuorumError):
    """The batch did not reach the relay, or the relay did not confirm it: try again later."""


class ShipRefused(ShipFailed):
    """The relay refused the cluster token (401/403)."""


class ShipRejected(QuorumError):
    """The relay refused the batch as malformed: sending it again cannot help."""


class StoreError(QuorumError):
    """The store refused an operation (a duplicate name, an unknown cluster or key), or
    cannot be read (then the message names the file and how to restore it)."""


class AutostartError(QuorumError):
    """The start-at-login entry could not be written or removed."""


class PeerError(QuorumError):
    """A peer answered badly, too slowly, or not at all."""


class PeerRefused(PeerError):
    """Nothing listens at the peer's address any more."""


class TunnelError(QuorumError):
    """A tunnel to or from the relay cannot carry on."""


class TransportClosed(TunnelError):
    """The socket under a tunnel is closed (the peer closed it, or it broke).

    Transport adapters raise it from ``send`` and ``receive`` in place of their
    library's exceptions (websockets' ``ConnectionClosed``, aiohttp's close
    messages), so nothing above them sees those.
    """


class AuthRefused(TunnelError):
    """The relay refused this node's cluster credential (401 or 403): retrying cannot help."""


class ProtocolError(QuorumError):
    """The tunnel protocol was broken."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""
