"""No cold first request: ``genret serve`` loads and runs once every retriever, encoder and the generator it serves
before ``/readyz`` says ready (``serving/http/_warmup.py``), answering ``/healthz`` meanwhile; ``--lazy`` keeps loading
on first use; a part that fails leaves ``/readyz`` 503 with the reason; the first request after ready is as fast
as the second."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from genret.retrieval import DenseRetriever
from genret.retrieval.rag import HFGenerator
from genret.serving import ServerConfig, create_app
from genret.serving.http._server import make_server
from genret.serving.http._service import SearchService
from genret.serving.http._warmup import EMBEDDINGS, GENERATOR, WARM_TEXT, WARM_TOKENS, Part, planned_parts
from tests.serving.helpers import tiny_settings


def _until(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


class _Spy:
    """Wraps a method of a class: records ``(time, first positional argument, keyword arguments)`` per call; the
    first call waits for ``release()`` when ``hold``."""

    def __init__(self, mp: pytest.MonkeyPatch, cls, method: str, hold: bool = False) -> None:
        self.calls: list[tuple[float, object, dict]] = []
        self.reached, self._released = threading.Event(), threading.Event()
        if not hold:
            self._released.set()
        original = getattr(cls, method)

        def spy(this, first, *args, **kwargs):
            self.calls.append((time.monotonic(), first, kwargs))
            self.reached.set()
            self._released.wait(60)
            return original(this, first, *args, **kwargs)

        mp.setattr(cls, method, spy)

    def release(self) -> None:
        self._released.set()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]


def _timed(call) -> float:
    t0 = time.perf_counter()
    r = call()
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return elapsed


@pytest.fixture(scope="module")
def warmed(tiny_index, tiny_lm_dir, tiny_chat_lm_dir):
    """A real server (``make_server``, as ``genret serve`` runs it) over a fresh service of the tiny index, warming
    up by default; what it answered while the warm-up was held at its first search, and the first and later
    latencies of a search, a generative search and a chat completion once ready (torch on one thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logger = logging.getLogger("genret.serving")
    level, records = logger.level, _Records()
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    settings = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, lazy=False, port=0)
    with pytest.MonkeyPatch.context() as mp:
        dense, generate = _Spy(mp, DenseRetriever, "batch_search", hold=True), _Spy(mp, HFGenerator, "complete")
        service = SearchService(settings)
        app = create_app(settings, service)
        server = make_server(settings, app, log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            _until(lambda: server.started, what="the server to start")
            base = f"http://127.0.0.1:{server.port}"
            assert dense.reached.wait(120), "the warm-up never searched"
            during = {"healthz": httpx.get(f"{base}/healthz"), "readyz": httpx.get(f"{base}/readyz"),
                      "search": httpx.post(f"{base}/v1/search", json={"query": "oil", "k": 1}),
                      "loaded": service.loaded}
            dense.release()
            _until(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="ready")
            ready_at = time.monotonic()
            warm_calls = {"dense": list(dense.calls), "generate": list(generate.calls)}
            chat = {"model": tiny_index.name, "messages": [{"role": "user", "content": "Who created Python?"}]}
            requests = {
                "search": lambda: httpx.post(f"{base}/v1/search", json={"query": "Who created Python?", "k": 3}),
                "generative": lambda: httpx.post(f"{base}/v1/search", json={
                    "query": "Who created Python?", "k": 3, "retriever": "generative"}),
                "chat": lambda: httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=60),
            }
            latencies = {name: (_timed(call), min(_timed(call) for _ in range(3))) for name, call in requests.items()}
            _until(lambda: any("/docs" in line for line in records.lines()), timeout=10, what="the announcement")
            yield SimpleNamespace(base=base, app=app, service=service, during=during, ready_at=ready_at,
                                  warm_calls=warm_calls, latencies=latencies, records=records)
        finally:
            dense.release()
            server.should_exit = True
            thread.join(60)
            service.close()
            logger.removeHandler(records)
            logger.setLevel(level)
            torch.set_num_threads(threads)


def test_readyz_is_503_while_warming_up_and_healthz_answers(warmed, tiny_index):
    during = warmed.during
    assert during["healthz"].status_code == 200  # the event loop is free while the models load
    r = during["readyz"]
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert f"warming up: dense on {tiny_index.name} (1 of " in r.json()["detail"]
    assert during["search"].status_code == 503 and "not ready" in during["search"].json()["detail"]


def test_ready_only_once_every_part_was_loaded_and_run(warmed, tiny_index):
    dense, generate = warmed.warm_calls["dense"], warmed.warm_calls["generate"]
    assert dense and all(t < warmed.ready_at and queries == [WARM_TEXT] for t, queries, _ in dense)
    assert len(generate) == 1 and generate[0][0] < warmed.ready_at  # one short RAG answer
    assert generate[0][2]["max_new_tokens"] == WARM_TOKENS
    warmup = warmed.app.state.warmup
    assert warmup.failures == {} and warmup.took is not None
    assert [p.label for p in warmup.parts] == [f"{name} on {tiny_index.name}" for name in (
        "dense", "bm25", "generative", "hybrid", EMBEDDINGS)] + [GENERATOR]
    assert warmed.service.loaded == 4  # dense, bm25, generative, and the hybrid over them


