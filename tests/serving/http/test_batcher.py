"""Micro-batching: concurrent searches share ``batch_search`` calls, each caller gets its own hits (equal to an
unbatched search), parameters are never mixed, and an error reaches only the request that caused it."""

import asyncio

import pytest

from tests.serving.helpers import app_over, async_client, wrapped

QUERIES = ["Who created Python?", "oil embargo 1973", "highest mountain", "jazz in New Orleans",
           "chlorophyll light", "Guido van Rossum", "Edmund Hillary", "Louis Armstrong", "price of oil",
           "code readability", "OAPEC", "plants convert light"]

pytestmark = pytest.mark.anyio


async def _search_all(app, bodies):
    async with async_client(app) as client:
        return await asyncio.gather(*(client.post("/v1/search", json=b) for b in bodies))


def _ids_scores(hits):
    return [h["docid"] for h in hits], [h["score"] for h in hits]


async def test_concurrent_searches_share_batch_calls_and_get_their_own_hits(service):
    dense = service.retriever(None, "dense")
    expected = {q: dense.search(q, 3) for q in QUERIES}
    with wrapped(service, "dense", delay=0.05) as rec, app_over(service, micro_batch=True) as app:
        responses = await _search_all(app, [{"query": q, "k": 3} for q in QUERIES])
    assert [r.status_code for r in responses] == [200] * len(QUERIES)
    assert len(rec.calls) < len(QUERIES), rec.calls  # grouped
    assert sorted(q for call, _ in rec.calls for q in call) == sorted(QUERIES)  # each query searched once
    for q, r in zip(QUERIES, responses):
        body = r.json()
        assert body["query"] == q
        ids, scores = _ids_scores(body["hits"])
        assert ids == [h.unit_id for h in expected[q]]
        # batched vs alone: equal up to the encoder's padding effects (~1e-3 in bfloat16, dtype auto here)
        assert scores == pytest.approx([h.score for h in expected[q]], abs=2e-3)
    assert app.state.dispatcher.calls == len(rec.calls)


async def test_batching_off_is_one_call_per_request(service):
    with wrapped(service, "dense", delay=0.02) as rec, app_over(service, micro_batch=False) as app:
        responses = await _search_all(app, [{"query": q, "k": 2} for q in QUERIES[:6]])
    assert all(r.status_code == 200 for r in responses)
    assert sorted(call for call, _ in rec.calls) == sorted([q] for q in QUERIES[:6])


async def test_batches_respect_max_size_and_never_mix_parameters(service):
    bodies = [{"query": q, "k": 2 + i % 2} for i, q in enumerate(QUERIES)]
    with wrapped(service, "dense", delay=0.05) as rec, app_over(service, micro_batch_max=3) as app:
        responses = await _search_all(app, bodies)
    assert all(r.status_code == 200 for r in responses)
    assert all(len(call) <= 3 for call, _ in rec.calls)
    k_of = {b["query"]: b["k"] for b in bodies}
    for call, k in rec.calls:
        assert {k_of[q] for q in call} == {k}
    for b, r in zip(bodies, responses):
        assert len(r.json()["hits"]) == b["k"]


async def test_an_error_reaches_only_its_request(service):
    bodies = [{"query": q, "k": 2} for q in QUERIES[:5]] + [{"query": "a bad query", "k": 2}]
    with wrapped(service, "dense", delay=0.05, fail_on="bad") as rec, app_over(service) as app:
        responses = await _search_all(app, bodies)
    codes = [r.status_code for r in responses]
    assert codes == [200] * 5 + [422], codes
    assert responses[-1].json() == {"error": "InputError", "detail": "refusing a query with 'bad'"}
    assert any(len(call) > 1 and "a bad query" in call for call, _ in rec.calls)  # failed as a batch, then alone


async def test_wait_window_gathers_requests_when_idle(service):
    with wrapped(service, "dense") as rec, app_over(service, micro_batch_wait_ms=200) as app:
        async with async_client(app) as client:
            first = asyncio.ensure_future(client.post("/v1/search", json={"query": QUERIES[0], "k": 2}))
            await asyncio.sleep(0.05)
            second = await client.post("/v1/search", json={"query": QUERIES[1], "k": 2})
            assert (await first).status_code == second.status_code == 200
    assert [sorted(call) for call, _ in rec.calls] == [sorted(QUERIES[:2])]
