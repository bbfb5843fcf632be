"""The default hybrid's members, fitting the fusion on a dev file (``genret tune``), the saved weights file, and
how ``load_hybrid`` uses it: on copies of the tiny index (the shared one stays without fitted weights)."""

from __future__ import annotations

import json
import shutil
from math import comb

import pytest

from genret.core import ConfigError, IndexFormatError
from genret.eval import evaluate, tune_fusion
from genret.eval._fusion_tune import Fusions, Scorer, simplex
from genret.indexing import Index
from genret.retrieval import (
    DEFAULT_MEMBER_WEIGHTS,
    Hit,
    HybridConfig,
    Provenance,
    RetrievalConfig,
    available_retrievers,
    load_retriever,
)
from genret.retrieval.hybrid import read_tuned, weights_path
from genret.serving import main


@pytest.fixture(scope="module")
def config(tiny_lm_dir) -> RetrievalConfig:
    """Real members; the generative one is the tiny random Llama (fast)."""
    pytest.importorskip("pyserini")
    return RetrievalConfig(dense={"device": "cpu"},
                           generative={"model": str(tiny_lm_dir), "device": "cpu", "beam": 2, "max_len": 2})


def with_hybrid(config: RetrievalConfig, hybrid: dict) -> RetrievalConfig:
    return RetrievalConfig(dense=config.dense, bm25=config.bm25, generative=config.generative,
                           hybrid=HybridConfig(**hybrid))


@pytest.fixture(scope="module")
def questions(data_dir):
    return data_dir / "questions.jsonl"


@pytest.fixture(scope="module")
def tuned(tiny_index, questions, config, tmp_path_factory):
    """A copy of the tiny index with fusion weights fitted over all three members."""
    ix = tmp_path_factory.mktemp("tuned") / "tiny"
    shutil.copytree(tiny_index, ix)
    doc, path = tune_fusion(ix, questions, config=config, depth=10, progress=False, folds=0)
    return ix, doc, path


@pytest.fixture(scope="module")
def no_fm_index(data_dir, tmp_path_factory):
    from genret.indexing import DenseConfig, IndexConfig, build_index

    out = tmp_path_factory.mktemp("nofm") / "tiny-nofm"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=("dense", "bm25"),
                                                           dense=DenseConfig(device="cpu")), progress=False)
    return out


# ----------------------------------------------------------------------------------- default members


def test_default_members_include_generative_where_the_index_has_an_fm_index(tiny_index, config):
    with Index(tiny_index) as ix:
        assert "hybrid" in available_retrievers(ix, config)
        r = load_retriever(ix, "hybrid", config)
        try:
            assert list(r.members) == ["dense", "bm25", "generative"] and r.tuned_from is None
            assert r.weights == {"dense": 1.0, "bm25": 1.0, "generative": 0.25}
            hits = r.search("Who created Python?", k=3)
            assert len(hits) == 3 and hits[0].provenance.wikipedia_id == "p-python"
        finally:
            r.close()


def test_explicit_members_and_weights_win(tiny_index, config):
    with Index(tiny_index) as ix:
        for hybrid, members in (({"retrievers": ["bm25", "dense"]}, ["bm25", "dense"]),
                                ({"weights": {"dense": 2.0, "bm25": 1.0}}, ["dense", "bm25"])):
            r = load_retriever(ix, "hybrid", with_hybrid(config, hybrid))
            assert list(r.members) == members
            r.close()


def test_default_members_without_an_fm_index(no_fm_index, config):
    with Index(no_fm_index) as ix:
        assert available_retrievers(ix, config) == ["dense", "bm25", "hybrid"]
        r = load_retriever(ix, "hybrid", config)
        assert list(r.members) == ["dense", "bm25"]
        r.close()
        asked = RetrievalConfig(hybrid={"retrievers": ["bm25", "generative"]})
        assert "hybrid" not in available_retrievers(ix, asked)


# ------------------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("n, step", [(2, 0.1), (3, 0.1), (3, 0.25), (4, 0.5)])
def test_simplex(n, step):
    grid = simplex(n, step)
    parts = round(1 / step)
    assert len(grid) == len(set(grid)) == comb(parts + n - 1, n - 1)
    assert all(len(w) == n and abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in grid)
    assert all(tuple(1.0 if j == i else 0.0 for j in range(n)) in grid for i in range(n))  # members alone
    with pytest.raises(ConfigError, match="step"):
        simplex(n, 0.3)


def _hit(uid: int, score: float, rank: int) -> Hit:
    page = f"p{uid // 2}"
    return Hit(uid, score, rank, Provenance(page, page, uid % 2 + 1, uid % 2 + 1, 0, 1), None)


