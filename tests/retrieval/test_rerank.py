"""The reranking stage (``retrieval._rerank``): the contract of a reranked retriever (order by the reranker's
scores, provenance and text kept, ranks and scores consistent, hits below the depth kept), the query-likelihood
reranker on the packaged LM, a sentence-transformers cross-encoder, and ``--rerank`` on the command line."""

from __future__ import annotations

import pytest

from genret.core import NotFoundError
from genret.indexing import Index
from genret.retrieval import (
    CrossEncoderReranker,
    QueryLikelihoodReranker,
    RerankConfig,
    RerankedRetriever,
    RetrievalConfig,
    blend,
    load_retriever,
    rerank_settings,
)
from genret.serving.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


class ByLength:
    """A scripted reranker: longer passages first (so the expected order is known)."""

    name = "by-length"

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    def scores(self, query, passages):
        self.seen.append((query, list(passages)))
        return [float(len(p)) for p in passages]


def test_reranked_hits_follow_the_reranker_and_keep_what_they_carry(tiny_index):
    with Index(tiny_index) as index:
        inner = load_retriever(index, "dense", RetrievalConfig(dense={"device": "cpu"}))
        reranker = ByLength()
        r = RerankedRetriever(inner, reranker, depth=4, index=index)
        try:
            q = "Who created the Python programming language?"
            first = inner.search(q, k=8)
            hits = r.search(q, k=6)
            assert len(hits) == 6 and [h.rank for h in hits] == list(range(1, 7))
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
            head = sorted(first[:4], key=lambda h: -len(f"{h.provenance.title}\n{h.text}"))
            assert [h.unit_id for h in hits[:4]] == [h.unit_id for h in head]
            assert [h.unit_id for h in hits[4:]] == [h.unit_id for h in first[4:6]]  # below the depth: as before
            by_id = {h.unit_id: h for h in first}
            assert all(h.provenance == by_id[h.unit_id].provenance and h.text == by_id[h.unit_id].text for h in hits)
            assert reranker.seen[-1][0] == q and len(reranker.seen[-1][1]) == 4  # the depth, not k
            assert r.batch_search([q, "oil embargo"], k=3)[0] == r.search(q, k=3)
            assert r.name == inner.name and r.granularities == inner.granularities
            with pytest.raises(ValueError):
                r.search(q, k=0)
        finally:
            r.close()


@pytest.mark.slow
def test_query_likelihood_prefers_the_passage_that_answers(tiny_index):
    ql = QueryLikelihoodReranker(device="cpu", dtype="float32")
    s = ql.scores("Who created the Python programming language?", [
        "Mount Everest\nMount Everest is Earth's highest mountain above sea level, in the Himalayas.",
        "Python (programming language)\nPython is a high-level programming language created by Guido van Rossum.",
    ])
    assert s[1] > s[0] and ql.scores("q", []) == []
    # through the registry: the hybrid's fusion is reranked, its members are not
    with Index(tiny_index) as index:
        config = RetrievalConfig(dense={"device": "cpu"}, rerank=RerankConfig(model="ql", depth=5, device="cpu"))
        r = load_retriever(index, "bm25", config)
        try:
            assert isinstance(r, RerankedRetriever)
            hits = r.search("Which pigment absorbs red light?", k=3)
            assert hits[0].provenance.wikipedia_id == "p-photo"
        finally:
            r.close()


@pytest.mark.slow
def test_a_cross_encoder_scores_pairs(tmp_path):
    """Any sentence-transformers cross-encoder: here one made from the packaged MiniLM (its head untrained), so
    only the mechanics are checked: one deterministic score a passage, equal to the library's own."""
    from sentence_transformers import CrossEncoder

    from genret.core import resolve_model_path

    folder = tmp_path / "ce"
    CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(str(folder))
    ce = CrossEncoderReranker(str(folder), device="cpu", dtype="float32")
    pairs = ["Python is a programming language.", "Jazz is a music genre."]
    got = ce.scores("python", pairs)
    want = CrossEncoder(str(folder), device="cpu").predict([("python", p) for p in pairs])
    assert got == pytest.approx([float(x) for x in want], abs=1e-5) and ce.scores("q", []) == []


@pytest.mark.slow
def test_cli_rerank_flag(tiny_index, capsys):
    assert main(["search", str(tiny_index), "Which pigment absorbs red light?", "--retriever", "bm25", "-k", "2",
                 "--rerank", "ql", "--rerank-depth", "4", "--device", "cpu", "--json"]) == 0
    assert "p-photo" in capsys.readouterr().out
    assert main(["search", str(tiny_index), "x", "--retriever", "bm25", "--rerank", "ql", "--rerank-depth", "0"]) == 2
    assert "--rerank-depth" in capsys.readouterr().err


def test_blend_interpolates_min_max_normalised_scores():
    first, second = [3.0, 2.0, 1.0], [0.0, 5.0, 10.0]
    assert blend(first, second, 1.0) == second  # the reranker's own scores, untouched
    assert blend(first, second, 0.0) == [1.0, 0.5, 0.0]  # the first stage's order
    assert blend(first, second, 0.25) == pytest.approx([0.75, 0.5, 0.25])
    assert blend([1.0, 1.0], [2.0, 2.0], 0.5) == [0.0, 0.0]  # a flat list normalises to zeros


def test_a_blended_rerank_moves_only_what_the_weight_allows(tiny_index):
    with Index(tiny_index) as index:
        inner = load_retriever(index, "dense", RetrievalConfig(dense={"device": "cpu"}))
        q = "Who created the Python programming language?"
        first = inner.search(q, k=4)
        try:
            kept = RerankedRetriever(inner, ByLength(), depth=4, index=index, weight=0.0).search(q, k=4)
            assert [h.unit_id for h in kept] == [h.unit_id for h in first]  # weight 0: the first stage's order
            half = RerankedRetriever(inner, ByLength(), depth=4, index=index, weight=0.5).search(q, k=4)
            lengths = [float(len(f"{h.provenance.title}\n{h.text}")) for h in first]
            want = blend([h.score for h in first], lengths, 0.5)
            order = sorted(range(4), key=lambda i: (-want[i], i))
            assert [h.unit_id for h in half] == [first[i].unit_id for i in order]
            assert [h.score for h in half] == pytest.approx(sorted(want, reverse=True))
            with pytest.raises(ValueError, match="weight"):
                RerankedRetriever(inner, ByLength(), depth=4, index=index, weight=1.5)
        finally:
            inner.close()


def test_rerank_settings_resolve_named_adapted_and_none(tiny_index):
    with Index(tiny_index) as index:
        assert rerank_settings(index, "dense", RetrievalConfig()) is None  # nothing named, nothing adapted
        named = rerank_settings(index, "dense", RetrievalConfig(rerank={"model": "ql"}))
        assert (named.model, named.depth, named.weight) == ("ql", 20, 1.0)
        with pytest.raises(NotFoundError, match="no adapted reranker"):
            rerank_settings(index, "dense", RetrievalConfig(rerank={"model": "adapted"}))
