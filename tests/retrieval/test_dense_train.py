"""``genret train dense``: fine-tuning the index's encoder on a task, the ``dense-adapted`` component it writes, and
how search, ``--untrained``, a second run, ``add`` and ``verify`` treat it (tiny corpus, the packaged MiniLM)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from genret.core import NotFoundError
from genret.indexing import (
    ADAPTED_DENSE,
    DenseConfig,
    Index,
    IndexConfig,
    add_to_index,
    build_index,
    read_manifest,
    verify_index,
    write_adapted_dense,
)
from genret.retrieval import DensePair, DenseRetriever, DenseSearchConfig, DenseTrainConfig, fine_tune_dense
from genret.serving.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def adapted(data_dir, tmp_path_factory):
    """A dense + BM25 index of the tiny corpus after `genret train dense` on its questions (2 held out)."""
    out = tmp_path_factory.mktemp("adapt") / "idx"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=("dense", "bm25"),
                                                           dense=DenseConfig(device="cpu")), progress=False)
    args = ["train", "dense", str(out), str(data_dir / "questions.jsonl"), "--holdout", "0.4", "--epochs", "4",
            "--lr", "2e-4", "--batch-size", "4", "--device", "cpu", "--quiet"]
    return out, args


def test_training_writes_a_checked_adapted_component(adapted, capsys):
    index_dir, args = adapted
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["component"] == ADAPTED_DENSE and summary["train_records"] == 3 and summary["held_out_records"] == 2
    assert summary["loss_last"] < summary["loss_first"]  # it learned something
    assert set(summary["held_out_rprec"]["before"]) == {"page", "passage"} == set(summary["held_out_rprec"]["after"])
    manifest = read_manifest(index_dir)
    comp = manifest.components[ADAPTED_DENSE]
    assert comp.params["model_dir"] == "adapted/dense-model" and comp.params["count"] == 10
    assert comp.params["trained"]["records"] == 5 and comp.params["trained"]["rows"] >= 3
    assert any(name.startswith("adapted/dense-model/") for name in comp.files)  # the model's files are checked too
    assert manifest.components["dense"].params.get("model_dir") is None  # the base component is left as it was
    verify_index(index_dir)


def test_search_uses_the_adapted_encoder_and_untrained_the_base_one(adapted, capsys):
    index_dir, _ = adapted
    with Index(index_dir) as index:
        tuned = DenseRetriever(index, DenseSearchConfig(device="cpu"))
        base = DenseRetriever(index, DenseSearchConfig(device="cpu", adapted=False))
        assert (tuned.component, base.component) == (ADAPTED_DENSE, "dense")
        q = ["Who created the Python programming language?"]
        a, b = tuned._encoder.encode(q), base._encoder.encode(q)
        assert not np.allclose(a, b, atol=1e-3)
        hits = tuned.search(q[0], k=3)
        assert hits and hits[0].provenance.wikipedia_id == "p-python"
    assert main(["search", str(index_dir), q[0], "--retriever", "dense", "--untrained", "-k", "1"]) == 0
    assert main(["search", str(index_dir), q[0], "--retriever", "dense", "-k", "1"]) == 0


@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="Ray is an optional extra")
def test_the_ray_dense_retriever_searches_the_adapted_component(adapted):
    from genret.indexing import ray_session
    from genret.retrieval import RetrievalConfig, load_ray_retriever

    index_dir, _ = adapted
    q = "Who created the Python programming language?"
    with Index(index_dir) as index, ray_session(num_cpus=1):
        local = DenseRetriever(index, DenseSearchConfig(device="cpu"))
        remote = load_ray_retriever(index, "dense", RetrievalConfig(dense={"device": "cpu"}), shards=2)
        try:
            assert [(h.unit_id, round(h.score, 4)) for h in remote.search(q, k=5)] == \
                [(h.unit_id, round(h.score, 4)) for h in local.search(q, k=5)]
        finally:
            remote.close()


def test_a_second_run_is_a_no_op_unless_forced(adapted, capsys):
    index_dir, args = adapted
    before = (index_dir / "manifest.json").read_bytes()
    assert main(args) == 0
    assert "already holds" in capsys.readouterr().err
    assert (index_dir / "manifest.json").read_bytes() == before


def test_add_encodes_new_units_with_both_encoders(adapted, tmp_path):
    index_dir, _ = adapted
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "p-tea", "title": "Tea", "text": ["Tea is an aromatic beverage brewed from "
                                                                       "the leaves of Camellia sinensis."]}) + "\n")
    add_to_index(copy, more, device="cpu", progress=False)
    verify_index(copy)
    manifest = read_manifest(copy)
    assert manifest.components["dense"].params["count"] == manifest.components[ADAPTED_DENSE].params["count"] == 11
    with Index(copy) as index:
        hits = DenseRetriever(index, DenseSearchConfig(device="cpu")).search("Camellia sinensis beverage", k=1)
    assert hits[0].provenance.wikipedia_id == "p-tea"


def test_a_file_dropped_into_the_adapted_folder_is_refused(adapted, tmp_path):
    index_dir, _ = adapted
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    (copy / "adapted" / "dense-model" / "stray.bin").write_bytes(b"x")
    with pytest.raises(Exception, match="stray.bin"):
        verify_index(copy)


def test_an_index_without_dense_cannot_be_adapted(data_dir, tmp_path):
    out = tmp_path / "bm25-only"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=("bm25",)), progress=False)
    with pytest.raises(NotFoundError, match="no dense component"):
        write_adapted_dense(out, tmp_path, trained={})
    with Index(out) as index, pytest.raises(NotFoundError, match="no dense component"):
        fine_tune_dense(index, [DensePair("q", (("p-oil", 1),))], tmp_path / "m", DenseTrainConfig(device="cpu"))


def test_fusion_is_fitted_on_the_held_out_records(adapted, tmp_path, capsys):
    index_dir, args = adapted
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    assert main([*args[:2], str(copy), *args[3:], "--force", "--fusion"]) == 0
    summary = json.loads(capsys.readouterr().out)
    fusion = summary["fusion"]
    assert fusion["file"] == str(copy / "hybrid-weights.json") and set(fusion["weights"]) == {"dense", "bm25"}
    results = fusion["results"]
    best_member = max(results["dense alone"]["objective"], results["bm25 alone"]["objective"])
    assert results["fused (chosen)"]["objective"] >= best_member  # never below the best member on that fold
    assert json.loads((copy / "hybrid-weights.json").read_text())["dev"]["records"] == 2
    assert main([*args[:2], str(copy), *args[3:], "--force"]) == 0  # retrained, the weights left as they were
    assert "hybrid-weights.json was fitted before this encoder was trained" in capsys.readouterr().err
