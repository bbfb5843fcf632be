"""Prometheus metrics through ``prometheus-client``: one ``CollectorRegistry`` per app (several apps may live in
one process, as in the tests), exposed in the Prometheus text format or, when the scraper asks for it, OpenMetrics.

``Metrics`` holds the server's families — requests by route template, method and status, their latency, batch
sizes — plus gauges sampled at scrape time and the client library's process (CPU, memory, open files), Python GC
and platform collectors.  ``MetricsMiddleware`` counts every HTTP request by route template (never the raw path,
so unknown URLs cannot grow the label set), method and status, and times it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what a scraper that asks for nothing in particular gets
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Counter:
    """A monotonically increasing count per label set (``inc(*label_values)``), in ``registry``."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), *,
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.label_names = name, labels
        self._registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._family = _Counter(name.removesuffix("_total"), help, labels, registry=self._registry)

    def inc(self, *labels, amount: float = 1.0) -> None:
        (self._family.labels(*labels) if labels else self._family).inc(amount)

    def value(self, *labels) -> float:
        sample = self._registry.get_sample_value(self.name, dict(zip(self.label_names, labels)))
        return sample or 0.0


class Histogram:
    """Cumulative buckets, sum and count per label set (``observe(value, *label_values)``), in ``registry``."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labels: tuple[str, ...] = (), *,
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.label_names = name, labels
        self._registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._family = _Histogram(name, help, labels, registry=self._registry, buckets=tuple(sorted(buckets)))

    def observe(self, value: float, *labels) -> None:
        (self._family.labels(*labels) if labels else self._family).observe(value)

    def count(self, *labels) -> int:
        return int(self._sample("_count", labels))

    def total(self, *labels) -> float:
        return self._sample("_sum", labels)

    def _sample(self, suffix: str, labels: tuple) -> float:
        return self._registry.get_sample_value(self.name + suffix, dict(zip(self.label_names, labels))) or 0.0


class _Gauges:
    """Gauges read when scraped: name -> (help, function); registering a name again replaces it."""

    def __init__(self) -> None:
        self.read: dict[str, tuple[str, Callable[[], float]]] = {}

    def describe(self) -> Iterable:
        return []  # names may be added after registration: nothing to check them against

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (help, read) in sorted(self.read.items()):
            yield GaugeMetricFamily(name, help, value=float(read()))


class Metrics:
    """The server's metric families and collectors, in a registry of their own (``registry``)."""

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry(auto_describe=True)
        self.requests = Counter("genret_http_requests_total", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=reg)
        self.latency = Histogram("genret_http_request_duration_seconds", "HTTP request latency by route.",
                                 LATENCY_BUCKETS, ("route",), registry=reg)
        self.batch_size = Histogram("genret_batch_size", "Queries per batch_search call (micro-batches, batch "
                                    "requests and single searches).", BATCH_BUCKETS, ("retriever",), registry=reg)
        self._gauges = _Gauges()
        reg.register(self._gauges)
        ProcessCollector(registry=reg)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds…
        GCCollector(registry=reg)  # python_gc_collections_total, … by generation
        PlatformCollector(registry=reg)  # python_info

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        self._gauges.read[name] = (help, read)

    def render(self, accept: str | None = None) -> str:
        """The exposition text for a scraper that sent ``accept`` (its Accept header)."""
        return self.exposition(accept)[0].decode("utf-8")

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """``(body, content type)``: OpenMetrics when ``accept`` asks for it, else the Prometheus text format."""
        try:
            encode, content_type = choose_encoder(accept or "")
        except (ValueError, TypeError):  # a version that is not one ("version=x"): the plain text format
            encode, content_type = choose_encoder("")
        return encode(self.registry), content_type


class MetricsMiddleware:
    """Pure ASGI middleware: request count and latency for every HTTP request (errors included)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(name, scope["method"], str(status))
            self.metrics.latency.observe(time.perf_counter() - start, name)
