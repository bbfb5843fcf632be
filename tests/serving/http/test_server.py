"""A real uvicorn server in a thread: a slow request in flight when shutdown starts still completes; new work is
refused (503 from the app, or no connection at all), and the lifespan shutdown releases the model pool."""

import threading
import time

import httpx

from genret.serving.http._server import make_server
from tests.serving.helpers import app_over, wrapped


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_graceful_shutdown_finishes_requests_in_flight(service):
    with wrapped(service, "dense", delay=1.5), app_over(service, port=0, shutdown_timeout_s=20) as app:
        server = make_server(app.state.settings, app, log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait(lambda: server.started)
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}

        result = {}

        def slow_request():
            result["response"] = httpx.post(f"{base}/v1/search", json={"query": "Python", "k": 1}, timeout=30)

        client = threading.Thread(target=slow_request)
        client.start()
        _wait(lambda: app.state.gate.in_flight == 1)
        started = time.monotonic()
        server.should_exit = True  # what SIGTERM does
        _wait(lambda: app.state.gate.closing)
        try:  # new work: the listener is closed (or, on a connection still open, the app answers 503)
            late = httpx.get(f"{base}/v1/search", params={"q": "x"}, timeout=2)
            assert late.status_code == 503
        except httpx.TransportError:
            pass
        client.join(30)
        r = result["response"]
        assert r.status_code == 200 and r.json()["hits"], r.text
        thread.join(30)
        assert not thread.is_alive()
        assert time.monotonic() - started < 15
        assert app.state.gate.in_flight == 0
        assert app.state.dispatcher.closed  # the lifespan shutdown ran



def test_serve_flags_become_settings(monkeypatch, tiny_index):
    import genret.serving.http._server as server_module
    from genret.serving import main

    got = {}
    monkeypatch.setattr(server_module, "serve", lambda settings: got.setdefault("settings", settings))
    monkeypatch.setenv("GENRET_SERVER__MAX_QUEUE", "9")
    monkeypatch.setenv("GENRET_SERVER__WORKERS", "3")
    monkeypatch.setenv("GENRET_GENERATOR__MAX_NEW_TOKENS", "7")
    monkeypatch.setenv("GENRET_RAG__PASSAGES", "5")
    assert main(["serve", str(tiny_index), "--port", "0", "--api-key", "a", "--api-key", "b", "--workers", "2",
                 "--no-micro-batch", "--preload", "dense,bm25,generator", "--timeout", "5",
                 "--generator-model", "some/model", "--demos", "demos-dir"]) == 0
    s = got["settings"].server
    assert (s.port, s.api_keys, s.workers, s.micro_batch, s.preload, s.request_timeout_s, s.max_queue) == \
        (0, ["a", "b"], 2, False, ["dense", "bm25", "generator"], 5.0, 9)  # flags win; the environment fills the rest
    g = got["settings"].generator
    assert (g.model, g.max_new_tokens, got["settings"].rag.passages, str(got["settings"].demos)) == \
        ("some/model", 7, 5, "demos-dir")
    got.clear()
    assert main(["serve", str(tiny_index), "--rag-queue-budget", "0.5", "--header-timeout", "3", "--body-timeout",
                 "4", "--max-connections", "99", "--reload-interval", "0", "--max-tokens", "512"]) == 0
    s = got["settings"].server
    assert (s.rag_queue_budget, s.header_timeout_s, s.body_timeout_s, s.max_connections, s.reload_interval_s,
            s.max_tokens) == (0.5, 3.0, 4.0, 99, 0.0, 512)


def test_serve_dtype_reaches_every_model_and_merges_with_the_environment(monkeypatch, tiny_index):
    import genret.serving.http._server as server_module
    from genret.serving import main

    got = {}
    monkeypatch.setattr(server_module, "serve", lambda settings: got.setdefault("settings", settings))
    monkeypatch.setenv("GENRET_RETRIEVAL__GENERATIVE__BEAM", "3")
    assert main(["serve", str(tiny_index), "--dtype", "float32"]) == 0
    s = got["settings"]
    assert (s.retrieval.dense.dtype, s.retrieval.generative.dtype, s.generator.dtype) == ("float32",) * 3
    assert s.retrieval.generative.beam == 3  # the environment still fills the rest of the section
    got.clear()
    assert main(["serve", str(tiny_index)]) == 0
    assert got["settings"].generator.dtype == got["settings"].retrieval.dense.dtype == "auto"
