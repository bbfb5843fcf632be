"""RAG over HTTP: ``POST /v1/rag`` (JSON and server-sent events), micro-batching of concurrent answers, bad input
(4xx, never 5xx), demonstrations, an upstream generator failure (502), streams that time out or lose their
client (the model work stops, the slot is freed)."""

from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import genret.serving.http._rag as rag_module
from genret.retrieval import GeneratorConfig
from genret.retrieval.rag import OpenAIGenerator
from genret.serving import create_app
from genret.serving.http._service import SearchService
from tests._openai_server import ServerThread, closed_port_url
from tests.conftest import QUESTIONS
from tests.serving.helpers import ScriptedGenerator, app_over, async_client, generator_swapped, tiny_settings

Q = QUESTIONS[2][1]  # Who created the Python programming language?


@pytest.fixture(scope="module")
def client(service):
    with app_over(service) as app, TestClient(app) as c:
        yield c


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        event = next((x[6:].strip() for x in lines if x.startswith("event:")), "message")
        data = "\n".join(x[5:].strip() for x in lines if x.startswith("data:"))
        out.append((event, json.loads(data)))
    return out


def test_rag_answer_passages_and_citations(client, service):
    body = {"query": Q, "task": "qa", "retriever": "bm25", "passages": 2}
    r = client.post("/v1/rag", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"query", "index", "retriever", "reranked", "task", "answer", "raw", "citations", "passages",
                        "demos", "usage", "truncated", "span", "method", "confidence"}
    assert got["reranked"] is False  # no reranking stage on this server
    assert got["confidence"] is None  # a span, not a label
    assert (got["retriever"], got["task"], got["demos"]) == ("bm25", "qa", [])
    assert got["method"] in ("span reader", "constrained span")  # a local model: a span, not free text
    expected = service.retriever(None, "bm25").search(Q, 2, task="qa")
    assert [h["docid"] for h in got["passages"]] == [h.unit_id for h in expected]
    assert got["passages"][0]["provenance"]["wikipedia_id"] == "p-python"
    direct = service.batch_rag([Q], service.rag_spec(Q, retriever="bm25", task="qa", passages=2))[0]
    assert got["raw"] == direct.answer.raw and got["answer"] == direct.answer.answer
    assert got["usage"]["prompt_tokens"] > 20 and got["usage"]["total_tokens"] == \
        got["usage"]["prompt_tokens"] + got["usage"]["completion_tokens"]
    # citations carry the cited passage's hit (KILT provenance)
    with generator_swapped(service, ScriptedGenerator("Guido van Rossum [2] [9]")):
        cited = client.post("/v1/rag", json=body).json()
    assert cited["answer"] == "Guido van Rossum" and [c["number"] for c in cited["citations"]][0] == 2
    assert cited["citations"][0]["hit"] == cited["passages"][1]
    # a short answer found in a passage says where (that passage is cited too): offsets in its text, KILT provenance
    span = cited["span"]
    found = cited["passages"][span["number"] - 1]
    assert span["number"] in [c["number"] for c in cited["citations"]]
    assert found["text"][span["start"]:span["end"]] == "Guido van Rossum"
    assert span["provenance"]["start_character"] == found["provenance"]["start_character"] + span["start"]
    # no retrieval
    bare = client.post("/v1/rag", json={"query": Q, "passages": 0}).json()
    assert bare["passages"] == [] and bare["retriever"] is None and bare["task"] == "generic"
    assert bare["reranked"] is False


