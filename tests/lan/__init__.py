"""Multi-host end-to-end tests of the LAN cluster: real nodes in network namespaces."""
