"""The HTTP API over a real index (FastAPI TestClient)."""

import pytest
from fastapi.testclient import TestClient

from serving import Settings, create_app


@pytest.fixture(scope="module")
def client(tiny_index):
    settings = Settings(indexes=[tiny_index], retrieval={"dense": {"device": "cpu"}})
    with TestClient(create_app(settings)) as c:
        yield c


def test_health_and_indexes(client, tiny_index):
    assert client.get("/healthz").json() == {"status": "ok"}
    (desc,) = client.get("/v1/indexes").json()
    assert desc == {"name": tiny_index.name, "units": 10, "unit_kind": "paragraph",
                    "retrievers": ["dense", "bm25", "generative", "hybrid"]}


def test_search_post_and_get_agree(client):
    body = client.post("/v1/search", json={"query": "Who created Python?", "k": 3}).json()
    assert body["retriever"] == "dense" and len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["provenance"]["wikipedia_id"] == "p-python" and top["rank"] == 1
    assert top["text"].startswith("Python is")
    got = client.get("/v1/search", params={"q": "Who created Python?", "k": 3}).json()
    assert [h["docid"] for h in got["hits"]] == [h["docid"] for h in body["hits"]]


@pytest.mark.parametrize("request_kwargs, status, words", [
    ({"json": {"query": "x", "k": 0}}, 422, "k must be between"),
    ({"json": {"query": "x", "k": 10_000}}, 422, "k must be between"),
    ({"json": {"query": "   "}}, 422, "empty"),
    ({"json": {"query": ""}}, 422, "query"),
    ({"json": {"query": "x", "index": "nope"}}, 404, "unknown index"),
    ({"json": {"query": "x", "retriever": "nope"}}, 404, "unknown retriever"),
    ({"json": {"k": 3}}, 422, "query"),
    ({"json": {"query": "x", "k": "many"}}, 422, "k"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
    ({"json": {"query": "x" * 5000}}, 422, "longer than"),
])
def test_bad_requests_are_clear_4xx(client, request_kwargs, status, words):
    r = client.post("/v1/search", **request_kwargs)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error", "detail"} and words in body["detail"]


def test_search_with_bm25(client):
    body = client.post("/v1/search", json={"query": "Guido van Rossum", "k": 2, "retriever": "bm25"}).json()
    assert body["retriever"] == "bm25"
    assert body["hits"][0]["provenance"]["wikipedia_id"] == "p-python"


def test_generative_search_over_http(tiny_index, tiny_lm_dir):
    settings = Settings(indexes=[tiny_index], retrieval={"generative": {"model": str(tiny_lm_dir), "device": "cpu",
                                                                        "beam": 2, "max_len": 2}})
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/search", json={"query": "Who created Python?", "k": 2, "retriever": "generative",
                                       "task": "page"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["retriever"] == "generative" and body["hits"]
        assert all(h["matched"] for h in body["hits"])
        assert len({h["provenance"]["wikipedia_id"] for h in body["hits"]}) == len(body["hits"])
