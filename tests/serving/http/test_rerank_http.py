"""Reranking in the server: a retriever with a reranking stage (the index's adapted cross-encoder over the hybrid, or
a model ``retrieval.rerank`` names) answers ``/v1/search``, ``/v1/search/batch`` and ``/v1/rag`` in its reranked
order, the one ``load_retriever`` gives in process; ``rerank: false`` gives its first stage's; a route without a
reranking stage is unaffected; a served hybrid fuses its members' first stages (the retrievers their own routes
serve, not a copy, and never their reranked hits); the Ray backend's retrievers get their reranking stage too; RAG
answers (JSON and streamed) and chat completions (``genret.rerank``) say ``reranked``; the OpenAPI document
describes the fields.

The cross-encoder is made from the packaged MiniLM with an untrained head (as in ``tests/retrieval/test_rerank``):
its order is arbitrary but deterministic, and differs from the first stage's for the queries here.  float32
throughout, so that a micro-batched search ranks as a lone one does."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genret.indexing import Index, write_adapted_reranker
from genret.retrieval import RerankedRetriever, first_stage, load_retriever
from genret.serving import Settings
from genret.serving.http._service import SearchService
from tests.serving.helpers import ScriptedGenerator, app_over, async_client, generator_swapped

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

QUERIES = ["Who created the Python programming language?", "oil embargo", "Which pigment absorbs red light?",
           "highest mountain", "jazz trumpeter New Orleans"]
K = 5


def _settings(index: Path, **rerank) -> Settings:
    return Settings(indexes=[index], server={"lazy": True},
                    retrieval={"dense": {"device": "cpu", "dtype": "float32"},
                               "rerank": {"device": "cpu", "dtype": "float32", **rerank}})


def _pairs(hits) -> list[tuple[int, int]]:
    """``(unit id, rank)`` of hits, from the API's JSON or from ``Hit`` objects."""
    return [(h["docid"], h["rank"]) if isinstance(h, dict) else (h.unit_id, h.rank) for h in hits]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    from sentence_transformers import CrossEncoder

    from genret.core import resolve_model_path

    folder = tmp_path_factory.mktemp("models") / "cross-encoder"
    CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(str(folder))
    return folder


@pytest.fixture(scope="module")
def adapted_index(dense_bm25_index, cross_encoder) -> Path:
    """A dense + BM25 index with an adapted reranker over its hybrid (as ``genret adapt`` writes one)."""
    path = dense_bm25_index("rerank-served")
    write_adapted_reranker(path, cross_encoder, over="hybrid", depth=K, weight=0.5, trained={})
    return path


@pytest.fixture(scope="module")
def service(adapted_index):
    """A service over the adapted index (shadows the tiny index's shared ``service`` in this module)."""
    svc = SearchService(_settings(adapted_index))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def in_process(adapted_index, service):
    """``{retriever: the one load_retriever gives in process}`` with the server's retrieval settings."""
    with Index(adapted_index) as index:
        loaded = {name: load_retriever(index, name, service.settings.retrieval) for name in ("hybrid", "bm25")}
        try:
            yield loaded
        finally:
            for r in loaded.values():
                r.close()


