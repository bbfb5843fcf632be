"""Training a cross-encoder reranker (``fine_tune_reranker``) and keeping it in the index (``rerank-adapted``): the
loss falls on the tiny corpus, the model is written with checksums under the index's lock and checked on load,
searches over the retriever it was fitted over use it without flags (``--untrained`` not), and it survives
``add`` and a later ``genret train dense``."""

from __future__ import annotations

import json

import pytest

from genret.core import IndexFormatError
from genret.indexing import ADAPTED_RERANK, Index, add_to_index, verify_index, write_adapted_reranker
from genret.retrieval import (
    RerankedRetriever,
    RerankTrainConfig,
    RetrievalConfig,
    available_retrievers,
    fine_tune_reranker,
    first_stage,
    load_retriever,
    pairs_from_kilt,
    rerank_settings,
)
from genret.serving.cli import main
from tests.eval.test_adapt import _records

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]


@pytest.fixture(scope="module")
def trained(dense_bm25_index, tmp_path_factory):
    import tests.conftest as conf

    index = dense_bm25_index("rerank-train")
    out = tmp_path_factory.mktemp("reranker") / "model"
    with Index(index) as ix:
        stats = fine_tune_reranker(ix, pairs_from_kilt(_records(conf.PAGES)), out, RerankTrainConfig(
            epochs=4, lr=2e-4, batch_size=4, negatives=2, in_batch_negatives=1, device="cpu", dtype="float32"),
            progress=False)
    return index, out, stats


def test_in_batch_negatives_are_counted_never_all():
    """0 in-batch negatives is refused: the library's loss would read it as every passage in the batch."""
    from pydantic import ValidationError

    assert RerankTrainConfig(in_batch_negatives=1).in_batch_negatives == 1
    with pytest.raises(ValidationError, match="in_batch_negatives"):
        RerankTrainConfig(in_batch_negatives=0)


def test_a_budget_schedule_decays_the_learning_rate_to_where_the_budget_stops(dense_bm25_index, tmp_path):
    """Planned for 200 epochs (600 steps, no warm-up), stopped by a 15-second budget after a few: with
    ``budget_schedule`` the rate has decayed toward 0 by the stop; without it, it is still near its peak."""
    import tests.conftest as conf
    from genret.retrieval._dense_train import linear_schedule

    f = linear_schedule(10, 30)
    assert (f(0), f(5), f(10), f(20), f(30), f(40)) == (0.0, 0.5, 1.0, 0.5, 0.0, 0.0)
    assert linear_schedule(10, 8)(4) == 1.0  # the warm-up at most half the (moved) end
    index = dense_bm25_index("rerank-train")
    got = {}
    with Index(index) as ix:
        for fitted in (True, False):
            got[fitted] = fine_tune_reranker(ix, pairs_from_kilt(_records(conf.PAGES)), tmp_path / str(fitted),
                                             RerankTrainConfig(epochs=200, batch_size=4, negatives=2,
                                                               in_batch_negatives=1, device="cpu", dtype="float32",
                                                               warmup_ratio=0.0, max_minutes=15 / 60,
                                                               budget_schedule=fitted),
                                             progress=False)
    assert got[True]["budget_stopped"] and got[False]["budget_stopped"]
    assert got[True]["budget_schedule_steps"] < 600 and got[False]["budget_schedule_steps"] is None
    assert got[True]["lr_last"] < 0.5 * 2e-4 < 0.9 * 2e-4 < got[False]["lr_last"]


def test_the_loss_falls_and_a_cross_encoder_is_saved(trained):
    from sentence_transformers.cross_encoder import CrossEncoder

    _, out, stats = trained
    assert stats["queries"] == 10 and stats["rows"] == 10 and stats["steps"] >= 8
    assert stats["loss_last"] < stats["loss_first"] and stats["precision"] == "float32"
    scores = CrossEncoder(str(out), device="cpu").predict([("a query", "a passage")])
    assert len(scores) == 1


