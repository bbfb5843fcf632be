"""Hybrid retrieval: RRF and weighted fusion against a brute-force computation, with real dense + BM25 members on
the tiny index, and the fusion rules on scripted members."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pytest

from genret.core import InputError, NotFoundError
from genret.indexing import Index, load_faiss
from genret.retrieval import (
    DenseRetriever,
    DenseSearchConfig,
    Hit,
    HybridConfig,
    HybridRetriever,
    Provenance,
    RetrievalConfig,
    Retriever,
    load_retriever,
)

QUERIES = ["oil embargo by OAPEC", "who climbed Everest first", "plants turn light into energy",
           "programming language readability", "New Orleans music", "jazz trumpet", "Guido van Rossum"]


# ------------------------------------------------------------------------------------------ real members


@pytest.fixture(scope="module")
def index(tiny_index):
    with Index(tiny_index) as ix:
        yield ix


@pytest.fixture(scope="module")
def members(index, encoder) -> dict[str, Retriever]:
    pytest.importorskip("pyserini")
    from genret.retrieval import BM25Retriever

    bm25 = BM25Retriever(index)
    yield {"bm25": bm25, "dense": DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder)}
    bm25.close()


@pytest.fixture(scope="module")
def exact_dense(index, encoder) -> dict[str, np.ndarray]:
    """Each query's inner products with every stored unit embedding (numpy brute force)."""
    flat = load_faiss(index.path, index.component("dense"))  # exact: the stored vectors
    emb = flat.reconstruct_n(0, flat.ntotal)
    return dict(zip(QUERIES, encoder.encode(QUERIES) @ emb.T))


def brute_force_rankings(exact_dense, bm25, query: str, depth: int) -> dict[str, list[tuple[int, float]]]:
    """Each member's top-``depth`` (unit id, score): dense from the brute-force scores (ties by id), BM25 as
    Lucene ranks it."""
    scores = exact_dense[query]
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:depth]
    return {"bm25": [(h.unit_id, h.score) for h in bm25.search(query, depth)],
            "dense": [(i, float(scores[i])) for i in order]}


def brute_force_fusion(rankings: dict[str, list[tuple[int, float]]], cfg: HybridConfig) -> list[tuple[int, float]]:
    """The fused (unit id, score) list, best first, ties by unit id, straight from the formulas."""
    units = sorted({u for ranking in rankings.values() for u, _ in ranking})
    fused = {}
    for u in units:
        total = 0.0
        for name, ranking in rankings.items():
            w = (cfg.weights or {}).get(name, 1.0)
            ids = [v for v, _ in ranking]
            if u not in ids:
                continue  # missing: adds 0 (RRF) / normalised 0 (weighted)
            if cfg.method == "rrf":
                total += w / (cfg.rrf_k + ids.index(u) + 1)
                continue
            s = [x for _, x in ranking]
            mine = s[ids.index(u)]
            if cfg.normalize == "minmax":
                norm = 1.0 if max(s) == min(s) else (mine - min(s)) / (max(s) - min(s))
            else:
                mean = sum(s) / len(s)
                std = math.sqrt(sum((x - mean) ** 2 for x in s) / len(s))
                norm = 0.0 if std == 0 else (mine - mean) / std
            total += w * norm
        fused[u] = total
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.parametrize("cfg", [
    HybridConfig(method="rrf"),
    HybridConfig(method="rrf", depth=3, rrf_k=1),
    HybridConfig(method="rrf", depth=4, weights={"bm25": 2.0, "dense": 0.5}),
    HybridConfig(),
    HybridConfig(method="weighted", depth=3, weights={"bm25": 0.3}),
    HybridConfig(method="weighted", normalize="zscore", depth=5),
], ids=["rrf", "rrf-depth3-k1", "rrf-weights", "minmax", "minmax-depth3-weights", "zscore-depth5"])
def test_fusion_equals_brute_force(index, exact_dense, members, cfg):
    k = min(cfg.depth, 10)  # members are asked for max(depth, k): k ≤ depth keeps the depth cut visible
    hybrid = HybridRetriever(members, cfg)
    results = hybrid.batch_search(QUERIES, k=k)
    for query, hits in zip(QUERIES, results):
        expected = brute_force_fusion(brute_force_rankings(exact_dense, members["bm25"], query, cfg.depth), cfg)
        expected = expected[:k]
        assert [h.unit_id for h in hits] == [u for u, _ in expected], query
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=1e-5, atol=1e-6)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        units = index.store.get([h.unit_id for h in hits])
        assert [h.provenance for h in hits] == [Provenance.of(u) for u in units]
        assert [h.text for h in hits] == [u.text for u in units]