def test_the_hybrid_is_composed_of_the_served_retrievers(warmed):
    service = warmed.service
    hybrid = service.retriever(None, "hybrid")
    assert {name: m is service.retriever(None, name) for name, m in hybrid.members.items()} == {
        "dense": True, "bm25": True, "generative": True}  # no second copy of each model


def test_the_first_request_after_ready_is_as_fast_as_the_second(warmed):
    for name, (first, later) in warmed.latencies.items():
        assert first <= 2 * later + 0.1, f"{name}: first {first:.3f} s, later {later:.3f} s"


def test_it_logs_what_it_serves_and_where_once(warmed, tiny_index):
    lines, base = warmed.records.lines(), warmed.base
    assert sum(line.startswith("ready: loaded and warmed up in ") for line in lines) == 1
    (index_line,) = [line for line in lines if f"index {tiny_index.name} " in line]
    assert "warm: dense, bm25, generative, hybrid, embeddings" in index_line
    (generator_line,) = [line for line in lines if line.strip().startswith("generator ")]
    assert "(hf) — warm" in generator_line
    (where,) = [line for line in lines if "/docs" in line]
    assert f"{base}/ " in where and f"{base}/docs " in where and where.endswith(f"{base}/v1")


def test_lazy_loads_on_first_use(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, caplog):
    settings = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, lazy=True)
    service = SearchService(settings)
    try:
        with caplog.at_level(logging.INFO, "genret.serving"), TestClient(create_app(settings, service)) as c:
            assert c.get("/readyz").json() == {"status": "ready"}
            assert service.loaded == 0 and service.use_generator(None) is None  # nothing loaded
            assert "ready: models load on first use (lazy)" in caplog.messages
            assert c.post("/v1/search", json={"query": "oil", "k": 1, "retriever": "bm25"}).status_code == 200
            assert service.loaded == 1
    finally:
        service.close()


def test_preload_names_narrow_what_is_warmed(service, tiny_index):
    everything = planned_parts(service, ServerConfig())
    assert {p.name for p in everything} == {"dense", "bm25", "generative", "hybrid", EMBEDDINGS, GENERATOR}
    narrowed = [Part(tiny_index.name, "bm25"), Part(None, GENERATOR)]
    assert planned_parts(service, ServerConfig(preload=["generator", "bm25"])) == narrowed
    assert planned_parts(service, ServerConfig(preload=["generator", "bm25"], lazy=True)) == narrowed
    assert planned_parts(service, ServerConfig(lazy=True)) == []


def test_a_part_that_fails_leaves_readyz_503_with_the_reason(tiny_index, tiny_lm_dir, tmp_path, caplog):
    settings = tiny_settings(tiny_index, tiny_lm_dir, tmp_path / "no-such-model", lazy=False,
                             preload=["bm25", "generator"])
    service = SearchService(settings)
    try:
        with caplog.at_level(logging.INFO, "genret.serving"), TestClient(create_app(settings, service)) as c:
            assert c.get("/healthz").status_code == 200
            r = c.get("/readyz")
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith("the server is not ready: warm-up failed: generator: the generator "
                                                 "could not be loaded: ")
            failed = [rec for rec in caplog.records if rec.levelno >= logging.ERROR and "generator" in rec.message]
            assert [rec.message.split(":")[0] for rec in failed] == ["warm-up", "not ready (/readyz answers 503)"]
            assert not any(rec.exc_info for rec in failed)  # one line each, no traceback
            assert service.loaded == 1  # bm25 was loaded and warmed all the same
    finally:
        service.close()


def test_the_lazy_flag_becomes_the_setting(monkeypatch, tiny_index):
    import genret.serving.http._server as server_module
    from genret.serving import main

    got = []
    monkeypatch.setattr(server_module, "serve", got.append)
    assert main(["serve", str(tiny_index), "--lazy"]) == 0
    assert main(["serve", str(tiny_index)]) == 0
    assert [s.server.lazy for s in got] == [True, False]


@pytest.mark.slow
def test_genret_serve_with_the_packaged_models_has_no_cold_first_chat(tiny_index, tmp_path):
    """The issue's case: a fresh `genret serve` (packaged generator and generative LM), then a new user's first chat
    request.  It took 24.6 s; now it waits for /readyz and is as fast as the next one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "genret", "serve", str(tiny_index), "--port",
                                 str(port), "--no-access-log", "--reload-interval", "0", "--timeout", "120"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        def status(path: str) -> int | None:
            try:
                return httpx.get(base + path).status_code
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()[-3000:]
                return None

        _until(lambda: status("/healthz") == 200, timeout=300, what="/healthz")
        seen = {status("/readyz")}
        _until(lambda: seen.add(status("/readyz")) or 200 in seen, timeout=600, what="/readyz 200")
        assert 503 in seen
        chat = {"messages": [{"role": "user", "content": "Who created the Python programming language?"}]}
        ask = lambda: httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=120)  # noqa: E731
        first, later = _timed(ask), min(_timed(ask) for _ in range(2))
        assert first <= 2 * later + 0.5, f"first chat {first:.2f} s, later {later:.2f} s"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    err = log.read_text()
    assert "ready: loaded and warmed up in " in err
    assert f"API docs {base}/docs" in err and f"OpenAI-compatible base {base}/v1" in err, err[-3000:]
