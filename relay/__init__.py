"""The Quorum relay: tunnels between nodes on different networks, and the control plane."""
