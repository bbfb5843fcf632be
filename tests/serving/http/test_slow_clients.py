"""Slow and idle clients against a real uvicorn server (``make_server``: the connection guard): unfinished headers
and bodies are cut at their deadlines, a flood of idle connections cannot crowd out ``/healthz`` (the oldest waiting
connection makes room), and with every connection busy a new one gets 503 at once.  The slow test runs the issue's
scenario: ``genret serve`` under a 300-file limit, 2,000 idle partial requests, and ``/healthz`` still answers."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from genret.serving.http._server import make_server
from tests.serving.helpers import app_over, wrapped

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: genret.test\r\nX-Slow: "  # headers that never end


@contextmanager
def running(app):
    server = make_server(app.state.settings, app, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started)
    try:
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _partial_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(PARTIAL)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, timeout: float = 30.0) -> bytes:
    """Everything the server sent before closing ``s`` (fails if it is still open after ``timeout``)."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open ({got!r})")
    return got


def test_idle_partial_requests_are_cut_and_healthz_keeps_answering(service):
    with app_over(service, header_timeout_s=2.0, max_connections=20) as app, running(app) as (server, base):
        socks = _partial_connections(server.port, 60)  # three times the cap, none will ever finish its headers
        try:
            r = httpx.get(f"{base}/healthz", timeout=30)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            assert len(server.guard.open) <= 20
            assert server.guard.evicted >= 40  # the longest-waiting made room, at once
            replies = [_closed_by_server(s) for s in socks]  # the rest: at the header deadline
        finally:
            for s in socks:
                s.close()
        assert server.guard.timed_out >= 1
        assert all(r == b"" or r.startswith(b"HTTP/1.1 408 ") for r in replies)
        late = [r for r in replies if r.startswith(b"HTTP/1.1 408 ")]
        assert late  # part of a request came: told why it ends
        assert json.loads(late[0].split(b"\r\n\r\n", 1)[1]) == {
            "error": "ClientTimeout", "detail": "the request's headers did not arrive in time (header_timeout_s)"}
        with httpx.Client(base_url=base, timeout=30) as http:  # keep-alive still works for a well-behaved client
            assert [http.get("/healthz").status_code for _ in range(3)] == [200, 200, 200]
        assert "genret_connections_cut " in httpx.get(f"{base}/metrics", timeout=30).text


def test_a_body_that_never_arrives_is_408(service):
    with app_over(service, body_timeout_s=1.0) as app, running(app) as (server, base):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: genret.test\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"query\": ")
            reply = _closed_by_server(s)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"(body_timeout_s)" in reply
        assert server.guard.timed_out == 1
        assert app.state.gate.in_flight == 0  # the request never reached the model
        r = httpx.post(f"{base}/v1/search", json={"query": "Python", "k": 1}, timeout=30)
        assert r.status_code == 200


def test_slow_uploads_holding_every_slot_cannot_crowd_out_healthz(service):
    """Issue 27: every connection is reading a body that trickles in (headers with Content-Length 200, then 14
    bytes); a new connection closes the slowest upload (408) to make room, so /healthz and /readyz answer at once
    rather than 503 until body_timeout_s."""
    upload = (b"POST /v1/search HTTP/1.1\r\nHost: genret.test\r\nContent-Type: application/json\r\n"
              b"Content-Length: 200\r\n\r\n{\"query\": \"oil")
    with app_over(service, body_timeout_s=60.0, max_connections=10) as app, running(app) as (server, base):
        socks = []
        try:
            for _ in range(12):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                s.sendall(upload)
                socks.append(s)
                time.sleep(0.02)  # the first ones are the slowest: they have had the longest to send their body
            t0 = time.monotonic()
            for path in ("/healthz", "/readyz"):
                r = httpx.get(f"{base}{path}", timeout=30)
                assert r.status_code == 200, (path, r.text)
            assert time.monotonic() - t0 < 5
            assert server.guard.evicted >= 2 and server.guard.refused == 0
            reply = _closed_by_server(socks[0], timeout=10)  # the oldest upload made room first
            assert reply.startswith(b"HTTP/1.1 408 ") and b"max_connections" in reply, reply
        finally:
            for s in socks:
                s.close()


def test_with_every_connection_busy_a_new_one_is_refused_at_once(service):
    with wrapped(service, "dense", delay=2.0), app_over(service, max_connections=2) as app, \
            running(app) as (server, base):
        results = []

        def slow() -> None:
            results.append(httpx.post(f"{base}/v1/search", json={"query": "Python", "k": 1}, timeout=60))

        clients = [threading.Thread(target=slow) for _ in range(2)]
        for c in clients:
            c.start()
        _wait(lambda: app.state.gate.in_flight == 2, what="two requests in progress")
        r = httpx.get(f"{base}/healthz", timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "max_connections" in r.json()["detail"]
        for c in clients:
            c.join(60)
        assert [x.status_code for x in results] == [200, 200]  # the busy ones were never cut
        assert server.guard.refused == 1 and server.guard.evicted == 0


@pytest.mark.slow
def test_healthz_survives_2000_idle_partial_requests_under_a_300_file_limit(tiny_index, tmp_path):
    n = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:  # this process holds the client ends
        if hard != resource.RLIM_INFINITY and hard < n + 200:
            pytest.skip(f"needs {n + 200} open files here (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, hard))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GENRET_SERVER__HEADER_TIMEOUT_S": "3", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "genret", "serve", str(tiny_index), "--port", str(port),
         "--log-level", "warning", "--no-access-log"], env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)), cwd=Path(__file__).parents[3])
    base = f"http://127.0.0.1:{port}"
    socks: list[socket.socket] = []
    try:
        def up() -> bool:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, timeout=120, what="the server")
        socks = _partial_connections(port, n)
        r = httpx.get(f"{base}/healthz", timeout=30)
        assert r.status_code == 200, r.text
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        assert fds < 300
        replies = [_closed_by_server(s, timeout=60) for s in socks]  # all of them, by eviction or the deadline
        assert all(r == b"" or r.startswith(b"HTTP/1.1 408 ") for r in replies)
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        for s in socks:
            s.close()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
