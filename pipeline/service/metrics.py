"""Prometheus metrics of one service (its own registry, so that apps in one process never share counters):
requests by route and status, request latency by route, search latency by kind of query, and the run served."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds: from a cached thumbnail or a path search on a small index (~1 ms) to a ViT-B image query queued behind
# others on a CPU (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # the route label of requests that match no route


class Metrics:
    """The service's metrics, in `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vitmae_http_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "vitmae_http_request_seconds",
            "HTTP request latency, by route template and method",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search = Histogram(
            "vitmae_search_seconds",
            "time to answer a search (embedding included), by query kind",
            ("kind",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Gauge("vitmae_index_images", "images in the index served", registry=self.registry)
        self.table_version = Gauge(
            "vitmae_table_version", "the embeddings table version served", registry=self.registry
        )
        self.reloads = Gauge("vitmae_reloads", "run versions loaded since the service started", registry=self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request under the template of the route it matched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before it responds

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_label(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route, scope["method"]).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    """The matched route's template (`/api/search`), never the raw path, so that labels stay few."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else UNMATCHED
