"""The query memory: training questions with their gold units, kept in the index (``memory-adapted``), searched by
the memory retriever and fused as a calibrated hybrid member (a dense + BM25 copy of the tiny corpus, the packaged
MiniLM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from genret.core import IndexFormatError, resolve_model_path
from genret.indexing import (
    ADAPTED_MEMORY,
    Index,
    QueryMemory,
    add_to_index,
    read_query_memory,
    verify_index,
    write_adapted_dense,
    write_query_memory,
)
from genret.retrieval import (
    MemoryRetriever,
    MemorySearchConfig,
    RetrievalConfig,
    base_retrievers,
    default_members,
    load_retriever,
    memory_encoder,
    memory_from_kilt,
)
from genret.retrieval._memory import memory_scores
from genret.retrieval.hybrid import member_contributions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

CPU = RetrievalConfig(dense={"device": "cpu"})


def _record(qid: str, question: str, page: str, paragraph: int) -> dict:
    return {"id": qid, "input": question, "output": [{"provenance": [
        {"wikipedia_id": page, "start_paragraph_id": paragraph, "end_paragraph_id": paragraph}]}]}


RECORDS = [
    _record("a", "When did the oil embargo by OAPEC begin?", "p-oil", 1),
    _record("b", "How much did oil prices rise by March 1974?", "p-oil", 2),
    _record("c", "Who created the Python programming language?", "p-python", 1),
    _record("d", "Which colours of light does chlorophyll absorb?", "p-photo", 2),
    _record("e", "A question whose page the index lacks", "p-none", 1),
]


@pytest.fixture(scope="module")
def memory_index(dense_bm25_index):
    path = dense_bm25_index("memory")
    with Index(path) as index:
        memory = memory_from_kilt(index, RECORDS, memory_encoder(index, "cpu"))
    write_query_memory(path, memory, trained={"train": "test"})
    return path


def _gold(index: Index, page: str, paragraph: int) -> int:
    return next(u.unit_id for u in index.store.get(list(range(len(index.store))))
                if u.page_id == page and u.start_paragraph <= paragraph <= u.end_paragraph)


def test_a_paraphrase_finds_its_training_question_and_scores_are_calibrated(memory_index):
    with Index(memory_index) as index:
        memory = read_query_memory(index)
        assert len(memory.queries) == 4 and memory.encoder == "dense"  # the record without a gold unit is left out
        retriever = MemoryRetriever(index, device="cpu")
        hits = retriever.search("who made python", k=5)
        assert hits and hits[0].unit_id == _gold(index, "p-python", 1) and hits[0].provenance.wikipedia_id == \
            "p-python"
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:])) and all(0 < h.score <= 1 for h in hits)
        exact = retriever.search(RECORDS[0]["input"], k=1)  # the training question itself: similarity 1, score 1
        assert exact[0].unit_id == _gold(index, "p-oil", 1) and exact[0].score == pytest.approx(1.0, abs=1e-3)
        # nothing close: no hits at a high floor (a query with no near training question gets nothing)
        strict = MemoryRetriever(index, MemorySearchConfig(floor=0.95), device="cpu")
        assert strict.search("banana bread recipe with walnuts", k=5) == []
        assert len(retriever.search("oil prices", k=1)) == 1


def test_scores_come_from_the_nearest_question_citing_a_unit():
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    memory = QueryMemory(("q0", "q1", "q2"), ((7,), (7, 8), (9,)), vectors, "dense")
    (scores,) = memory_scores(memory, np.array([[2.0, 0.0]], dtype=np.float32), MemorySearchConfig(floor=0.5))
    # q0 (cos 1) sets unit 7 to 1; q1 (cos 0.8) gives 8 (0.8-0.5)/0.5; q2 (cos 0) is below the floor
    assert scores == pytest.approx({7: 1.0, 8: 0.6})
    (none,) = memory_scores(memory, np.array([[-1.0, 0.0]], dtype=np.float32), MemorySearchConfig())
    assert none == {}


def test_calibrated_members_keep_their_scores_in_weighted_fusion(memory_index):
    with Index(memory_index) as index:
        hits = MemoryRetriever(index, device="cpu").search("who made python", k=5)
    raw = member_contributions(hits, "weighted", "minmax", 60, calibrated=True)
    assert raw == {h.unit_id: h.score for h in hits}
    normalised = member_contributions(hits, "weighted", "minmax", 60)
    assert max(normalised.values()) == 1.0 and (len(hits) == 1 or min(normalised.values()) == 0.0)


def test_the_memory_joins_a_hybrid_by_fitted_weights_only_and_not_untrained(memory_index, tmp_path):
    path = tmp_path / "idx"
    shutil.copytree(memory_index, path)
    with Index(path) as index:
        assert "memory" in base_retrievers(index) and default_members(index) == ["dense", "bm25"]
        hybrid = load_retriever(index, "hybrid", CPU)
        try:
            assert list(hybrid.members) == ["dense", "bm25"]  # never a default member
        finally:
            hybrid.close()
        weights = RetrievalConfig(dense={"device": "cpu"}, hybrid={"weights": {"dense": 1, "bm25": 1, "memory": 1}})
        hybrid = load_retriever(index, "hybrid", weights)
        try:
            assert list(hybrid.members) == ["dense", "bm25", "memory"]
            top = hybrid.search("who made python", k=3)
            assert top[0].provenance.wikipedia_id == "p-python" and ("memory", 1) in top[0].member_ranks
        finally:
            hybrid.close()
        untrained = weights.model_copy(update={"memory": MemorySearchConfig(adapted=False)})
        hybrid = load_retriever(index, "hybrid", untrained)
        try:
            assert list(hybrid.members) == ["dense", "bm25"]
        finally:
            hybrid.close()


def test_corruption_and_a_changed_encoder_are_clear_errors(memory_index, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(memory_index, broken)
    with open(broken / "adapted" / "memory.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"query": "sneaked in", "units": [0]}) + "\n")
    with pytest.raises(IndexFormatError):
        Index(broken)
    # a new adapted encoder: the memory is embedded again with it, in the same swap
    moved = tmp_path / "moved"
    shutil.copytree(memory_index, moved)
    write_adapted_dense(moved, Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")),
                        trained={"train": "test"}, device="cpu", progress=False)
    verify_index(moved, progress=False)
    with Index(moved) as index:
        memory = read_query_memory(index)
        assert memory.encoder == "dense-adapted" and len(memory.queries) == 4
        hits = MemoryRetriever(index, device="cpu").search(RECORDS[2]["input"], k=1)
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        # a memory whose recorded encoder is not the one searched with is refused, saying how to rebuild it
        index.component(ADAPTED_MEMORY).params["encoder_fingerprint"] = "0" * 64
        with pytest.raises(IndexFormatError, match="another encoder.*genret train memory"):
            read_query_memory(index)
    with Index(memory_index) as index:
        bad = QueryMemory(("q",), ((10_000,),), np.zeros((1, 384), dtype=np.float32), "dense")
    with pytest.raises(ValueError, match="outside the index"):
        write_query_memory(memory_index, bad, trained={})


def test_add_replacing_a_page_renumbers_the_memory(memory_index, tmp_path, data_dir):
    path = tmp_path / "idx"
    shutil.copytree(memory_index, path)
    with Index(path) as index:
        units = index.store.get(list(range(len(index.store))))
        oil = [u.unit_id for u in units if u.page_id == "p-oil"]
        python_unit = _gold(index, "p-python", 1)
    page = json.loads(next(line for line in open(data_dir / "corpus.jsonl") if '"p-oil"' in line))
    page["text"] = ["The 1973 oil crisis, rewritten in one paragraph."]
    corpus = tmp_path / "oil.jsonl"
    corpus.write_text(json.dumps(page) + "\n")
    add_to_index(path, corpus, replace=True, device="cpu", progress=False)
    verify_index(path, progress=False)
    with Index(path) as index:
        memory = read_query_memory(index)
        assert len(memory.queries) == 2  # both oil questions lost their paragraphs; python's and photo's remain
        moved = python_unit - sum(1 for u in oil if u < python_unit)
        assert (moved,) in memory.units and index.store.get([moved])[0].page_id == "p-python"
        hits = MemoryRetriever(index, device="cpu").search("who made python", k=1)
        assert hits[0].provenance.wikipedia_id == "p-python"
    assert index.has(ADAPTED_MEMORY)


def test_cli_train_memory_then_tune_it_into_the_hybrid(dense_bm25_index, tmp_path, capsys):
    from genret.eval import write_kilt
    from genret.retrieval.hybrid import read_tuned, weights_path
    from genret.serving.cli import main

    ix = dense_bm25_index("memory-cli")
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    write_kilt(train, RECORDS)
    write_kilt(dev, [_record("x", "who invented python", "p-python", 1),
                     _record("y", "what did OAPEC proclaim in October 1973", "p-oil", 1),
                     _record("z", "what light does chlorophyll take in", "p-photo", 2),
                     _record("w", "oil price rise by 1974", "p-oil", 2)])
    assert main(["train", "memory", str(ix), str(train), "--device", "cpu", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 4
    assert main(["search", str(ix), "who invented python", "--retriever", "memory", "-k", "1", "--json",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["provenance"]["wikipedia_id"] == "p-python"
    assert main(["tune", str(ix), str(dev), "--members", "dense,bm25,memory", "--device", "cpu", "--depth", "10",
                 "--step", "0.25", "--folds", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert read_tuned(weights_path(ix)).members == ["dense", "bm25", "memory"]
    assert main(["search", str(ix), "who invented python", "--retriever", "hybrid", "-k", "1", "--json",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["provenance"]["wikipedia_id"] == "p-python"
    few = tmp_path / "none.jsonl"
    write_kilt(few, [_record("n", "a question about nothing here", "p-none", 1)])
    assert main(["train", "memory", str(ix), str(few), "--device", "cpu", "--quiet"]) == 2
    assert "no record has a gold passage" in capsys.readouterr().err