def test_a_unit_found_by_one_member_still_appears(members):
    query = "New Orleans music"
    dense_ids = [h.unit_id for h in members["dense"].search(query, 3)]
    bm25_ids = [h.unit_id for h in members["bm25"].search(query, 3)]
    assert set(dense_ids) - set(bm25_ids)  # precondition: some units only dense finds
    for method in ("rrf", "weighted"):
        hits = HybridRetriever(members, HybridConfig(method=method, depth=3)).search(query, k=3)
        assert {h.unit_id for h in hits} == set(dense_ids) | set(bm25_ids)
    # at full depth, every unit either member returned is in the fused list
    query = "Guido van Rossum"
    hits = HybridRetriever(members, HybridConfig(method="rrf", depth=10)).search(query, k=10)
    assert {h.unit_id for h in hits} == {h.unit_id for n in members for h in members[n].search(query, 10)}


def test_weights_change_the_order(members):
    query = "jazz trumpet"
    dense_order = [h.unit_id for h in members["dense"].search(query, 10)]
    bm25_order = [h.unit_id for h in members["bm25"].search(query, 10)]
    assert dense_order[:2] != bm25_order[:2]
    for method in ("rrf", "weighted"):
        only_dense = HybridRetriever(members, HybridConfig(method=method, weights={"bm25": 0.0}))
        only_bm25 = HybridRetriever(members, HybridConfig(method=method, weights={"dense": 0.0}))
        assert [h.unit_id for h in only_dense.search(query, 10)] == dense_order
        fused = [h.unit_id for h in only_bm25.search(query, 10)]
        assert fused[0] == bm25_order[0] != dense_order[0]
        assert [u for u in fused if u in bm25_order] == bm25_order