def test_rag_stream_events_equal_the_answer(client):
    body = {"query": Q, "task": "qa", "retriever": "bm25", "passages": 2}
    plain = client.post("/v1/rag", json=body).json()
    r = client.post("/v1/rag", json={**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "passages" and kinds[-1] == "answer" and set(kinds[1:-1]) <= {"token"}
    assert events[0][1]["passages"] == plain["passages"] and events[0][1]["retriever"] == "bm25"
    assert "".join(d["text"] for k, d in events if k == "token").strip() == plain["raw"]
    assert events[-1][1] == plain


@pytest.mark.anyio
async def test_concurrent_answers_share_batch_answer_calls(service):
    calls = []
    real = service.batch_rag

    def recording(queries, spec):
        calls.append((list(queries), spec.task))
        time.sleep(0.05)
        return real(queries, spec)

    queries = [q[1] for q in QUESTIONS] * 2
    bodies = [{"query": q, "retriever": "bm25", "passages": 1, "task": "qa" if i % 2 else "squad"}
              for i, q in enumerate(queries)]
    alone = {(b["query"], b["task"]): real([b["query"]], service.rag_spec(
        b["query"], retriever="bm25", passages=1, task=b["task"]))[0].answer.raw for b in bodies}
    service.batch_rag = recording
    try:
        with app_over(service, rag_micro_batch_max=3) as app:
            async with async_client(app) as c:
                responses = await asyncio.gather(*(c.post("/v1/rag", json=b) for b in bodies))
            assert app.state.dispatcher.rag_calls == len(calls)
        with app_over(service, rag_micro_batch_max=1) as app:  # RAG batching off, search batching on
            async with async_client(app) as c:
                alone_responses = await asyncio.gather(*(c.post("/v1/rag", json=b) for b in bodies[:4]))
    finally:
        del service.batch_rag
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert [r.status_code for r in alone_responses] == [200] * 4
    batched, single = calls[:-4], calls[-4:]
    assert len(batched) < len(bodies) and max(len(qs) for qs, _ in batched) == 3  # grouped, at most 3 …
    # … never across tasks: each (question, task) answered once, in a call of its own task
    assert sorted((q, t) for qs, t in batched for q in qs) == sorted((b["query"], b["task"]) for b in bodies)
    assert [len(qs) for qs, _ in single] == [1] * 4
    for b, r in zip(bodies, responses):  # each gets its own answer, equal to an unbatched one
        assert r.json()["query"] == b["query"] and r.json()["raw"] == alone[(b["query"], b["task"])]


BAD = [
    ({"query": ""}, 422, "query"),
    ({"query": "  "}, 422, "empty"),
    ({"query": "x" * 2001}, 422, "longer than 2000"),
    ({"query": "x", "passages": -1}, 422, "passages"),
    ({"query": "x", "passages": 51}, 422, "passages"),
    ({"query": "x", "demos": 1}, 422, "demonstrations need a demonstrations directory"),
    ({"query": "x", "demos": 33}, 422, "demos"),
    ({"query": "x", "demo_source": "best"}, 422, "demo_source"),
    ({"query": "x", "index": "../tiny"}, 404, "unknown index"),
    ({"query": "x", "retriever": "nope"}, 404, "unknown retriever"),
    ({"query": "x", "stream": "maybe"}, 422, "stream"),
    ({"query": "x", "k": 3}, 422, "k"),
    ({"query": ["x"]}, 422, "query"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_bad_rag_requests_are_clear_4xx(client, body, status, words):
    r = client.post("/v1/rag", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail"} and words in r.json()["detail"], r.json()


def test_demonstrations_from_the_servers_pools(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, tmp_path_factory):
    from genret.retrieval.demos import build_demo_pool
    from tests.retrieval.demos.demo_pools import write_pools

    d = tmp_path_factory.mktemp("serve-demos")
    qa, _ = write_pools(d)
    build_demo_pool(qa, "qa", d / "demos", device="cpu", progress=False)
    settings = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir).model_copy(update={"demos": d / "demos"})
    svc = SearchService(settings)
    try:
        with TestClient(create_app(settings, svc)) as c:
            assert c.get("/v1/indexes").json()[0]["demo_tasks"] == ["qa"]
            q = "Which planet is called the Red Planet?"
            got = c.post("/v1/rag", json={"query": q, "task": "qa", "passages": 0, "demos": 1}).json()
            assert [x["id"] for x in got["demos"]] == ["qa-5"] and set(got["demos"][0]) == {
                "id", "input", "output", "score"}
            default = c.post("/v1/rag", json={"query": q, "task": "qa", "passages": 0,
                                              "demo_source": "random"}).json()
            assert len(default["demos"]) == settings.rag.demos  # the task has a pool: rag.demos by default
            assert c.post("/v1/rag", json={"query": q, "passages": 0}).json()["demos"] == []  # no task, no pool
            for body, words in (({"task": "fact_check", "demos": 1}, "no demonstration pool for task 'fact_check'"),
                                ({"demos": 1}, "demonstrations need a task")):
                r = c.post("/v1/rag", json={"query": q, **body})
                assert r.status_code == 422 and words in r.json()["detail"], r.text
    finally:
        svc.close()


def test_label_tasks_get_no_demonstrations_by_default_where_the_head_reads_none(tiny_index, tiny_lm_dir,
                                                                                 tiny_chat_lm_dir, tmp_path_factory):
    """With a pool for a label task, a request that asks for no number of demonstrations gets none when the
    label head reads prompts without them (else the head would step aside), and the number it asks for otherwise."""
    from genret.retrieval.demos import build_demo_pool
    from genret.retrieval.rag import LabelHead
    from tests.retrieval.demos.demo_pools import write_pools

    d = tmp_path_factory.mktemp("serve-label-demos")
    _, claims = write_pools(d)
    build_demo_pool(claims, "fact_check", d / "demos", device="cpu", progress=False)
    base = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir)
    LabelHead(model=base.generator.model, labels=("SUPPORTS", "REFUTES"), mean=[0.0], scale=[1.0],
              weights=[[0.0], [0.0]], bias=[0.0, 1.0]).save(d / "head.json")
    rag = base.rag.model_copy(update={"label_head": str(d / "head.json")})
    settings = base.model_copy(update={"demos": d / "demos", "rag": rag})
    svc = SearchService(settings)
    try:
        spec = svc.rag_spec("Mars is red.", task="fact_check", passages=0)
        assert spec.demos == 0
        assert svc.rag_spec("Mars is red.", task="fact_check", passages=0, demos=1).demos == 1  # asked: given
        plain = base.model_copy(update={"demos": d / "demos", "rag": base.rag.model_copy(
            update={"label_head": "none"})})
        other = SearchService(plain)
        try:
            assert other.rag_spec("Mars is red.", task="fact_check", passages=0).demos == plain.rag.demos
        finally:
            other.close()
    finally:
        svc.close()


def test_upstream_generator_failure_is_502(client, service, caplog):
    """A 502 says what kind of failure it was, never the generator's (internal) URL: that is in the log."""
    url = closed_port_url()
    upstream = OpenAIGenerator(GeneratorConfig(kind="openai", base_url=url, model="m", timeout_s=5))
    with generator_swapped(service, upstream), caplog.at_level("WARNING"):
        r = client.post("/v1/rag", json={"query": Q, "retriever": "bm25"})
        assert r.status_code == 502 and r.json()["error"] == "EndpointError", r.text
        assert r.json()["detail"] == "the generator's upstream endpoint could not be reached (details in the " \
            "server's log)"
        streamed = client.post("/v1/rag", json={"query": Q, "retriever": "bm25", "stream": True})
        assert streamed.status_code == 200  # the passages went out before the generator failed
        events = sse_events(streamed.text)
        assert [k for k, _ in events] == ["passages", "error"]
        assert events[-1][1]["status"] == 502 and events[-1][1]["error"] == "EndpointError"
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]})
        assert chat.status_code == 502
        chat_stream = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}],
                                                                "stream": True})
        assert "could not be reached" in chat_stream.text
        replies = r.text + streamed.text + chat.text + chat_stream.text
        assert "127.0.0.1" not in replies and "chat/completions" not in replies and "Errno" not in replies
    assert f"cannot connect to the generator endpoint {url}" in caplog.text
    upstream.close()


