"""Node identities and cluster membership proven with keys, never with the token on a wire.

- :mod:`quorum.secure.identity`: this node's EC P-256 identity key (0600 in the
  data dir) and its fingerprint, SHA-256 of the public key's SubjectPublicKeyInfo.
- :mod:`quorum.secure.cluster`: what every member derives alone from the cluster
  token (HKDF-SHA256, one ``info`` label per use): the cluster CA key (the same on
  every member), the discovery discriminator; and the node certificate each member
  signs for its own identity key with that CA.
- :mod:`quorum.secure.tls`: the stdlib ``ssl`` contexts that make node-to-node
  links mutual TLS 1.3 against the cluster CA(s).

No primitive is written here: keys, signatures and certificates come from
``cryptography``, TLS from the stdlib ``ssl``.
"""

from quorum.secure.cluster import (
    ClusterCA,
    cluster_discriminator,
    node_dns_name,
)
from quorum.secure.identity import Identity, fingerprint_of, short_fingerprint
from quorum.secure.tls import ClusterTLS, peer_node_id

__all__ = [
    "ClusterCA",
    "ClusterTLS",
    "Identity",
    "cluster_discriminator",
    "fingerprint_of",
    "node_dns_name",
    "peer_node_id",
    "short_fingerprint",
]
