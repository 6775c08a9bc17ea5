"""The node's HTTP server: the ``/v1`` proxy, status, metrics and the local dashboard."""