def test_batch_equals_single_and_hits_are_frozen(members):
    hybrid = HybridRetriever(members, HybridConfig(method="weighted"))
    batch = hybrid.batch_search(QUERIES, k=5)
    for query, hits in zip(QUERIES, batch):
        single = hybrid.search(query, k=5)
        assert [(h.unit_id, h.rank) for h in single] == [(h.unit_id, h.rank) for h in hits]
        # the encoder's batched and single vectors differ a little (padding changes the matrix shapes): in the last
        # float bits in float32, by up to ~1e-3 in bfloat16 (dtype auto on a CPU with AMX / AVX512-BF16)
        assert [h.score for h in single] == pytest.approx([h.score for h in hits], abs=2e-3)
    assert isinstance(batch[0][0], Hit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch[0][0].score = 0.0  # type: ignore[misc]
    assert hybrid.batch_search([], k=3) == []
    with pytest.raises(ValueError, match="k must be at least 1"):
        hybrid.search("x", k=0)


def test_load_hybrid_builds_members_through_the_registry(index):
    pytest.importorskip("pyserini")
    config = RetrievalConfig(hybrid=HybridConfig(retrievers=["bm25"]))
    hybrid = load_retriever(index, "hybrid", config)
    try:
        assert list(hybrid.members) == ["bm25"] and hybrid.name == "hybrid"
        hits = hybrid.search("price of oil in 1974", k=5)
        bm25_hits = hybrid.members["bm25"].search("price of oil in 1974", 5)
        assert [h.unit_id for h in hits] == [h.unit_id for h in bm25_hits]  # RRF of one member keeps its order
    finally:
        hybrid.close()
    with pytest.raises(NotFoundError, match="unknown retriever 'nope'"):
        load_retriever(index, "hybrid", RetrievalConfig(hybrid=HybridConfig(retrievers=["bm25", "nope"])))


def test_a_hybrid_over_shared_members_leaves_them_open(index):
    """``load_hybrid(…, shared=True)`` (a server's hybrid over the retrievers it also serves alone): closing the
    hybrid, or a member failing to load, closes none of the members the caller handed out."""
    pytest.importorskip("pyserini")
    from genret.retrieval import BM25Retriever, load_hybrid

    closed: list[str] = []

    class Counted(BM25Retriever):
        def close(self) -> None:
            closed.append(self.name)
            super().close()

    bm25 = Counted(index)
    try:
        config = RetrievalConfig(hybrid=HybridConfig(retrievers=["bm25"]))
        hybrid = load_hybrid(index, config, lambda name: bm25, shared=True)
        hybrid.close()
        assert closed == [] and bm25.search("price of oil in 1974", k=2)  # still open
        failing = RetrievalConfig(hybrid=HybridConfig(retrievers=["bm25", "dense"]))

        def load(name: str):
            if name == "dense":
                raise NotFoundError("no dense here")
            return bm25

        with pytest.raises(NotFoundError):
            load_hybrid(index, failing, load, shared=True)
        assert closed == []
    finally:
        bm25.close()
    assert closed == ["bm25"]


# ------------------------------------------------------------------------------------------ scripted members


def _prov(uid: int) -> Provenance:
    return Provenance(f"page-{uid}", f"Page {uid}", 1, 1, 0, 10)


class Scripted(Retriever):
    """Returns fixed (unit id, score) lists, best first; records the calls it gets."""

    def __init__(self, ranking: list[tuple[int, float]], matched: bool = False) -> None:
        self.ranking, self.matched, self.calls = ranking, matched, []

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None) -> list[list[Hit]]:
        self.calls.append((list(queries), k, task))
        m = ((f"ngram-{self.ranking[0][0]}", 1.5),) if self.matched else ()
        return [[Hit(u, s, r, _prov(u), f"text {u}", m) for r, (u, s) in enumerate(self.ranking[:k], 1)]
                for _ in queries]


def test_rrf_by_hand():
    a, b = Scripted([(1, 9.0), (2, 8.0), (3, 7.0)]), Scripted([(3, 0.9), (4, 0.5)])
    hits = HybridRetriever({"a": a, "b": b},
        HybridConfig(retrievers=["a", "b"], method="rrf", rrf_k=10)).search("q", k=10)
    expected = {1: 1 / 11, 2: 1 / 12, 3: 1 / 13 + 1 / 11, 4: 1 / 12}
    assert [h.unit_id for h in hits] == [3, 1, 2, 4]  # 2 and 4 tie: lower unit id first
    assert [h.member_ranks for h in hits] == [(("a", 3), ("b", 1)), (("a", 1),), (("a", 2),), (("b", 2),)]
    assert [h.score for h in hits] == pytest.approx([expected[u] for u in (3, 1, 2, 4)])
    assert [h.rank for h in hits] == [1, 2, 3, 4]


def test_weighted_normalisation_by_hand():
    a, b = Scripted([(1, 10.0), (2, 6.0), (3, 2.0)]), Scripted([(7, 0.3)])  # one hit: min = max → 1
    minmax = HybridRetriever({"a": a, "b": b}, HybridConfig(retrievers=["a", "b"], method="weighted",
                                                            weights={"a": 2.0}))
    assert [(h.unit_id, h.score) for h in minmax.search("q", 10)] == [(1, 2.0), (2, 1.0), (7, 1.0), (3, 0.0)]
    zscore = HybridRetriever({"a": a, "b": b}, HybridConfig(retrievers=["a", "b"], method="weighted",
                                                            normalize="zscore"))
    std = math.sqrt(32 / 3)
    got = [(h.unit_id, h.score) for h in zscore.search("q", 10)]
    assert [u for u, _ in got] == [1, 2, 7, 3]  # 7: std 0 → 0; 3 is below a's mean → negative
    assert [s for _, s in got] == pytest.approx([4 / std, 0.0, 0.0, -4 / std])


