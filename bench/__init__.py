"""Quorum's benchmarks: what the node adds on top of calling the engine directly.

Every suite runs its own processes (a fake engine, nodes, a load generator) on
127.0.0.1 or inside network namespaces it creates, measures two or more paths in
alternating rounds of the same run, and prints one JSON document. Numbers are
reported, never asserted: timing on a shared machine is not a test.

- ``python3 -m bench node``: one node in front of one local engine, against the engine.
- ``python3 -m bench relay``: a peer reached through a relay, against the local route;
  and the relay's memory per idle tunnel and per open stream.
- ``python3 -m bench lan``: a LAN peer over a veth link, against the local route.
"""
