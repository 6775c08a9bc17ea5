"""Prometheus metrics of one node, in their own registry (several nodes may share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("endpoint", "model", "route")
        self.requests = Counter(
            "quorum_requests",
            "Requests answered, by endpoint, model, route and status code.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.errors = Counter(
            "quorum_request_errors",
            "Requests that failed, by endpoint, model, route and error code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "quorum_request_duration_seconds",
            "Time from request to the last byte of the response.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "quorum_time_to_first_byte_seconds",
            "Time from request to the first byte of the response body.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "quorum_in_flight_requests",
            "Requests being served now.",
            ("model", "route"),
            registry=self.registry,
        )
        self.models = Gauge(
            "quorum_models",
            "Models this node can route to, by route.",
            ("route",),
            registry=self.registry,
        )
        self.usage_held = Gauge(
            "quorum_usage_held_records",
            "Usage records kept in memory because the outbox file cannot be written.",
            registry=self.registry,
        )
        self.usage_dropped = Gauge(
            "quorum_usage_dropped_records",
            "Usage records dropped since start (held in memory past the limit).",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "quorum_queue_depth",
            "Requests waiting at this node for a holder, by model.",
            ("model",),
            registry=self.registry,
        )
        self.queue_wait = Gauge(
            "quorum_queue_estimated_wait_seconds",
            "How long one more request of the model would wait at this node (estimate).",
            ("model",),
            registry=self.registry,
        )
        self.cooling = Gauge(
            "quorum_holder_cooldown_until_seconds",
            "Holders skipped after repeated failures: when they are tried again (unix time).",
            ("node", "service", "route"),
            registry=self.registry,
        )

        # labels() costs a lock and a dict lookup each time: keep each series' children.
        self._series: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}
        self._in_flight: dict[tuple[str, str], Any] = {}

    def in_flight_for(self, model: str, route: str) -> Any:
        """The ``quorum_in_flight_requests`` gauge of one model and route (cached)."""
        gauge = self._in_flight.get((model, route))
        if gauge is None:
            gauge = self._in_flight[(model, route)] = self.in_flight.labels(model, route)
        return gauge

    def observe(
        self,
        endpoint: str,
        model: str,
        route: str,
        status: int,
        duration_s: float,
        ttfb_s: float | None,
    ) -> None:
        """Count one answered request (the hot path: one dict lookup when warm)."""
        key = (endpoint, model, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(endpoint, model, route, str(status)),
                self.latency.labels(endpoint, model, route),
                self.ttfb.labels(endpoint, model, route),
            )
        requests, latency, ttfb = series
        requests.inc()
        latency.observe(duration_s)
        if ttfb_s is not None:
            ttfb.observe(ttfb_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