def test_a_served_hybrid_answers_in_its_reranked_order_and_rerank_false_in_its_first_stages(client, in_process):
    hybrid = in_process["hybrid"]
    assert isinstance(hybrid, RerankedRetriever)  # the adapted reranker applies to the hybrid by default
    differ = 0
    for q in QUERIES:
        reranked, first = hybrid.search(q, K), first_stage(hybrid).search(q, K)
        differ += _pairs(reranked) != _pairs(first)
        r = client.post("/v1/search", json={"query": q, "k": K, "retriever": "hybrid"})
        assert r.status_code == 200, r.text
        assert r.json()["reranked"] is True and _pairs(r.json()["hits"]) == _pairs(reranked), q
        assert [h["score"] for h in r.json()["hits"]] == pytest.approx([h.score for h in reranked], abs=1e-4)
        r = client.post("/v1/search", json={"query": q, "k": K, "retriever": "hybrid", "rerank": False})
        assert r.status_code == 200, r.text
        assert r.json()["reranked"] is False and _pairs(r.json()["hits"]) == _pairs(first), q
        # GET takes it as a query parameter
        r = client.get("/v1/search", params={"q": q, "k": K, "retriever": "hybrid", "rerank": "false"})
        assert r.status_code == 200 and _pairs(r.json()["hits"]) == _pairs(first), r.text
        r = client.get("/v1/search", params={"q": q, "k": K, "retriever": "hybrid"})
        assert r.status_code == 200 and _pairs(r.json()["hits"]) == _pairs(reranked), r.text
    assert differ, "the reranker kept every first-stage order: this test would not see a missing reranking stage"
    for rerank, stage in ((True, hybrid), (False, first_stage(hybrid))):
        r = client.post("/v1/search/batch", json={"queries": QUERIES, "k": K, "retriever": "hybrid",
                                                  "rerank": rerank})
        assert r.status_code == 200 and r.json()["reranked"] is rerank, r.text
        assert [_pairs(x["hits"]) for x in r.json()["results"]] == [_pairs(h) for h in stage.batch_search(QUERIES, K)]


def test_a_route_without_a_reranking_stage_is_unaffected(client, in_process):
    bm25 = in_process["bm25"]
    assert not isinstance(bm25, RerankedRetriever)  # the adapted reranker was fitted over the hybrid only
    for q in QUERIES:
        for rerank in (True, False):
            r = client.post("/v1/search", json={"query": q, "k": K, "retriever": "bm25", "rerank": rerank})
            assert r.status_code == 200, r.text
            assert r.json()["reranked"] is False and _pairs(r.json()["hits"]) == _pairs(bm25.search(q, K)), q


def test_the_hybrid_fuses_the_first_stages_of_the_members_its_routes_serve(service):
    hybrid = service.retriever(None, "hybrid")
    assert isinstance(hybrid, RerankedRetriever)
    for name, member in first_stage(hybrid).members.items():
        assert member is first_stage(service.retriever(None, name))  # shared, not a second copy
        assert not isinstance(member, RerankedRetriever)


@pytest.mark.anyio
async def test_concurrent_searches_with_and_without_rerank_are_never_batched_together(service, in_process):
    hybrid = in_process["hybrid"]
    bodies = [{"query": q, "k": K, "retriever": "hybrid", "rerank": i % 2 == 0}
              for i, q in enumerate(QUERIES * 2)]
    with app_over(service, micro_batch=True, micro_batch_wait_ms=20) as app:
        async with async_client(app) as http:
            responses = await asyncio.gather(*(http.post("/v1/search", json=b) for b in bodies))
    for body, r in zip(bodies, responses):
        assert r.status_code == 200, r.text
        stage = hybrid if body["rerank"] else first_stage(hybrid)
        assert r.json()["reranked"] is body["rerank"]
        assert _pairs(r.json()["hits"]) == _pairs(stage.search(body["query"], K)), body