def test_search_on_scripted_members_beats_or_equals_every_default():
    """Two scripted members, each right on different records: the best fusion is at least as good as each
    alone and as equal weights; the tie-break keeps the bm25+dense default when nothing beats it."""
    gold = [{"id": str(i), "input": "q", "output": [{"provenance": [
        {"wikipedia_id": f"p{g // 2}", "start_paragraph_id": g % 2 + 1}]}]} for i, g in enumerate((0, 3, 5, 6))]
    a = [[0, 1, 2], [1, 2, 3], [4, 5, 6], [7, 6, 0]]  # right on records 0, (1 at rank 3), 2 at 2, 3 at 2
    b = [[1, 0, 2], [3, 1, 0], [6, 4, 5], [6, 7, 1]]
    hits = {"bm25": [[_hit(u, 1.0 / (r + 1), r + 1) for r, u in enumerate(lst)] for lst in a],
            "dense": [[_hit(u, 0.9 - 0.2 * r, r + 1) for r, u in enumerate(lst)] for lst in b]}
    scorer = Scorer(gold, hits, "Rprec", ["page", "passage"])
    fusions = Fusions(["bm25", "dense"], hits, scorer, depth=3, rrf_k=60)
    results = {n + " alone": scorer([[h.unit_id for h in r] for r in hits[n]]) for n in hits}
    (weights, scheme), tried = fusions.search(0.1, ["minmax", "zscore", "rrf"], results)
    best = fusions.evaluate(scheme, weights)["objective"]
    assert tried == 1 + 3 * 11
    assert all(best >= m["objective"] - 1e-12 for m in results.values())
    assert best >= fusions.evaluate("minmax", (1.0, 1.0))["objective"]


# ------------------------------------------------------------------------------------- fitting + saving


def test_tuning_writes_a_self_describing_file(tuned, questions):
    ix, doc, path = tuned
    assert path == weights_path(ix) and read_tuned(path) == doc
    raw = json.loads(path.read_text())
    assert raw["format"] == "genret-hybrid-weights" and raw["format_version"] == 1
    assert raw["members"] == ["dense", "bm25", "generative"] and raw["depth"] == 10
    assert raw["dev"]["records"] == 5 and len(raw["dev"]["sha256"]) == 64 and raw["dev"]["file"].endswith(
        "questions.jsonl")
    assert raw["objective"] == {"metric": "Rprec", "levels": ["page", "passage"]}
    assert raw["member_settings"]["generative"]["beam"] == 2
    results = doc.results
    assert {"dense alone", "bm25 alone", "generative alone", "default weights", "default: bm25+dense",
            "fused (chosen)"} <= set(results)
    chosen = results["fused (chosen)"]["objective"]
    assert all(chosen >= r["objective"] - 1e-12 for r in results.values())  # never worse on the tuning data
    for r in results.values():
        assert r["objective"] == pytest.approx((r["page"] + r["passage"]) / 2)


def test_load_hybrid_uses_the_saved_weights(tuned, config, questions):
    ix, doc, path = tuned
    with Index(ix) as index:
        r = load_retriever(index, "hybrid", config)
        try:
            assert r.tuned_from == str(path)
            assert r.weights == {m: w for m, w in doc.weights.items() if w > 0}
            assert list(r.members) == doc.active
            assert (r.config.method, r.config.normalize, r.config.depth) == (doc.method, doc.normalize, 10)
            # the fused retriever reproduces the metrics recorded for the chosen fusion
            report = evaluate(index, questions, "hybrid", 10, ks=(5,), config=config, progress=False)
        finally:
            r.close()
    for level in ("page", "passage"):
        assert report["levels"][level]["Rprec"] == pytest.approx(doc.results["fused (chosen)"][level])


def test_the_server_uses_the_saved_weights(tuned, config):
    from genret.serving import Settings
    from genret.serving.http._service import SearchService

    ix, doc, path = tuned
    service = SearchService(Settings(indexes=[ix], retrieval=config))
    try:
        r = service.retriever(None, "hybrid")
        assert r.tuned_from == str(path) and r.weights == {m: w for m, w in doc.weights.items() if w > 0}
    finally:
        service.close()
    off = SearchService(Settings(indexes=[ix], retrieval=with_hybrid(config, {"tuned": "off"})))
    try:
        assert off.retriever(None, "hybrid").tuned_from is None
    finally:
        off.close()


def test_unknown_metric_or_too_few_members(tuned, questions, config):
    ix, _, _ = tuned
    for kwargs, words in (({"metric": "answer_in_context@5"}, "unknown metric"), ({"metric": "recall@1"}, "unknown"),
                          ({"members": ["bm25"]}, "two or more"), ({"members": ["bm25", "nope"]}, "two or more")):
        with pytest.raises(ConfigError, match=words):
            tune_fusion(ix, questions, config=config, out=ix / "never.json", progress=False,
                        **{"members": ["bm25", "dense"], **kwargs})
    assert not (ix / "never.json").exists()


