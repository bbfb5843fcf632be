"""Limits: admission control (429 / 503 with Retry-After), per-request timeout (504), body size (413) and API
keys (401 with WWW-Authenticate); every refusal is a JSON error."""

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from genret.core import GenretError
from genret.serving import ServerConfig, Settings, create_app
from tests.serving.helpers import app_over, async_client, wrapped


def _is_error(r, status: int, error: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    return body


@pytest.mark.anyio
async def test_queue_full_is_429_with_retry_after(service):
    with wrapped(service, "dense", delay=0.5), app_over(service, max_queue=2, micro_batch=False,
                                                        retry_after_s=3) as app:
        async with async_client(app) as client:
            responses = await asyncio.gather(*(client.post("/v1/search", json={"query": f"q{i}", "k": 1})
                                               for i in range(5)))
            codes = sorted(r.status_code for r in responses)
            assert codes == [200, 200, 429, 429, 429]
            for r in responses:
                if r.status_code == 429:
                    assert r.headers["retry-after"] == "3"
                    assert "max_queue 2" in _is_error(r, 429, "Overloaded")["detail"]
            assert app.state.gate.in_flight == 0
            assert (await client.post("/v1/search", json={"query": "again", "k": 1})).status_code == 200


@pytest.mark.anyio
async def test_timeout_is_504_and_the_slot_is_held_until_the_work_ends(service):
    with wrapped(service, "dense", delay=0.6), app_over(service, request_timeout_s=0.1) as app:
        async with async_client(app) as client:
            r = await client.post("/v1/search", json={"query": "slow", "k": 1})
            assert "0.1 s" in _is_error(r, 504, "RequestTimeout")["detail"]
            assert app.state.gate.in_flight == 1  # the model is still working on it
            assert await app.state.gate.drain(5)


@pytest.mark.anyio
async def test_not_ready_and_shutting_down_are_503(service):
    with app_over(service, preload=["dense"], retry_after_s=2) as app:
        async with async_client(app) as client:  # no lifespan: the preload never ran
            r = await client.get("/readyz")
            assert "loading retrievers dense" in _is_error(r, 503, "Unavailable")["detail"]
            assert r.headers["retry-after"] == "2"
            _is_error(await client.post("/v1/search", json={"query": "x"}), 503, "Unavailable")
            assert (await client.get("/healthz")).status_code == 200
            app.state.gate.ready = True
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            app.state.gate.close()
            r = await client.get("/v1/search", params={"q": "x"})
            assert "shutting down" in _is_error(r, 503, "Unavailable")["detail"]
            _is_error(await client.get("/readyz"), 503, "Unavailable")


def test_readyz_turns_ready_after_the_preload(service):
    settings = service.settings.model_copy(update={"server": ServerConfig(preload=["dense", "bm25"])})
    with TestClient(create_app(settings, service)) as client:  # lifespan runs the preload in the background
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.post("/v1/search", json={"query": "Python", "k": 1}).status_code == 200


def test_preloading_a_retriever_no_index_offers_is_refused(service):
    settings = service.settings.model_copy(update={"server": ServerConfig(preload=["nope"])})
    with pytest.raises(GenretError, match="cannot preload"):
        create_app(settings, service)


@pytest.fixture(scope="module")
def small_body_client(service):
    with app_over(service, max_body_bytes=1024) as app, TestClient(app) as client:
        yield client


def test_body_too_large_is_413(small_body_client):
    r = small_body_client.post("/v1/search", json={"query": "x" * 2000})
    assert "1024 bytes" in _is_error(r, 413, "PayloadTooLarge")["detail"]

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"query": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    r = small_body_client.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    _is_error(r, 413, "PayloadTooLarge")
    ok = small_body_client.post("/v1/search", json={"query": "Python", "k": 1})
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def keyed_client(service):
    with app_over(service, api_keys=["s3cret", "other"]) as app, TestClient(app) as client:
        yield client


@pytest.mark.parametrize("headers, detail", [
    ({}, "API key is required"),
    ({"Authorization": "Bearer wrong"}, "invalid API key"),
    ({"Authorization": "Basic czNjcmV0"}, "API key is required"),
    ({"Authorization": "Bearer "}, "API key is required"),
])
def test_api_key_required_when_configured(keyed_client, headers, detail):
    for method, path in (("POST", "/v1/search"), ("GET", "/v1/indexes"), ("POST", "/v1/search/batch"),
                         ("GET", "/metrics"), ("POST", "/v1/rag")):
        r = keyed_client.request(method, path, json={"query": "x", "queries": ["x"]}, headers=headers)
        assert r.headers["www-authenticate"] == "Bearer"
        assert detail in _is_error(r, 401, "Unauthorized")["detail"]
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/embeddings")):
        r = keyed_client.request(method, path, json={"input": "x"}, headers=headers)  # OpenAI's error object
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key" and detail in r.json()["error"]["message"]


def test_right_key_passes_and_probes_stay_open(keyed_client):
    for key in ("s3cret", "other"):
        r = keyed_client.post("/v1/search", json={"query": "Python", "k": 1},
                              headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert keyed_client.get("/healthz").status_code == 200
    assert keyed_client.get("/readyz").status_code == 200
    assert keyed_client.get("/").status_code == 200  # the web page (it sends the key the user types)
    assert keyed_client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_api_keys_from_the_environment(monkeypatch, tiny_index):
    monkeypatch.setenv("GENRET_SERVER__API_KEYS", "k1, k2")
    monkeypatch.setenv("GENRET_SERVER__PRELOAD", '["dense"]')
    monkeypatch.setenv("GENRET_SERVER__MAX_QUEUE", "7")
    server = Settings(indexes=[tiny_index]).server
    assert (server.api_keys, server.preload, server.max_queue) == (["k1", "k2"], ["dense"], 7)


def test_error_bodies_are_plain_json(small_body_client):
    r = small_body_client.post("/v1/search", content=b"\xff\xfe not utf-8",
                               headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and set(json.loads(r.content)) == {"error", "detail"}
