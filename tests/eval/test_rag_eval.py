"""RAG evaluation end to end: KILT predictions (answer + the passages shown as provenance) scored by `score`."""

from __future__ import annotations

import json

import pytest

from genret.eval import evaluate_rag, read_kilt, score
from genret.indexing import Index
from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline, load_retriever
from genret.retrieval.rag import HFGenerator


@pytest.fixture(scope="module")
def pipeline(tiny_chat_lm_dir, tiny_index):
    gen = HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=6,
                                      max_input_tokens=512))
    with Index(tiny_index) as ix:
        yield RagPipeline(gen, load_retriever(ix, "bm25"), config=RagConfig(passages=2))


def test_predictions_are_kilt_and_scores_equal_the_scorer(pipeline, data_dir, tmp_path):
    out = tmp_path / "rag.jsonl"
    report = evaluate_rag(pipeline, data_dir / "questions.jsonl", task_name="qa", out=out, progress=False)
    preds = read_kilt(out)
    gold = read_kilt(data_dir / "questions.jsonl")
    assert [p["id"] for p in preds] == [g["id"] for g in gold] and report["records"] == len(gold)
    for p, g in zip(preds, gold):
        (output,) = p["output"]
        hits = pipeline.retriever.search(g["input"], 2, task="qa")
        assert [x["wikipedia_id"] for x in output["provenance"]] == [h.provenance.wikipedia_id for h in hits]
        assert output["answer"] == pipeline.answer(g["input"], task="qa").answer
    expected = score(out, data_dir / "questions.jsonl", ks=(2,), downstream=True)
    assert report["downstream"] == expected["downstream"] and report["kilt"] == expected["kilt"]
    assert report["retrieval"]["Rprec"] == expected["retrieval"]["Rprec"] > 0.5
    # the KILT gate never gives more credit than the ungated metric
    assert report["kilt"]["KILT-f1"] <= report["downstream"]["f1"]
    json.dumps(report)