@pytest.mark.parametrize("hybrid, used", [
    ({}, True),
    ({"tuned": "off"}, False),
    ({"weights": {"bm25": 1.0, "dense": 1.0}}, False),
    ({"retrievers": ["dense", "bm25", "generative"]}, True),
    ({"retrievers": ["bm25"]}, False),
])
def test_what_overrides_the_saved_weights(tuned, config, hybrid, used):
    ix, doc, path = tuned
    with Index(ix) as index:
        r = load_retriever(index, "hybrid", with_hybrid(config, hybrid))
        assert (r.tuned_from == str(path)) is used
        # fitted weights nothing overrides make the hybrid the index's default retriever (searches use them unasked)
        assert (available_retrievers(index, with_hybrid(config, hybrid))[0] == "hybrid") is (hybrid == {})
        if hybrid == {}:
            default = load_retriever(index, None, with_hybrid(config, hybrid))
            assert default.tuned_from == str(path)
            default.close()
        if not used and "weights" not in hybrid:
            assert r.weights == {m: DEFAULT_MEMBER_WEIGHTS.get(m, 1.0) for m in r.members}
        r.close()


@pytest.mark.parametrize("content, words", [
    ("{not json", "is corrupt"),
    ('{"format": "genret-index", "format_version": 1}', "not a genret hybrid-weights file"),
    ('{"format": "genret-hybrid-weights", "format_version": 99}', "format version 99"),
    ('{"format": "genret-hybrid-weights", "format_version": 1, "members": []}', "is corrupt"),
])
def test_a_bad_weights_file_is_a_clear_error(tiny_index, config, tmp_path, content, words):
    ix = tmp_path / "tiny"
    shutil.copytree(tiny_index, ix)
    (weights_path(ix)).write_text(content)
    with Index(ix) as index:  # the index itself still opens, and its other retrievers load
        assert available_retrievers(index, config)[0] == "hybrid"  # the default: loading it says what is wrong
        with pytest.raises(IndexFormatError, match=words) as err:
            load_retriever(index, None, config)
        assert "genret tune" in str(err.value)
        load_retriever(index, "hybrid", with_hybrid(config, {"tuned": "off", "retrievers": ["dense"]})).close()


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_round_trip(tiny_index, questions, tmp_path, capsys):
    ix = tmp_path / "tiny"
    shutil.copytree(tiny_index, ix)
    assert main(["tune", str(ix), str(questions), "--members", "bm25,dense", "--device", "cpu", "--depth", "10",
                 "--step", "0.25", "--quiet"]) == 0
    out = capsys.readouterr().out
    for words in ("bm25 alone", "dense alone", "default weights", "fused (chosen)", "chosen: ",
                  str(weights_path(ix))):
        assert words in out
    doc = read_tuned(weights_path(ix))
    assert doc.members == ["bm25", "dense"] and doc.search["candidates"] == 1 + 3 * 5
    # search / eval --retriever hybrid: the fitted members (no generative LM) and weights
    assert main(["search", str(ix), "Who created Python?", "--retriever", "hybrid", "-k", "2", "--json",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["provenance"]["wikipedia_id"] == "p-python"
    assert main(["eval", str(ix), str(questions), "--retriever", "hybrid", "-k", "10", "--ks", "5", "--json",
                 "--quiet", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["levels"]["page"]["Rprec"] == pytest.approx(doc.results["fused (chosen)"]["page"])
    # a corrupt file: one line, exit 2; --hybrid-tuned off ignores it
    (weights_path(ix)).write_text("[]")
    assert main(["search", str(ix), "x", "--retriever", "hybrid", "--hybrid", "bm25,dense", "--device", "cpu"]) == 2
    assert "not a genret hybrid-weights file" in capsys.readouterr().err
    assert main(["search", str(ix), "x", "--retriever", "hybrid", "--hybrid", "bm25,dense", "--hybrid-tuned", "off",
                 "--device", "cpu"]) == 0
    assert main(["tune", str(ix), str(questions), "--members", "bm25", "--device", "cpu", "--quiet"]) == 2
    assert "two or more" in capsys.readouterr().err


def test_cli_hybrid_weights_name_the_members(tiny_index, capsys):
    assert main(["search", str(tiny_index), "Who created Python?", "--retriever", "hybrid", "--hybrid-weights",
                 "bm25=1,dense=2", "-k", "2", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["provenance"]["wikipedia_id"] == "p-python"
    for weights, words in (("bm25=0,dense=0", "above 0"), ("bm25", "NAME=NUMBER"), ("bm25=x", "NAME=NUMBER")):
        assert main(["search", str(tiny_index), "x", "--retriever", "hybrid", "--hybrid-weights", weights,
                     "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("genret: error:") == 1
