"""The HTTP API over a real index (FastAPI TestClient): search, batch search, granularity, index names, and
bad input — always a 4xx with a JSON ``{"error", "detail"}``, never a 500."""

import json

import pytest
from fastapi.testclient import TestClient

import genret.serving.http._pool as pool_module
import genret.serving.http._snapshots as snapshots_module
from genret.serving import Settings, create_app
from genret.serving.http._deps import get_service, require_api_key
from tests.serving.helpers import app_over


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


def test_health_and_indexes(client, tiny_index):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    (desc,) = client.get("/v1/indexes").json()
    tasks = desc.pop("tasks")
    assert desc == {"name": tiny_index.name, "units": 10, "unit_kind": "paragraph",
                    "retrievers": ["dense", "bm25", "generative", "hybrid"], "demo_tasks": []}
    assert {"qa", "fact_check", "page", "generic"} <= set(tasks)


def test_search_post_and_get_agree(client):
    body = client.post("/v1/search", json={"query": "Who created Python?", "k": 3}).json()
    assert body["retriever"] == "dense" and len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["provenance"]["wikipedia_id"] == "p-python" and top["rank"] == 1
    assert top["text"].startswith("Python is")
    got = client.get("/v1/search", params={"q": "Who created Python?", "k": 3}).json()
    assert [h["docid"] for h in got["hits"]] == [h["docid"] for h in body["hits"]]


