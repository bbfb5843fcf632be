"""FAISS index types (flat, HNSW, IVF-PQ), ``rebuild_dense``, and where the FAISS index is placed (CPU / GPU)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from genret.core import ConfigError, IndexFormatError, NotFoundError
from genret.indexing import (
    DenseConfig,
    Index,
    IndexConfig,
    build_index,
    place_index,
    read_manifest,
    rebuild_dense,
    write_manifest,
)
from genret.indexing._dense import (
    EMBEDDINGS_FILE,
    FAISS_FILE,
    _auto_pq_m,
    build_dense,
    build_faiss,
    faiss_params,
    load_embeddings,
)
from genret.indexing._manifest import MANIFEST_FILE
from genret.retrieval import DenseRetriever, DenseSearchConfig

MINIKILT = Path(__file__).resolve().parents[2].parent / "shared" / "minikilt"
N_UNITS = 300  # a few hundred paragraph units: enough for IVF lists and 8-bit PQ codes, quick to encode
N_QUERIES = 40


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """One OpenMP thread: faiss's spinning threads slow to a crawl on a busy 2-core machine."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    """(a corpus of ≈ N_UNITS paragraph units, queries): the first scifact pages and dev claims when mini-KILT
    is beside the checkout, else synthetic sentences."""
    out = tmp_path_factory.mktemp("dense-types") / "corpus.jsonl"
    source = MINIKILT / "scifact" / "knowledge_source.jsonl"
    if source.is_file():
        lines, units = [], 0
        with open(source, encoding="utf-8") as fh:
            for line in fh:
                lines.append(line)
                units += len(json.loads(line)["text"]) - 1  # paragraph 0 is the title
                if units >= N_UNITS:
                    break
        out.write_text("".join(lines), encoding="utf-8")
        with open(MINIKILT / "scifact" / "dev.jsonl", encoding="utf-8") as fh:
            queries = [json.loads(line)["input"] for line, _ in zip(fh, range(N_QUERIES))]
        return out, queries
    rng = random.Random(0)
    words = ("river protein climate cell energy market storm gene ocean virus carbon neuron vaccine drought "
             "solar tumour insulin forest ice immune coral plasma wheat sensor").split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))  # noqa: E731
    with open(out, "w", encoding="utf-8") as fh:
        for p in range(N_UNITS // 10):
            fh.write(json.dumps({"id": f"p{p}", "title": f"Page {p}", "text": [sentence() for _ in range(10)]}) + "\n")
    return out, [sentence() for _ in range(N_QUERIES)]


def _with_dense(directory: Path, config: DenseConfig, encoder) -> Path:
    """Add a dense component (built with the session's encoder) to the store-only index at ``directory``."""
    manifest = read_manifest(directory)
    with Index(directory) as index:
        manifest.components["dense"] = build_dense(index.store, directory, config, progress=False, encoder=encoder)
    write_manifest(directory, manifest)
    return directory


@pytest.fixture(scope="module")
def hnsw_index(small_corpus, encoder, tmp_path_factory) -> Path:
    """The small corpus encoded once, with an HNSW index (the build path); other types are rebuilt from it."""
    out = tmp_path_factory.mktemp("dense-types") / "hnsw"
    build_index(small_corpus[0], out, IndexConfig(components=()), progress=False)
    return _with_dense(out, DenseConfig(index_type="hnsw", device="cpu"), encoder)


@pytest.fixture(scope="module")
def query_vectors(small_corpus, encoder) -> np.ndarray:
    return encoder.encode(small_corpus[1])


def copy_index(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def exact_top(index_dir: Path, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force (numpy) inner products over the stored embeddings and each query's top-k unit ids."""
    with Index(index_dir) as index:
        emb = np.asarray(load_embeddings(index_dir, index.component("dense")))
    scores = queries @ emb.T
    return scores, np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at(results, truth: np.ndarray) -> float:
    return float(np.mean([len({h.unit_id for h in hits} & set(row)) / len(row) for hits, row in zip(results, truth)]))


# ----------------------------------------------------------------------------------------- parameters


def test_faiss_params_defaults_and_fallbacks(caplog):
    assert faiss_params(DenseConfig(), 384, 10) == {"index_type": "flat"}
    assert faiss_params(DenseConfig(index_type="hnsw", hnsw_m=16), 384, 10) == {
        "index_type": "hnsw", "hnsw_m": 16, "ef_construction": 200, "ef_search": 128}
    big = faiss_params(DenseConfig(index_type="ivfpq"), 384, 1_000_000)
    assert big == {"index_type": "ivfpq", "ivf_nlist": 4000, "pq_m": 48, "pq_bits": 8, "nprobe": 16,
                   "train_size": 256_000}
    with caplog.at_level(logging.WARNING, logger="genret"):
        small = faiss_params(DenseConfig(index_type="ivfpq"), 384, 10_000)
        assert small["ivf_nlist"] == 10_000 // 39 and small["train_size"] == 10_000 and small["pq_bits"] == 8
        assert "using ivf_nlist=256 instead of 400" in caplog.text
        tiny = faiss_params(DenseConfig(index_type="ivfpq", ivf_nlist=8), 384, 10)
        assert (tiny["ivf_nlist"], tiny["pq_bits"], tiny["train_size"]) == (1, 3, 10)
        assert "using pq_bits=3" in caplog.text
    assert _auto_pq_m(384) == 48 and _auto_pq_m(768) == 96 and _auto_pq_m(100) == 10 and _auto_pq_m(7) == 1


@pytest.mark.parametrize("config, n, match", [
    (DenseConfig(index_type="ivfpq", pq_m=50), 1000, "pq_m=50 does not divide the embedding dimension 384"),
    (DenseConfig(index_type="ivfpq"), 1, "at least 2 vectors"),
    (DenseConfig(index_type="ivfpq", ivf_nlist=10, train_size=100), 10_000, "train_size=100 is too small"),
])
def test_impossible_combinations_are_config_errors(config, n, match):
    with pytest.raises(ConfigError, match=match):
        faiss_params(config, 384, n)


def test_config_rejects_out_of_range_values():
    for bad in ({"index_type": "ivf"}, {"pq_m": 0}, {"nprobe": 0}, {"pq_bits": 17}, {"hnsw_m": 1}):
        with pytest.raises(ValueError):
            DenseConfig(**bad)


def test_bad_pq_m_fails_before_any_encoding(data_dir, tmp_path, encoder):
    class NoEncoding:
        model_id, dim = encoder.model_id, encoder.dim

        def encode(self, *a, **kw):
            raise AssertionError("encoded before checking the FAISS parameters")

    build_index(data_dir / "corpus.jsonl", tmp_path / "ix", IndexConfig(components=()), progress=False)
    with Index(tmp_path / "ix") as index, pytest.raises(ConfigError, match="pq_m=50"):
        build_dense(index.store, tmp_path / "ix", DenseConfig(index_type="ivfpq", pq_m=50), progress=False,
                    encoder=NoEncoding())


# ----------------------------------------------------------------------------------------- index types


@pytest.mark.slow
def test_hnsw_build_records_its_parameters_and_recalls_flat(hnsw_index, small_corpus, query_vectors, encoder):
    with Index(hnsw_index, verify="full") as index:
        params = index.component("dense").params
        assert params["index_type"] == "hnsw" and params["faiss_file"] == FAISS_FILE
        assert (params["hnsw_m"], params["ef_construction"], params["ef_search"]) == (32, 200, 128)
        assert params["count"] == len(index.store) >= 250
        retriever = DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder)
        assert retriever.search_params == {"ef_search": 128}
        results = retriever.batch_search(small_corpus[1], k=10)
        _, truth = exact_top(hnsw_index, query_vectors, 10)
        assert recall_at(results, truth) >= 0.9
        assert all(len(hits) == 10 and [h.rank for h in hits] == list(range(1, 11)) for hits in results)
        low = DenseRetriever(index, DenseSearchConfig(device="cpu", ef_search=12), encoder=encoder)
        assert low.search_params == {"ef_search": 12} and low._faiss.hnsw.efSearch == 12


@pytest.fixture(scope="module")
def ivfpq_index(hnsw_index, tmp_path_factory) -> Path:
    return _rebuilt(copy_index(hnsw_index, tmp_path_factory.mktemp("dense-types") / "ivfpq"), "ivfpq")


def _rebuilt(directory: Path, index_type: str, **params) -> Path:
    rebuild_dense(directory, DenseConfig(index_type=index_type, device="cpu", **params))
    return directory


@pytest.mark.slow
def test_ivfpq_returns_k_hits_with_sane_scores(ivfpq_index, small_corpus, query_vectors, encoder):
    with Index(ivfpq_index, verify="full") as index:
        params = index.component("dense").params
        n = params["count"]
        assert params["index_type"] == "ivfpq" and params["ivf_nlist"] == n // 39 < round(4 * n ** 0.5)
        assert (params["pq_m"], params["pq_bits"], params["nprobe"], params["train_size"]) == (48, 8, 16, n)
        retriever = DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder)
        assert retriever.search_params == {"nprobe": 16}
        results = retriever.batch_search(small_corpus[1], k=10)
    exact, truth = exact_top(ivfpq_index, query_vectors, 10)
    for qi, hits in enumerate(results):
        scores = [h.score for h in hits]
        assert len(hits) == 10 and all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
        approx_error = [abs(h.score - exact[qi, h.unit_id]) for h in hits]
        assert max(approx_error) < 0.15, approx_error  # PQ codes approximate the inner product
    assert recall_at(results, truth) >= 0.6
    assert np.mean([hits[0].unit_id in row for hits, row in zip(results, truth)]) >= 0.9


@pytest.mark.slow
def test_nprobe_override(ivfpq_index, encoder):
    with Index(ivfpq_index) as index:
        retriever = DenseRetriever(index, DenseSearchConfig(device="cpu", nprobe=1), encoder=encoder)
        assert retriever.search_params == {"nprobe": 1}
        hits = retriever.search("a protein that regulates cell growth", k=50)
        assert 1 <= len(hits) <= 50 and [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_small_corpus_ivfpq_falls_back_and_logs(data_dir, tmp_path, encoder, caplog):
    out = tmp_path / "tiny"
    build_index(data_dir / "corpus.jsonl", out, IndexConfig(components=()), progress=False)
    with caplog.at_level(logging.INFO, logger="genret"):
        _with_dense(out, DenseConfig(index_type="ivfpq", device="cpu"), encoder)
    assert "using ivf_nlist=1" in caplog.text and "using pq_bits=3" in caplog.text
    assert "faiss index on cpu" in caplog.text
    with Index(out, verify="full") as index:
        params = index.component("dense").params
        assert (params["ivf_nlist"], params["pq_bits"], params["train_size"]) == (1, 3, 10)
        hits = DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder).search("oil embargo", k=10)
    assert len(hits) == 10 and hits[0].provenance.wikipedia_id == "p-oil"


# ----------------------------------------------------------------------------------------- rebuild


@pytest.mark.slow
def test_rebuild_changes_the_manifest_and_keeps_the_embeddings(hnsw_index, tmp_path, query_vectors, encoder):
    ix = copy_index(hnsw_index, tmp_path / "ix")
    emb_before, manifest_before = sha256(ix / EMBEDDINGS_FILE), read_manifest(ix)
    new = rebuild_dense(ix, DenseConfig(index_type="flat"))
    dense, old = new.components["dense"], manifest_before.components["dense"]
    assert dense.params["index_type"] == "flat" and "hnsw_m" not in dense.params
    assert dense.params["faiss_file"] == "dense.1.faiss" and dense.params["faiss_generation"] == 1
    assert set(dense.files) == {EMBEDDINGS_FILE, "dense.1.faiss"} and not (ix / FAISS_FILE).exists()
    assert sha256(ix / EMBEDDINGS_FILE) == emb_before and dense.files[EMBEDDINGS_FILE] == old.files[EMBEDDINGS_FILE]
    assert dense.model == old.model and dense.params["count"] == old.params["count"]
    assert new.components["store"] == manifest_before.components["store"] and new.corpus == manifest_before.corpus
    assert read_manifest(ix) == new
    with Index(ix, verify="full") as index:  # every checksum, the new FAISS file's too
        hits = DenseRetriever(index, DenseSearchConfig(device="cpu"), encoder=encoder).batch_search(
            ["a protein that regulates cell growth"], k=5)[0]
        assert index.component("dense").params["index_type"] == "flat"
    _, truth = exact_top(ix, encoder.encode(["a protein that regulates cell growth"]), 5)
    assert [h.unit_id for h in hits] == list(truth[0])
    rebuild_dense(ix, DenseConfig(index_type="hnsw", hnsw_m=8))
    assert sorted(p.name for p in ix.iterdir() if p.suffix == ".faiss") == ["dense.2.faiss"]
    assert read_manifest(ix).components["dense"].params["hnsw_m"] == 8
    assert sha256(ix / EMBEDDINGS_FILE) == emb_before
    Index(ix, verify="full").close()


@pytest.mark.slow
def test_rebuild_rejects_bad_parameters_before_any_work(hnsw_index, tmp_path):
    ix = copy_index(hnsw_index, tmp_path / "ix")
    before = {p.name: sha256(p) for p in ix.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="does not divide"):
        rebuild_dense(ix, DenseConfig(index_type="ivfpq", pq_m=50))
    assert {p.name: sha256(p) for p in ix.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_rebuild_refuses_altered_embeddings_and_missing_component(hnsw_index, data_dir, tmp_path):
    ix = copy_index(hnsw_index, tmp_path / "ix")
    manifest = (ix / MANIFEST_FILE).read_bytes()
    with open(ix / EMBEDDINGS_FILE, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        rebuild_dense(ix, DenseConfig(index_type="flat"))
    assert (ix / MANIFEST_FILE).read_bytes() == manifest and (ix / FAISS_FILE).exists()
    build_index(data_dir / "corpus.jsonl", tmp_path / "store-only", IndexConfig(components=()), progress=False)
    with pytest.raises(NotFoundError, match="no 'dense' component"):
        rebuild_dense(tmp_path / "store-only", DenseConfig())


# ----------------------------------------------------------------------------------------- placement


def _flat_and_hnsw():
    import faiss

    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (build_faiss(x, {"index_type": "flat"}),
            build_faiss(x, {"index_type": "hnsw", "hnsw_m": 8, "ef_construction": 40, "ef_search": 16}), faiss)


class FakeGpuIndex:
    """Stands in for a GPU index in the placement tests."""

    def __init__(self, gpu: int, index) -> None:
        self.gpu, self.cpu_index = gpu, index


def _fake_gpu_faiss(monkeypatch, faiss, *, fail: bool = False) -> list:
    moved: list = []

    def to_gpu(res, gpu, index):
        if fail:
            raise RuntimeError("unsupported PQ size on GPU")
        moved.append(gpu)
        return FakeGpuIndex(gpu, index)

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    return moved


def test_cpu_device_keeps_the_index_on_cpu(caplog):
    flat, _, _ = _flat_and_hnsw()
    with caplog.at_level(logging.INFO, logger="genret"):
        assert place_index(flat, "cpu") is flat
        assert place_index(flat, "mps") is flat
    assert caplog.text.count("faiss index on cpu") == 2


def test_cuda_without_faiss_gpu_support_stays_on_cpu(monkeypatch, caplog):
    flat, _, faiss = _flat_and_hnsw()
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    with caplog.at_level(logging.INFO, logger="genret"):
        assert place_index(flat, "cuda") is flat
    assert "faiss index on cpu" in caplog.text and "no GPU support" in caplog.text
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # GPU build, but no GPU visible
    assert place_index(flat, "cuda:0") is flat


def test_cuda_with_faiss_gpu_support_moves_all_but_hnsw(monkeypatch, caplog):
    flat, hnsw, faiss = _flat_and_hnsw()
    moved = _fake_gpu_faiss(monkeypatch, faiss)
    with caplog.at_level(logging.INFO, logger="genret"):
        placed = place_index(flat, "cuda:1")
        assert isinstance(placed, FakeGpuIndex) and placed.cpu_index is flat and moved == [1]
        assert "faiss index on gpu (cuda:1)" in caplog.text
        assert place_index(hnsw, "cuda") is hnsw and moved == [1]
        assert "HNSW has no GPU version" in caplog.text


def test_failed_gpu_copy_stays_on_cpu(monkeypatch, caplog):
    flat, _, faiss = _flat_and_hnsw()
    _fake_gpu_faiss(monkeypatch, faiss, fail=True)
    with caplog.at_level(logging.WARNING, logger="genret"):
        assert place_index(flat, "cuda") is flat
    assert "faiss index on cpu: moving it to cuda failed: unsupported PQ size" in caplog.text


def test_cuda_without_a_gpu_is_a_config_error(tiny_index, encoder):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from genret.core import resolve_device

    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    with Index(tiny_index) as index, pytest.raises(ConfigError, match="no CUDA GPU"):
        DenseRetriever(index, DenseSearchConfig(device="cuda"), encoder=encoder)


def test_retriever_places_its_index(tiny_index, encoder, monkeypatch, caplog):
    """The retriever asks ``place_index`` with the resolved device: cuda and no faiss GPU → CPU, logged."""
    import faiss

    from genret import core

    monkeypatch.setattr(core, "resolve_device", lambda spec: "cuda")
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    with Index(tiny_index) as index, caplog.at_level(logging.INFO, logger="genret"):
        retriever = DenseRetriever(index, DenseSearchConfig(device="cuda"), encoder=encoder)
        assert retriever.search("oil embargo", k=1)[0].provenance.wikipedia_id == "p-oil"
    assert "faiss index on cpu" in caplog.text and "no GPU support" in caplog.text


def _gpu_ready() -> bool:
    try:
        import faiss
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA GPU and faiss with GPU support")
def test_gpu_search_equals_cpu_search(hnsw_index, query_vectors, tmp_path, caplog):
    ix = _rebuilt(copy_index(hnsw_index, tmp_path / "flat"), "flat")
    with Index(ix) as index:
        from genret.indexing import load_faiss

        cpu = load_faiss(ix, index.component("dense"))
        with caplog.at_level(logging.INFO, logger="genret"):
            gpu = place_index(cpu, "cuda")
        assert gpu is not cpu and "faiss index on gpu" in caplog.text
        (cs, ci), (gs, gi) = cpu.search(query_vectors, 10), gpu.search(query_vectors, 10)
        np.testing.assert_array_equal(ci[:, :3], gi[:, :3])
        np.testing.assert_allclose(cs, gs, atol=1e-4)
        emb = np.asarray(load_embeddings(ix, index.component("dense")))
    params = faiss_params(DenseConfig(index_type="ivfpq"), emb.shape[1], len(emb))
    trained_on_gpu = build_faiss(emb, params, device="cuda")
    assert trained_on_gpu.ntotal == len(emb) and trained_on_gpu.search(query_vectors, 10)[1].min() >= 0