def _sse_events(text: str) -> list[tuple[str, dict]]:
    """``(event, data)`` of a genret event stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        event = next((x[6:].strip() for x in lines if x.startswith("event:")), "message")
        out.append((event, json.loads("\n".join(x[5:].strip() for x in lines if x.startswith("data:")))))
    return out


def _differing_query(hybrid, n: int) -> str:
    """A query whose top ``n`` the reranking stage changes (so that a test of the flag can fail)."""
    q = next((q for q in QUERIES if _pairs(hybrid.search(q, n)) != _pairs(first_stage(hybrid).search(q, n))), None)
    assert q is not None, "the reranker kept every first-stage top n: this test would not see the flag ignored"
    return q


def test_rag_passages_follow_the_rerank_flag(client, service, in_process):
    hybrid, n = in_process["hybrid"], 3
    q = _differing_query(hybrid, n)
    with generator_swapped(service, ScriptedGenerator()):
        for rerank, stage in ((True, hybrid), (False, first_stage(hybrid))):
            want = [h.unit_id for h in stage.search(q, n)]
            body = {"query": q, "retriever": "hybrid", "passages": n, "rerank": rerank}
            r = client.post("/v1/rag", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["reranked"] is rerank and [h["docid"] for h in r.json()["passages"]] == want, r.text
            # streamed: the passages event and the answer (a RagResponse) say it too
            r = client.post("/v1/rag", json={**body, "stream": True})
            assert r.status_code == 200, r.text
            events = _sse_events(r.text)
            (kind, passages), (last, answer) = events[0], events[-1]
            assert (kind, last) == ("passages", "answer"), r.text
            assert passages["reranked"] is rerank and [h["docid"] for h in passages["passages"]] == want
            assert answer["reranked"] is rerank and [h["docid"] for h in answer["passages"]] == want
        # the default is reranked; a retriever without a reranking stage, or no retrieval, is never reranked
        r = client.post("/v1/rag", json={"query": q, "retriever": "hybrid", "passages": n})
        assert r.json()["reranked"] is True, r.text
        r = client.post("/v1/rag", json={"query": q, "retriever": "bm25", "passages": n})
        assert r.json()["reranked"] is False, r.text
        r = client.post("/v1/rag", json={"query": q, "retriever": "hybrid", "passages": 0})
        assert r.json()["reranked"] is False and r.json()["retriever"] is None, r.text


def test_chat_takes_genret_rerank_and_says_reranked(client, service, in_process):
    """``genret.rerank`` false: the chat's passages come from the retriever's first stage; the ``genret`` extension
    says ``reranked``, whole and streamed (the finish chunk's extension)."""
    hybrid, n = in_process["hybrid"], 3
    q = _differing_query(hybrid, n)
    messages = [{"role": "user", "content": q}]
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [1]")):
        for options, stage, reranked in (({}, hybrid, True), ({"rerank": True}, hybrid, True),
                                         ({"rerank": False}, first_stage(hybrid), False)):
            want = [h.unit_id for h in stage.search(q, n)]
            body = {"messages": messages, "genret": {"retriever": "hybrid", "passages": n, **options}}
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            ext = r.json()["genret"]
            assert ext["reranked"] is reranked and [h["docid"] for h in ext["passages"]] == want, options
            assert ext["citations"][0]["hit"]["docid"] == want[0]  # [1]: the stage's first passage
            r = client.post("/v1/chat/completions", json={**body, "stream": True})
            assert r.status_code == 200, r.text
            chunks = [json.loads(x[6:]) for x in r.text.split("\n") if x.startswith("data: {")]
            (final,) = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
            assert final["genret"]["reranked"] is reranked, options
            assert [h["docid"] for h in final["genret"]["passages"]] == want, options
        # no reranking stage over bm25: never reranked
        r = client.post("/v1/chat/completions", json={"messages": messages, "genret": {"retriever": "bm25"}})
        assert r.status_code == 200 and r.json()["genret"]["reranked"] is False, r.text
    # a JSON flag: OpenAI's routes answer 400 for anything else
    for bad in ("false", 0):
        r = client.post("/v1/chat/completions", json={"messages": messages, "genret": {"rerank": bad}})
        assert r.status_code == 400 and "rerank" in r.json()["error"]["message"], r.text


def test_a_named_reranker_reranks_every_route_with_no_warning(adapted_index, cross_encoder, caplog):
    """``retrieval.rerank.model`` (here the cross-encoder's path; it takes precedence over the adapted one) is
    applied by the server: every route reranked, the hybrid over its members' first stages, equal to in-process."""
    settings = _settings(adapted_index, model=str(cross_encoder), depth=K)
    with caplog.at_level(logging.WARNING):
        svc = SearchService(settings)
    try:
        assert not [rec for rec in caplog.records if "rerank" in rec.getMessage()]
        served = {name: svc.retriever(None, name) for name in ("dense", "bm25", "hybrid")}
        assert all(isinstance(r, RerankedRetriever) for r in served.values())
        members = first_stage(served["hybrid"]).members
        assert members == {name: first_stage(served[name]) for name in ("dense", "bm25")}
        assert not any(isinstance(m, RerankedRetriever) for m in members.values())
        with app_over(svc) as app, TestClient(app) as c, Index(adapted_index) as index:
            for name in ("bm25", "hybrid"):
                want = load_retriever(index, name, settings.retrieval)
                try:
                    assert isinstance(want, RerankedRetriever)
                    for q in QUERIES[:3]:
                        r = c.post("/v1/search", json={"query": q, "k": K, "retriever": name})
                        assert r.status_code == 200 and r.json()["reranked"] is True, r.text
                        assert _pairs(r.json()["hits"]) == _pairs(want.search(q, K)), (name, q)
                        r = c.post("/v1/search", json={"query": q, "k": K, "retriever": name, "rerank": False})
                        assert _pairs(r.json()["hits"]) == _pairs(first_stage(want).search(q, K)), (name, q)
                finally:
                    want.close()
    finally:
        svc.close()


class _FakeRay:
    """A stand-in for ``_ray_serving.RayBackend``: the first stage ``load_ray_retriever`` would give."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load(self, index, name, retrieval):
        self.loaded.append(name)
        return first_stage(load_retriever(index, name, retrieval))

    def close(self) -> None:
        pass


def test_the_ray_backends_retrievers_get_their_reranking_stage(service):
    pool = service.pool
    fake = pool._ray = _FakeRay()
    try:
        with service.snapshots.use(service.default_index) as snap:
            hybrid, bm25 = pool._load(snap, "hybrid"), pool._load(snap, "bm25")
        try:
            assert fake.loaded == ["hybrid", "bm25"]
            assert isinstance(hybrid, RerankedRetriever) and not isinstance(first_stage(hybrid), RerankedRetriever)
            assert not isinstance(bm25, RerankedRetriever)  # no reranking stage over bm25 here
        finally:
            hybrid.close()
            bm25.close()
    finally:
        pool._ray = None


def test_the_document_describes_rerank_and_reranked(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("SearchRequest", "BatchSearchRequest", "RagRequest", "GenretChatOptions"):
        prop = schemas[name]["properties"]["rerank"]
        assert prop["type"] == "boolean" and prop["default"] is True and "first stage" in prop["description"]
    for name in ("SearchResponse", "BatchSearchResponse", "RagResponse", "RagPassagesEvent"):
        prop = schemas[name]["properties"]["reranked"]
        assert prop["type"] == "boolean" and "reranked" in prop["description"]
        assert "reranked" in schemas[name]["required"]
    assert "reranked" in schemas["ChatCompletion"]["properties"]["genret"]["description"]
    (param,) = [p for p in spec["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "rerank"]
    assert param["schema"]["type"] == "boolean" and "first stage" in param["description"]
    # a JSON flag, not a string or a number
    for bad in ("false", 0):
        r = client.post("/v1/search", json={"query": "oil", "rerank": bad})
        assert r.status_code == 422 and "body.rerank" in r.json()["detail"], r.text


@pytest.mark.ray
@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="Ray is an optional extra")
def test_genret_serve_on_ray_reranks_the_ray_hybrid_with_the_adapted_reranker(adapted_index):
    """The adapted reranker travels with the index to `genret serve --ray` (a real local Ray cluster): the hybrid
    over Ray actors is followed by the index's reranker, in the server's process, and ranks as in process."""
    settings = _settings(adapted_index)
    with Index(adapted_index) as ix:
        local = load_retriever(ix, "hybrid", settings.retrieval)
        try:
            want = [_pairs(local.search(q, k=K)) for q in QUERIES]
        finally:
            local.close()
    svc = SearchService(Settings(**settings.model_dump(exclude={"ray"}), ray={"replicas": 1}))
    try:
        served = svc.retriever(None, "hybrid")
        assert isinstance(served, RerankedRetriever)
        assert type(served.inner.members["dense"]).__name__ == "RayDenseRetriever"
        assert [_pairs(served.search(q, k=K)) for q in QUERIES] == want
    finally:
        svc.close()
