"""Prometheus metrics, written by hand in the text exposition format (version 0.0.4).

``Counter`` / ``Histogram`` are labelled metric families; ``Metrics`` holds the server's families and
renders them (plus gauges sampled at scrape time); ``MetricsMiddleware`` counts every HTTP request by
route template (never the raw path, so unknown URLs cannot grow the label set), method and status, and
times it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, v in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_num(v)}"


class Histogram:
    """Cumulative buckets, sum and count per label set."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._values: dict[tuple, list] = {}  # labels -> [bucket counts…, sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels) -> None:
        with self._lock:
            row = self._values.setdefault(labels, [0] * len(self.buckets) + [0.0, 0])
            for i, b in enumerate(self.buckets):
                if value <= b:
                    row[i] += 1
            row[-2] += value
            row[-1] += 1

    def count(self, *labels) -> int:
        row = self._values.get(labels)
        return row[-1] if row else 0

    def total(self, *labels) -> float:
        row = self._values.get(labels)
        return row[-2] if row else 0.0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self._values.items()):
            for b, c in zip(self.buckets, row):
                le = 'le="' + _num(b) + '"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {c}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_num(row[-2])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {row[-1]}"


class Metrics:
    """The server's metric families; gauges are functions sampled when the text is rendered."""

    def __init__(self) -> None:
        self.requests = Counter("genret_http_requests_total", "HTTP requests by route, method and status.",
                                ("route", "method", "status"))
        self.latency = Histogram("genret_http_request_duration_seconds", "HTTP request latency by route.",
                                 LATENCY_BUCKETS, ("route",))
        self.batch_size = Histogram("genret_batch_size", "Queries per batch_search call (micro-batches, batch "
                                    "requests and single searches).", BATCH_BUCKETS, ("retriever",))
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def render(self) -> str:
        lines: list[str] = []
        for family in (self.requests, self.latency, self.batch_size):
            lines.extend(family.render())
        for name, (help, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help}", f"# TYPE {name} gauge", f"{name} {_num(float(read()))}"]
        return "\n".join(lines) + "\n"


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
