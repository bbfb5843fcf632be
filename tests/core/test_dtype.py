"""One dtype setting: ``auto`` follows the CPU's bf16 support, the packaged encoder agrees across dtypes, and an
index built in one dtype answers queries encoded in another."""

import json

import numpy as np
import pytest

from genret.core import ConfigError, native_bf16, resolve_dtype
from genret.indexing import DenseConfig, Index, IndexConfig, SentenceTransformerEncoder, build_index
from genret.retrieval import RetrievalConfig, load_retriever

TEXTS = ["Python was created by Guido van Rossum.", "Mount Everest is the highest mountain above sea level.",
         "The 1973 oil embargo was proclaimed by OAPEC.", "Jazz began in New Orleans.", "x"]


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU flags ``native_bf16`` reads (and no oneDNN cap); its cache is cleared around the test."""
    import genret.core._device as device

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(("avx2", "fma", *flags)))
        native_bf16.cache_clear()

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    yield set_flags
    native_bf16.cache_clear()


def test_auto_is_bf16_where_the_cpu_has_it(cpu):
    cpu("avx512f", "amx_bf16", "amx_tile")
    assert native_bf16() and resolve_dtype("auto", "cpu") == "bfloat16"
    assert resolve_dtype("auto", "cpu", training=True) == "bfloat16"
    cpu("avx512f", "avx512_bf16")
    assert resolve_dtype("auto", "cpu") == "bfloat16"


def test_auto_without_it_is_the_callers_fallback_and_float32_for_training(cpu):
    cpu("avx512f", "avx512_vnni")
    assert not native_bf16()
    assert resolve_dtype("auto", "cpu") == "int8"  # the dense encoder's fallback
    assert resolve_dtype("auto", "cpu", fallback="float32") == "float32"  # language models'
    assert resolve_dtype("auto", "cpu", training=True) == "float32"


def test_language_models_load_in_float32_without_native_bf16(cpu, tiny_lm_dir):
    import torch

    from genret.retrieval import GeneratorConfig
    from genret.retrieval.rag import HFGenerator

    def loaded(dtype: str = "auto"):
        lm = HFGenerator(GeneratorConfig(model=str(tiny_lm_dir), device="cpu", dtype=dtype)).lm
        return lm.dtype, lm.model.get_output_embeddings()

    cpu("avx512f")
    assert loaded()[0] == "float32"
    cpu("amx_bf16")
    got, head = loaded()
    assert got == "bfloat16" and head.weight.dtype == torch.bfloat16
    got, head = loaded("int8")  # a choice, not a default: the linear layers are quantized
    assert got == "int8" and not isinstance(head, torch.nn.Linear)


def test_a_onednn_cap_below_bf16_counts_as_no_bf16(cpu, monkeypatch):
    cpu("amx_bf16", "avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    native_bf16.cache_clear()
    assert resolve_dtype("auto", "cpu") == "int8"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    native_bf16.cache_clear()
    assert resolve_dtype("auto", "cpu") == "bfloat16"


def test_explicit_dtypes_are_checked():
    assert [resolve_dtype(d, "cpu") for d in ("float32", "bfloat16", "int8")] == ["float32", "bfloat16", "int8"]
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(ConfigError, match="CPU and for inference only"):
        resolve_dtype("int8", "cuda")
    with pytest.raises(ConfigError, match="to train"):
        resolve_dtype("int8", "cpu", training=True)
    with pytest.raises(ValueError, match="dtype"):
        DenseConfig(dtype=7)  # a string field: pydantic refuses other types


@pytest.fixture(scope="module")
def float32_vectors():
    return SentenceTransformerEncoder(device="cpu", dtype="float32").encode(TEXTS)


def test_bf16_and_float32_vectors_of_the_packaged_encoder_agree(float32_vectors):
    enc = SentenceTransformerEncoder(device="cpu", dtype="bfloat16")
    vecs = enc.encode(TEXTS)
    assert enc.dtype == "bfloat16" and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    assert (vecs * float32_vectors).sum(1).min() >= 0.995


def test_int8_vectors_stay_close_to_float32(float32_vectors):
    enc = SentenceTransformerEncoder(device="cpu", dtype="int8")
    cos = (enc.encode(TEXTS) * float32_vectors).sum(1)
    # dynamic int8 is the coarsest path: a one-letter text drifts most (measured 0.92; scifact paragraphs 0.97+)
    assert enc.dtype == "int8" and cos.min() >= 0.9 and cos.mean() >= 0.95


@pytest.mark.parametrize(("built", "queried"), [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_an_index_built_in_one_dtype_answers_queries_in_another(tmp_path, built, queried):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "title": t.split()[0], "text": t}) + "\n"
                              for i, t in enumerate(TEXTS[:4])))
    build_index(corpus, tmp_path / "ix", IndexConfig(components=("dense",), dense=DenseConfig(device="cpu",
                                                                                              dtype=built)),
                progress=False)
    with Index(tmp_path / "ix") as index:
        assert index.component("dense").params["encoder_dtype"] == built
        r = load_retriever(index, "dense", RetrievalConfig(dense={"device": "cpu", "dtype": queried}))
        hits = r.batch_search(["Who made Python?", "oil embargo of 1973", "highest mountain"], k=2)
    assert [h[0].provenance.wikipedia_id for h in hits] == ["d0", "d2", "d1"]
