"""/metrics: Prometheus text exposition (prometheus-client) that parses, with request counts, latency, batch sizes,
gauges and the process and GC collectors; OpenMetrics when asked for; one registry per app."""

import re

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from genret.serving.http._metrics import Counter, Histogram, Metrics
from tests.serving.helpers import app_over

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """A strict little parser of the text format: every line a comment (HELP/TYPE) or a sample."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "untyped"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert re.sub(r"_(bucket|sum|count|created)$", "", name) in types or name in types, line
        samples[(name, frozenset(LABEL.findall(labels)))] = float(value.replace("+Inf", "inf"))
    return samples


def test_metrics_count_requests_latency_and_batches(service):
    with app_over(service) as app, TestClient(app) as client:
        for _ in range(3):
            assert client.post("/v1/search", json={"query": "Python", "k": 2}).status_code == 200
        assert client.post("/v1/search", json={"query": "x", "k": 0}).status_code == 422
        assert client.post("/v1/search/batch", json={"queries": ["a", "b", "c"], "k": 1}).status_code == 200
        assert client.get("/no/such/path").status_code == 404
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = parse(r.text)

    def get(name, **labels):
        return s[(name, frozenset(labels.items()))]

    assert get("genret_http_requests_total", route="/v1/search", method="POST", status="200") == 3
    assert get("genret_http_requests_total", route="/v1/search", method="POST", status="422") == 1
    assert get("genret_http_requests_total", route="/v1/search/batch", method="POST", status="200") == 1
    assert get("genret_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert get("genret_http_request_duration_seconds_count", route="/v1/search") == 4
    assert get("genret_http_request_duration_seconds_bucket", route="/v1/search", le="+Inf") == 4
    assert get("genret_batch_size_count", retriever="dense") == 4  # three single searches, one batch of 3
    assert get("genret_batch_size_sum", retriever="dense") == 6
    assert get("genret_in_flight") == 0 and get("genret_queue_pending") == 0 and get("genret_ready") == 1


def test_histogram_and_counter_text():
    reg = CollectorRegistry()
    h = Histogram("h_seconds", "help", (0.1, 1.0), ("route",), registry=reg)
    for v in (0.05, 0.5, 5.0):
        h.observe(v, 'a"b\\c')
    c = Counter("c_total", "help", ("x",), registry=reg)
    c.inc("1")
    c.inc("1", amount=2)
    s = parse(generate_latest(reg).decode())
    lab = ("route", 'a\\"b\\\\c')
    assert s[("h_seconds_bucket", frozenset([lab, ("le", "0.1")]))] == 1
    assert s[("h_seconds_bucket", frozenset([lab, ("le", "1.0")]))] == 2
    assert s[("h_seconds_bucket", frozenset([lab, ("le", "+Inf")]))] == 3
    assert s[("h_seconds_sum", frozenset([lab]))] == 5.55
    assert s[("c_total", frozenset([("x", "1")]))] == 3
    assert c.value("1") == 3 and h.count('a"b\\c') == 3 and h.total('a"b\\c') == 5.55


def test_process_and_gc_collectors_and_openmetrics(service):
    with app_over(service) as app, TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        plain = client.get("/metrics")
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        odd = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=x"})
    s = parse(plain.text)
    names = {name for name, _ in s}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert any(n.startswith("python_gc_") for n in names) and "python_info" in names
    assert om.status_code == 200 and om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert re.search(r'^genret_http_requests_total\{method="GET",route="/healthz",status="200"\} 1', om.text, re.M)
    assert odd.status_code == 200 and odd.headers["content-type"].startswith("text/plain")


def test_each_app_counts_in_a_registry_of_its_own():
    a, b = Metrics(), Metrics()
    a.requests.inc("/x", "GET", "200")
    a.gauge("genret_thing", "a gauge", lambda: 7)
    a.gauge("genret_thing", "registered again: replaced", lambda: 8)
    assert a.requests.value("/x", "GET", "200") == 1 and b.requests.value("/x", "GET", "200") == 0
    sa, sb = parse(a.render()), parse(b.render())
    assert sa[("genret_thing", frozenset())] == 8 and ("genret_thing", frozenset()) not in sb
