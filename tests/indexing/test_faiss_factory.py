"""Dense indexes from any FAISS factory string (``DenseConfig.factory``, ``--faiss-factory``): built, recorded in the
manifest, rebuilt, searched with their query-time knobs; bad strings are one-line errors before any work."""

from __future__ import annotations

import logging
import shutil

import pytest

from genret.core import ConfigError
from genret.indexing import DenseConfig, DenseParams, Index, rebuild_dense
from genret.indexing._dense import faiss_params
from genret.retrieval import DenseRetriever, DenseSearchConfig
from genret.serving import main
from tests.conftest import QUESTIONS

QUERIES = [q[1] for q in QUESTIONS]


def _hits(index_dir, encoder, **search) -> list[list[tuple[int, float]]]:
    with Index(index_dir) as index:
        r = DenseRetriever(index, DenseSearchConfig(device="cpu", **search), encoder=encoder)
        return [[(h.unit_id, round(h.score, 5)) for h in hits] for hits in r.batch_search(QUERIES, 3)]


def test_the_three_types_are_shortcuts_and_a_string_makes_the_type_factory():
    assert DenseConfig(factory="hnsw").index_type == "hnsw" and DenseConfig(factory="HNSW").factory is None
    assert DenseConfig(factory="IVFPQ", pq_m=8).index_type == "ivfpq"
    c = DenseConfig(factory=" HNSW8,Flat ")
    assert (c.index_type, c.factory) == ("factory", "HNSW8,Flat")
    for bad in ({"index_type": "hnsw", "factory": "IVF4,Flat"}, {"index_type": "factory"}, {"factory": " "}):
        with pytest.raises(ValueError):
            DenseConfig(**bad)


def test_factory_params_record_what_search_needs():
    assert faiss_params(DenseConfig(factory="HNSW8,Flat", ef_search=40), 384, 10) == {
        "index_type": "factory", "factory": "HNSW8,Flat", "ef_search": 40}
    assert faiss_params(DenseConfig(factory="IVF4,Flat", nprobe=2), 384, 1000) == {
        "index_type": "factory", "factory": "IVF4,Flat", "nprobe": 2, "train_size": 1000}
    opq = DenseConfig(factory="OPQ16,IVF64_HNSW8,PQ16", train_size=5000)
    assert faiss_params(opq, 384, 10**6) == {"index_type": "factory", "factory": "OPQ16,IVF64_HNSW8,PQ16",
                                             "nprobe": 16, "train_size": 5000}
    assert faiss_params(DenseConfig(factory="Flat"), 384, 10) == {"index_type": "flat"}  # the shortcut


@pytest.mark.parametrize("factory, n, match", [
    ("IVF4,Fla", 100, "could not parse code description Fla"),
    ("IVF4,PQ7", 100, "multiple of the number of subquantizers"),
    ("IVF400,Flat", 100, "400 inverted lists to train and the corpus only 100 vectors"),
])
def test_bad_factory_strings_are_config_errors_before_any_work(factory, n, match):
    with pytest.raises(ConfigError, match=match):
        faiss_params(DenseConfig(factory=factory), 384, n)


def test_index_with_a_factory_string_searches_like_flat(tiny_index, data_dir, tmp_path, encoder, capsys):
    flat = _hits(tiny_index, encoder)
    out = tmp_path / "hnsw"
    assert main(["index", str(data_dir / "corpus.jsonl"), "--out", str(out), "--dense", "--quiet", "--device", "cpu",
                 "--faiss-factory", "HNSW8,Flat"]) == 0
    params = Index(out).manifest.components["dense"].typed_params(DenseParams)
    assert (params.index_type, params.factory, params.ef_search) == ("factory", "HNSW8,Flat", 128)
    assert _hits(out, encoder) == flat  # ten vectors: the graph finds them all
    assert main(["search", str(out), QUERIES[0], "--retriever", "dense", "--ef-search", "4", "--json"]) == 0
    assert "p-python" in capsys.readouterr().out


def test_rebuild_dense_with_a_factory_string(tiny_index, tmp_path, encoder, caplog, capsys):
    index_dir = tmp_path / "tiny"
    shutil.copytree(tiny_index, index_dir)
    flat = _hits(tiny_index, encoder)
    with caplog.at_level(logging.WARNING, logger="genret"):
        assert main(["rebuild-dense", str(index_dir), "--faiss-factory", "IVF4,Flat", "--quiet"]) == 0
    assert "as IVF4,Flat from the stored embeddings" in capsys.readouterr().out
    # ten vectors for four lists: FAISS's k-means warning is one log line of ours, not lines on stderr
    assert "faiss: WARNING clustering 10 points to 4 centroids" in caplog.text
    params = Index(index_dir).manifest.components["dense"].typed_params(DenseParams)
    assert (params.factory, params.model_extra["nprobe"], params.model_extra["train_size"]) == ("IVF4,Flat", 16, 10)
    assert _hits(index_dir, encoder) == flat  # nprobe 16 ≥ 4 lists: exhaustive
    probed = _hits(index_dir, encoder, nprobe=1)
    assert all(len(h) <= 3 for h in probed) and probed != [[] for _ in QUERIES]
    with pytest.raises(ConfigError, match="could not train 'IVF2,PQ8' on 10 vectors"):
        rebuild_dense(index_dir, DenseConfig(factory="IVF2,PQ8"))
    assert Index(index_dir).manifest.components["dense"].typed_params(DenseParams).factory == "IVF4,Flat"
    assert main(["rebuild-dense", str(index_dir), "--faiss-factory", "hnsw", "--quiet"]) == 0
    assert Index(index_dir).manifest.components["dense"].typed_params(DenseParams).index_type == "hnsw"
    assert main(["rebuild-dense", str(index_dir), "--faiss-factory", "IVF4,Fla"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("genret: error: FAISS cannot make an index from the factory string 'IVF4,Fla'")