def test_a_stream_past_the_timeout_ends_with_an_error_event(service):
    slow = ScriptedGenerator("one two three", delay=0.3, pieces=40)
    with generator_swapped(service, slow), app_over(service, request_timeout_s=1.0) as app, TestClient(app) as c:
        started = time.monotonic()
        r = c.post("/v1/rag", json={"query": Q, "retriever": "bm25", "stream": True})
        events = sse_events(r.text)
        assert time.monotonic() - started < 5
        assert events[0][0] == "passages" and events[-1][0] == "error" and events[-1][1]["status"] == 504
        assert {k for k, _ in events[1:-1]} == {"token"}
        deadline = time.monotonic() + 5
        while app.state.gate.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.gate.in_flight == 0 and slow.streams_closed_early == 1  # the producer stopped


def test_a_client_that_goes_away_stops_the_generation(service):
    slow = ScriptedGenerator("one two three", delay=0.1, pieces=400)  # 40 s if nobody stopped it
    with generator_swapped(service, slow), app_over(service) as app, ServerThread(app) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            with http.stream("POST", "/v1/rag", json={"query": Q, "retriever": "bm25", "stream": True}) as r:
                seen = 0
                for line in r.iter_lines():
                    seen += line.startswith("event: token")
                    if seen == 3:
                        break  # leaves the block: the connection is closed
        deadline = time.monotonic() + 10
        while (app.state.gate.in_flight or app.state.dispatcher.jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.gate.in_flight == 0 and app.state.dispatcher.jobs == 0
        assert slow.streams_closed_early == 1


def test_the_generator_can_be_preloaded(service, monkeypatch):
    assert service.preload(["generator"]) == [("*", "generator")]
    monkeypatch.setattr(rag_module, "load_generator", lambda config: pytest.fail("loaded twice"))
    assert service.generator() is not None  # loaded already
    service.check_preload(["generator", "dense"])


def test_the_server_s_rag_settings_reach_the_pipeline(tiny_index, tiny_lm_dir, tiny_chat_lm_dir, tmp_path):
    """``rag.label_head`` (``GENRET_RAG__LABEL_HEAD``), like the other ``rag`` settings, decides how /v1/rag answers."""
    from genret.retrieval.rag import LabelHead

    for forced in ("SUPPORTS", "REFUTES"):
        path = tmp_path / f"{forced}.json"
        LabelHead(model=str(tiny_chat_lm_dir), labels=("SUPPORTS", "REFUTES"), mean=[0.0] * 64, scale=[1.0] * 64,
                  weights=[[0.0] * 64, [0.0] * 64], bias=[float(forced == "SUPPORTS"), float(forced == "REFUTES")]
                  ).save(path)
        settings = tiny_settings(tiny_index, tiny_lm_dir, tiny_chat_lm_dir).model_copy(
            update={"rag": tiny_settings(tiny_index, tiny_lm_dir).rag.model_copy(update={"label_head": str(path)})})
        svc = SearchService(settings)
        try:
            with app_over(svc) as app, TestClient(app) as c:
                r = c.post("/v1/rag", json={"query": "Python was created by Guido van Rossum.", "task": "fact_check",
                                            "retriever": "bm25", "passages": 1})
                assert r.status_code == 200, r.text
                assert r.json()["answer"] == forced
                assert r.json()["confidence"] == pytest.approx(math.e / (1 + math.e), abs=1e-4)  # the head's softmax
        finally:
            svc.close()