BAD = [
    ({"query": "x", "k": 0}, 422, "k must be between"),
    ({"query": "x", "k": 10_000}, 422, "k must be between"),
    ({"query": "x", "k": -3}, 422, "k must be between"),
    ({"query": "x", "k": 10**40}, 422, "k must be between"),
    ({"query": "   "}, 422, "empty"),
    ({"query": "\n\t"}, 422, "empty"),
    ({"query": ""}, 422, "query"),
    ({"query": "x", "index": "nope"}, 404, "unknown index"),
    ({"query": "x", "retriever": "nope"}, 404, "unknown retriever"),
    ({"query": "x", "retriever": ""}, 404, "unknown retriever"),
    ({"k": 3}, 422, "query"),
    ({"query": "x", "k": "many"}, 422, "k"),
    ({"query": "x", "k": 2.5}, 422, "k"),
    ({"query": 5}, 422, "query"),
    ({"query": ["x"]}, 422, "query"),
    ({"query": None}, 422, "query"),
    ({"query": "x", "index": 3}, 422, "index"),
    ({"query": "x", "task": {"a": 1}}, 422, "task"),
    ({"query": "x", "granularity": "chapter"}, 422, "granularity"),
    ({"query": "x", "retriever": "dense", "granularity": "page"}, 422, "applies to the generative retriever"),
    ({"query": "x", "retriever": "bm25", "granularity": "sentence"}, 422, "not 'bm25'"),
    ({"query": "x", "colour": "blue"}, 422, "colour"),
    ({"query": "x" * 5000}, 422, "longer than 2000"),
    ({"query": "\ud800 lone surrogate"}, 422, "query"),
    (["x"], 422, "body"),
    ("x", 422, "body"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_bad_requests_are_clear_4xx(client, body, status, words):
    # ASCII JSON, so that a lone surrogate travels as the escape "\\ud800"
    r = client.post("/v1/search", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    got = r.json()
    assert set(got) == {"error", "detail"} and words in got["detail"], got


@pytest.mark.parametrize("content, content_type", [
    (b"{not json", "application/json"),
    (b"", "application/json"),
    (b'{"query": "x"', "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b"query=x", "application/x-www-form-urlencoded"),
    (b"x", "text/plain"),
])
def test_malformed_bodies_are_4xx(client, content, content_type):
    r = client.post("/v1/search", content=content, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == {"error", "detail"}


@pytest.mark.parametrize("params, status, words", [
    ({}, 422, "q"),
    ({"q": ""}, 422, "q"),
    ({"q": "x", "k": "ten"}, 422, "k"),
    ({"q": "x", "k": "0"}, 422, "k must be between"),
    ({"q": "x", "retriever": "nope"}, 404, "unknown retriever"),
    ({"q": "x", "granularity": "chapter"}, 422, "granularity"),
    ({"q": "x" * 3000}, 422, "longer than"),
])
def test_bad_get_requests_are_clear_4xx(client, params, status, words):
    r = client.get("/v1/search", params=params)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize("body, words", [
    ({"queries": []}, "queries"),
    ({"queries": "x"}, "queries"),
    ({"queries": ["ok", ""]}, "query 1 is empty"),
    ({"queries": ["ok"] * 65}, "at most 64 queries"),
    ({"queries": ["ok"], "k": 0}, "k must be between"),
    ({"query": "x"}, "queries"),
])
def test_bad_batch_requests_are_422(client, body, words):
    r = client.post("/v1/search/batch", json=body)
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_unknown_paths_and_methods_are_json(client):
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = client.delete("/v1/search")
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed" and r.headers["allow"]


@pytest.mark.parametrize("name", ["../x", "..", "/etc", "/etc/passwd", "%2e%2e", "%2e%2e%2fetc", "./tiny",
                                  "tiny/", "tiny/../tiny", "TINY", "", " tiny", "tiny\x00", "~/tiny", "C:\\x"])
def test_index_names_never_reach_outside(client, service, tiny_index, monkeypatch, name):
    def refuse(*args, **kwargs):
        raise AssertionError("a request tried to open an index")

    monkeypatch.setattr(snapshots_module, "Index", refuse)
    monkeypatch.setattr(pool_module, "load_retriever", refuse)
    loaded = service.loaded
    for r in (client.post("/v1/search", json={"query": "x", "index": name}),
              client.post("/v1/search/batch", json={"queries": ["x"], "index": name}),
              client.get("/v1/search", params={"q": "x", "index": name})):
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "NotFoundError" and "unknown index" in r.json()["detail"]
    for raw in ("%2e%2e", "%2e%2e%2fetc", "..%2F..%2Fetc", "%2Fetc"):  # decoded by the server: still names
        assert client.get(f"/v1/search?q=x&index={raw}").status_code == 404
    assert service.loaded == loaded
    for outside in (str(tiny_index), str(tiny_index.parent)):  # a real directory path is still just a name
        assert client.post("/v1/search", json={"query": "x", "index": outside}).status_code == 404


def test_batch_equals_individual_searches(client):
    queries = ["Who created Python?", "oil embargo", "Louis Armstrong", "highest mountain"]
    for retriever in ("dense", "bm25"):
        batch = client.post("/v1/search/batch", json={"queries": queries, "k": 3, "retriever": retriever})
        assert batch.status_code == 200, batch.text
        body = batch.json()
        assert body["retriever"] == retriever and [r["query"] for r in body["results"]] == queries
        for q, result in zip(queries, body["results"]):
            single = client.post("/v1/search", json={"query": q, "k": 3, "retriever": retriever}).json()
            assert [h["docid"] for h in result["hits"]] == [h["docid"] for h in single["hits"]]
            assert [h["score"] for h in result["hits"]] == pytest.approx([h["score"] for h in single["hits"]],
                                                                          abs=1e-5)


def test_search_with_bm25(client):
    body = client.post("/v1/search", json={"query": "Guido van Rossum", "k": 2, "retriever": "bm25"}).json()
    assert body["retriever"] == "bm25"
    assert body["hits"][0]["provenance"]["wikipedia_id"] == "p-python"


def test_generative_search_over_http(client):
    r = client.post("/v1/search", json={"query": "Who created Python?", "k": 2, "retriever": "generative",
                                        "task": "page"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["retriever"] == "generative" and body["hits"]
    assert all(h["matched"] for h in body["hits"])
    assert len({h["provenance"]["wikipedia_id"] for h in body["hits"]}) == len(body["hits"])


def test_granularity_overrides_the_task_prompt(client, service):
    def search(**extra):
        r = client.post("/v1/search", json={"query": "Which pigment absorbs red light?", "k": 5,
                                            "retriever": "generative", **extra})
        assert r.status_code == 200, r.text
        return r.json()["hits"]

    pages = search(task="qa", granularity="page")
    assert len({h["provenance"]["wikipedia_id"] for h in pages}) == len(pages)
    direct = service.retriever(None, "generative").batch_search(["Which pigment absorbs red light?"], 5, task="qa",
                                                                granularity="page")[0]
    assert [h["docid"] for h in pages] == [h.unit_id for h in direct]
    sentences = search(task="qa", granularity="sentence")
    assert all(h["provenance"]["end_character"] - h["provenance"]["start_character"] == len(h["text"])
               for h in sentences)
    assert search(task="no-such-task") == search(task="generic")  # unknown task: the generic prompt


def test_a_hybrid_with_a_generative_member_takes_a_granularity(client):
    """The hybrid forwards the granularity to its generative member (the Retriever contract); dense refuses it."""
    body = {"query": "Which pigment absorbs red light?", "k": 5, "granularity": "page"}
    r = client.post("/v1/search", json={**body, "retriever": "hybrid"})
    assert r.status_code == 200, r.text
    assert r.json()["retriever"] == "hybrid" and r.json()["hits"]
    r = client.post("/v1/search", json={**body, "retriever": "dense"})
    assert r.status_code == 422 and "(or a hybrid with it), not 'dense'" in r.text


def test_app_opens_its_own_service(tiny_index):
    app = create_app(Settings(indexes=[tiny_index], retrieval={"dense": {"device": "cpu"}}, server={"lazy": True}))
    with TestClient(app) as c:
        assert c.get("/v1/indexes").json()[0]["name"] == tiny_index.name
    assert app.state.gate.closing


def test_several_indexes_by_name(tiny_index, tmp_path):
    import shutil

    other = tmp_path / "second"
    shutil.copytree(tiny_index, other)
    app = create_app(Settings(indexes=[tiny_index, other], retrieval={"dense": {"device": "cpu"}},
                              server={"lazy": True}))
    with TestClient(app) as c:
        assert [d["name"] for d in c.get("/v1/indexes").json()] == [tiny_index.name, "second"]
        a = c.post("/v1/search", json={"query": "Guido", "k": 2, "retriever": "bm25"}).json()
        b = c.post("/v1/search", json={"query": "Guido", "k": 2, "retriever": "bm25", "index": "second"}).json()
        assert (a["index"], b["index"]) == (tiny_index.name, "second") and a["hits"] == b["hits"]


def test_the_web_page_is_one_self_contained_file(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script>" in page and "<style>" in page and "http://" not in page and "https://" not in page
    csp = r.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_routes_take_the_service_and_the_key_check_as_dependencies(service):
    class Listing:  # a stand-in service: the route asks it, not the app's
        def describe(self) -> list[dict]:
            return [{"name": "stand-in", "units": 1, "unit_kind": "page", "retrievers": [], "tasks": [],
                     "demo_tasks": []}]

    with app_over(service, api_keys=["s3cret"]) as app, TestClient(app) as c:
        assert c.get("/v1/indexes").status_code == 401
        app.dependency_overrides[require_api_key] = lambda: None
        app.dependency_overrides[get_service] = Listing
        assert [d["name"] for d in c.get("/v1/indexes").json()] == ["stand-in"]
        app.dependency_overrides.clear()
        (own,) = c.get("/v1/indexes", headers={"Authorization": "Bearer s3cret"}).json()
        assert own["name"] == service.default_index