def test_the_adapted_reranker_is_used_over_its_retriever_and_kept_through_changes(trained, data_dir, tmp_path,
                                                                                   capsys):
    index, out, _ = trained
    write_adapted_reranker(index, out, over="bm25", depth=5, weight=0.4, trained={"test": True})
    verify_index(index)
    with Index(index) as ix:
        comp = ix.component(ADAPTED_RERANK)
        assert comp.kind == "cross-encoder" and comp.params["trained"] == {"test": True}
        got = rerank_settings(ix, "bm25")
        assert (got.depth, got.weight) == (5, 0.4) and got.model.endswith("adapted/rerank-model")
        assert rerank_settings(ix, "dense") is None  # fitted over bm25 only
        assert rerank_settings(ix, "bm25", RetrievalConfig(rerank={"adapted": False})) is None
        assert rerank_settings(ix, "dense", RetrievalConfig(rerank={"model": "adapted", "depth": 3})).depth == 3
        r = load_retriever(ix, "bm25", RetrievalConfig(dense={"device": "cpu"}, rerank={"device": "cpu"}))
        try:
            assert isinstance(r, RerankedRetriever) and r.weight == 0.4 and r.depth == 5
            plain = first_stage(r).search("photosynthesis pigment", k=8)
            hits = r.search("photosynthesis pigment", k=8)
            assert sorted(h.unit_id for h in hits[:5]) == sorted(h.unit_id for h in plain[:5])
            assert [h.unit_id for h in hits[5:]] == [h.unit_id for h in plain[5:]]
        finally:
            r.close()
    # the CLI: used without flags, not with --untrained
    assert main(["search", str(index), "photosynthesis pigment", "--retriever", "bm25", "--device", "cpu",
                 "--json", "-k", "3"]) == 0
    reranked = json.loads(capsys.readouterr().out)
    assert main(["search", str(index), "photosynthesis pigment", "--retriever", "bm25", "--untrained", "--json",
                 "-k", "3"]) == 0
    untrained = json.loads(capsys.readouterr().out)
    assert _scores(reranked) != _scores(untrained)
    assert main(["search", str(index), "photosynthesis pigment", "--retriever", "bm25", "--no-rerank", "--json",
                 "-k", "3"]) == 0
    assert _scores(json.loads(capsys.readouterr().out)) == _scores(untrained)  # BM25 has no adapted part
    # add keeps it, and a later dense adaptation does not remove it
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "p-new", "title": "Cello", "text": ["The cello is a bowed string "
                                                                          "instrument."]}) + "\n")
    add_to_index(index, extra, device="cpu", progress=False)
    from genret.indexing import write_adapted_dense

    write_adapted_dense(index, _dense_model(index), trained={}, device="cpu", progress=False)
    verify_index(index)
    with Index(index) as ix:
        assert ix.has(ADAPTED_RERANK) and ix.has("dense-adapted")
    # a damaged model file is caught on load
    weights = next((index / "adapted" / "rerank-model").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IndexFormatError):
        verify_index(index)


def _scores(payload) -> list[float]:
    hits = payload["hits"] if isinstance(payload, dict) else payload
    return [round(h["score"], 6) for h in hits]


def _dense_model(index):
    """The index's own dense encoder folder (standing in for a fine-tuned one)."""
    from genret.core import resolve_model_path

    with Index(index) as ix:
        return resolve_model_path(ix.component("dense").model)


def test_no_rerank_and_rerank_exclude_each_other(tiny_index, capsys):
    assert main(["search", str(tiny_index), "x", "--rerank", "ql", "--no-rerank"]) == 2
    assert "--no-rerank" in capsys.readouterr().err


def test_cli_train_rerank_fits_a_blend_and_keeps_it_only_where_it_helps(dense_bm25_index, tmp_path, capsys):
    import tests.conftest as conf
    from genret.eval import tune_fusion, write_kilt

    index = dense_bm25_index("rerank-cli")
    records = _records(conf.PAGES)
    train = tmp_path / "train.jsonl"
    write_kilt(train, records + [{**r, "id": r["id"] + "-again", "input": r["input"].lower()} for r in records])
    args = ["train", "rerank", str(index), str(train), "--epochs", "2", "--lr", "2e-4", "--batch-size", "4",
            "--negatives", "2", "--depth", "5", "--device", "cpu", "--quiet"]
    # fitted weights make the hybrid the index's default (listed first): still the retriever reranked by default
    tune_fusion(index, train, members=["bm25", "dense"], config=RetrievalConfig(dense={"device": "cpu"}),
                progress=False)
    with Index(index) as ix:
        assert available_retrievers(ix)[0] == "hybrid"
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["over"] == "hybrid" and got["held_out_records"] == 4 and got["train_records"] == 16
    first, blended = got["held_out_rprec"]["first stage"], got["held_out_rprec"]["blended (cross-validated)"]
    # kept: the one-standard-error rule, the sign test (4 held out: never below 1/16 = 0.0625), a loss that fell
    gain, trained = got["held_out_gain"], got["training"]
    assert got["kept"] == (trained["loss_last"] < trained["loss_first"] and got["weight"] > 0
                           and gain["mean"] > 0 and gain["mean"] >= gain["se"] and gain["p"] <= 0.05)
    assert gain["p"] >= 0.0625 and not got["kept"]
    assert not got["kept"] or blended["objective"] > first["objective"]
    with Index(index) as ix:
        assert ix.has(ADAPTED_RERANK) == got["kept"]
        if got["kept"]:
            assert rerank_settings(ix, "hybrid").weight == got["weight"]
    assert main([*args[:4], "--over", "nope"]) == 2
    assert "--over" in capsys.readouterr().err
    few = tmp_path / "few.jsonl"
    write_kilt(few, records[:3])
    assert main(["train", "rerank", str(index), str(few)]) == 2
    assert "at least 10" in capsys.readouterr().err