def test_depth_task_provenance_and_matched_come_from_members():
    plain, generative = Scripted([(5, 1.0), (6, 0.5)]), Scripted([(6, -2.0), (8, -3.0)], matched=True)
    hybrid = HybridRetriever({"plain": plain, "gen": generative},
        HybridConfig(retrievers=["plain", "gen"], method="rrf", depth=3))
    hits = hybrid.batch_search(["q1", "q2"], k=2, task="nq")
    assert plain.calls == generative.calls == [(["q1", "q2"], 3, "nq")]
    hybrid.search("q", k=7)
    assert plain.calls[-1][1] == 7  # never fewer than k from each member
    top = hits[0][0]
    assert top.unit_id == 6 and top.provenance == _prov(6) and top.text == "text 6"
    assert top.matched == (("ngram-6", 1.5),)
    assert len(hits[0]) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"retrievers": ["bm25", "bm25"]}, "repeat"),
    ({"retrievers": ["hybrid", "dense"]}, "its own member"),
    ({"retrievers": []}, "at least 1"),
    ({"retrievers": ["bm25", "dense"], "weights": {"generative": 1.0}}, "not hybrid members"),
    ({"weights": {"bm25": -1.0}}, "≥ 0"),
    ({"retrievers": ["bm25", "dense"], "weights": {"bm25": 0.0, "dense": 0.0}}, "above 0"),
    ({"method": "max"}, "method"),
    ({"depth": 0}, "depth"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HybridConfig(**kwargs)


def test_retriever_checks_weights_against_its_members():
    with pytest.raises(ValueError, match="not hybrid members"):
        HybridRetriever({"x": Scripted([(1, 1.0)])}, HybridConfig(weights={"bm25": 2.0}))
    with pytest.raises(ValueError, match="at least one member"):
        HybridRetriever({})
    default = HybridRetriever({"x": Scripted([(1, 1.0)]), "y": Scripted([(2, 1.0)])})
    assert default.config.retrievers == ["x", "y"] and default.weights == {"x": 1.0, "y": 1.0}
    # no members named: the retriever's own (load_hybrid: every retriever the index has, or the fitted ones)
    unnamed = HybridRetriever({"x": Scripted([(1, 1.0)]), "y": Scripted([(2, 1.0)])}, HybridConfig(depth=5))
    assert HybridConfig().retrievers is None and unnamed.config.retrievers == ["x", "y"]
    assert HybridConfig(weights={"a": 1.0, "b": 0.0}).weight("b") == 0.0  # weights alone name the members


class Granular(Scripted):
    """A scripted member that ranks by granularity and records what it was asked and whether it was closed."""

    granularities = ("page", "passage")

    def __init__(self, ranking):
        super().__init__(ranking)
        self.asked, self.closed = [], False

    def batch_search(self, queries, k=10, *, task=None, granularity=None):
        self.check_granularity(granularity)
        self.asked.append(granularity)
        return super().batch_search(queries, k, task=task)

    def close(self):
        self.closed = True


def test_hybrid_forwards_granularity_and_close_to_its_members():
    plain, granular = Scripted([(1, 2.0)]), Granular([(2, 1.0)])
    hybrid = HybridRetriever({"plain": plain, "granular": granular})
    assert hybrid.granularities == ("page", "passage")
    hybrid.search("q", k=2, granularity="page")
    assert granular.asked == ["page"] and len(plain.calls) == 1  # the plain member ranks as it does
    with pytest.raises(InputError, match="the hybrid retriever takes page, passage"):
        hybrid.search("q", k=2, granularity="sentence")
    with pytest.raises(InputError, match="takes no granularity"):
        plain.check_granularity("page")
    hybrid.close()
    assert granular.closed


def test_granularities_are_known_without_loading_a_retriever(index):
    from genret.retrieval import retriever_granularities

    assert retriever_granularities(index, "bm25") == ()
    config = RetrievalConfig(hybrid=HybridConfig(retrievers=["bm25", "generative"]))
    assert retriever_granularities(index, "hybrid", config) == ("entity", "page", "passage", "sentence")
