"""The endpoints the node serves: :mod:`quorum.api.endpoints`' ``SERVED`` table.

Service types there are plain strings; the config's ``ServiceType`` members
are those strings, so routing compares them directly.
"""

from quorum.api.endpoints import SERVED as ENDPOINTS
from quorum.api.endpoints import BodyKind, Endpoint

__all__ = ["ENDPOINTS", "BodyKind", "Endpoint"]
