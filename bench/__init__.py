"""Quorum's benchmarks: what the node adds on top of calling the engine directly.

Every suite runs its own processes on 127.0.0.1 (a fake engine, the node, a
load generator), measures the direct path and the Quorum path in alternating
rounds of the same run, and prints one JSON document. Numbers are reported,
never asserted: timing on a shared machine is not a test.

- ``python3 -m bench node``: one node in front of one local engine.
- ``lan``, ``relay``: reserved for the LAN-peer and relay paths.
"""
