"""The RAG pipeline on the tiny index with a tiny real LM: passages, citations → provenance, label scoring by real
likelihoods, demonstrations (most similar last), streaming equal to batch answers, no-retrieval mode."""

from __future__ import annotations

import pytest

from genret.core import GenretError
from genret.indexing import Index
from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline, load_retriever
from genret.retrieval.demos import load_demo_source
from genret.retrieval.rag import HFGenerator
from tests.conftest import QUESTIONS


@pytest.fixture(scope="module")
def generator(tiny_chat_lm_dir):
    return HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=8,
                                       max_input_tokens=512))


@pytest.fixture(scope="module")
def index(tiny_index):
    with Index(tiny_index) as ix:
        yield ix


@pytest.fixture(scope="module")
def bm25(index):
    return load_retriever(index, "bm25")


def test_passages_are_the_retrievers_hits_and_citations_map_back(generator, bm25):
    pipe = RagPipeline(generator, bm25, config=RagConfig(passages=3))
    query = QUESTIONS[2][1]
    result = pipe.answer(query, task="qa")
    expected = bm25.search(query, 3, task="qa")
    assert [h.unit_id for h in result.passages] == [h.unit_id for h in expected]
    assert "[1] (" + expected[0].provenance.title + ")" in result.prompt[-1]["content"]
    assert result.task == "qa" and isinstance(result.answer, str)
    # citations parsed from a model output refer to the numbered passages and carry their KILT provenance
    prepared = pipe.prepare([query], "qa")[0]
    cited = pipe._answer(query, "qa", pipe.tasks["qa"], "Guido van Rossum [2] [1] [9]", prepared)
    assert cited.answer == "Guido van Rossum" and [c.number for c in cited.citations] == [2, 1]
    assert cited.citations[0].hit.provenance == expected[1].provenance


def test_label_tasks_pick_the_most_likely_label(generator, bm25):
    pipe = RagPipeline(generator, bm25, config=RagConfig(passages=2))
    claim = "Chlorophyll absorbs red light."
    result = pipe.answer(claim, task="fact_check")
    prompt = list(result.prompt)
    scores = generator.loglik([prompt, prompt], ["SUPPORTS", "REFUTES"])
    assert result.answer == ("SUPPORTS" if scores[0] >= scores[1] else "REFUTES")
    generated = RagPipeline(generator, bm25, config=RagConfig(passages=2, label_scoring=False)).answer(
        claim, task="fact_check")
    assert generated.raw == generator.generate([prompt])[0]


def test_batch_equals_single_and_stream_equals_answer(generator, bm25):
    pipe = RagPipeline(generator, bm25, config=RagConfig(passages=2))
    queries = [q[1] for q in QUESTIONS[:3]]
    batch = pipe.batch_answer(queries, task="qa")
    assert [b.raw for b in batch] == [pipe.answer(q, task="qa").raw for q in queries]
    events = list(pipe.stream(queries[0], task="qa"))
    assert events[0]["event"] == "passages" and events[-1]["event"] == "answer"
    assert [p["unit_id"] for p in events[0]["passages"]] == [h.unit_id for h in batch[0].passages]
    assert "".join(e["text"] for e in events if e["event"] == "token").strip() == batch[0].raw
    assert events[-1]["answer"] == batch[0].answer


def test_no_retrieval_and_bad_input(generator):
    pipe = RagPipeline(generator, None)
    result = pipe.answer("Who created Python?", task="qa")
    assert result.passages == () and result.citations == () and "Passages:" not in result.prompt[-1]["content"]
    with pytest.raises(GenretError, match="empty"):
        pipe.answer("   ")


def test_demonstrations_come_from_the_task_pool_most_similar_last(generator, tmp_path_factory):
    from genret.retrieval.demos import build_demo_pool
    from tests.retrieval.demos.demo_pools import write_pools

    d = tmp_path_factory.mktemp("rag-demos")
    qa, _ = write_pools(d)
    build_demo_pool(qa, "qa", d / "demos", device="cpu", progress=False)
    source = load_demo_source(d / "demos", "udr", device="cpu")
    try:
        pipe = RagPipeline(generator, None, source, RagConfig(passages=0, demos=2))
        query = "Which planet is called the Red Planet?"
        result = pipe.answer(query, task="qa")
        best_first = source.search(query, 2, task="qa")
        assert [x.id for x in result.demos] == [x.id for x in reversed(best_first)] and best_first[0].id == "qa-5"
        shown = [m["content"] for m in result.prompt]
        assert shown[1:5] == [f"Question: {best_first[1].input}", best_first[1].output,
                              f"Question: {best_first[0].input}", best_first[0].output]
        assert query in shown[-1]
        with pytest.raises(GenretError, match="task"):
            pipe.answer(query)
    finally:
        source.close()
