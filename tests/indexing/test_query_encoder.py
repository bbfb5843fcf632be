"""The direct query encoder against sentence-transformers: equal vectors, the same dtype handling, and the fallback
for models whose modules need sentence-transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genret.core import DEFAULT_DENSE_MODEL, resolve_model_path
from genret.indexing import SentenceTransformerEncoder, query_encoder
from genret.indexing._query_encoder import DirectEncoder, Unsupported, direct_spec

TEXTS = ["how do I parse JSON", "", "Ünïcödé accents, café and 東京 — naïve?", "x",
         "[MASK] and [SEP] typed into a query", "  spaces   around  ", "a long query that is truncated " * 60]
PACKAGED = Path(resolve_model_path(DEFAULT_DENSE_MODEL))


@pytest.fixture(scope="module")
def reference():
    return SentenceTransformerEncoder(DEFAULT_DENSE_MODEL, "cpu", "float32").encode(TEXTS)


@pytest.mark.parametrize("backend", ["native", "transformers"])
def test_packaged_model_equals_sentence_transformers(reference, backend):
    enc = DirectEncoder(DEFAULT_DENSE_MODEL, "cpu", "float32", backend=backend)
    assert (enc.dim, enc.dtype, enc.backend, enc.max_length) == (384, "float32", backend, 256)
    vecs = enc.encode(TEXTS, batch_size=3)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), 384) and vecs.flags["C_CONTIGUOUS"]
    assert np.abs(vecs - reference).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    one_by_one = np.stack([enc.encode([t])[0] for t in TEXTS])  # no padding: the same vectors
    assert np.abs(one_by_one - reference).max() <= 1e-5
    assert enc.encode([]).shape == (0, 384)


def test_query_encoder_is_direct_for_the_packaged_model():
    enc = query_encoder(DEFAULT_DENSE_MODEL, "cpu", "float32")
    assert isinstance(enc, DirectEncoder) and enc.backend == "native" and enc.model_id == DEFAULT_DENSE_MODEL


def test_a_query_imports_neither_sentence_transformers_nor_transformers():
    code = ("import sys; from genret.indexing import query_encoder; "
            "v = query_encoder(device='cpu').encode(['how do I parse JSON']); assert v.shape == (1, 384); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers', 'torch._dynamo', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_dtype_is_honoured_as_sentence_transformers_does(reference, dtype):
    import torch

    enc = DirectEncoder(DEFAULT_DENSE_MODEL, "cpu", dtype)
    assert enc.dtype == dtype
    linear = enc._model.layers[0].q
    if dtype == "int8":
        assert "quantized" in type(linear).__module__
    else:
        assert linear.weight.dtype == torch.bfloat16
    vecs = enc.encode(TEXTS)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    if dtype == "int8":  # the same dynamic quantization of the same linear layers: the same vectors
        st = SentenceTransformerEncoder(DEFAULT_DENSE_MODEL, "cpu", dtype).encode(TEXTS)
        assert np.abs(vecs - st).max() <= 1e-5
    else:
        assert (vecs * reference).sum(axis=1).min() > 0.999


def _variant(tmp_path: Path, pooling: dict | None = None, modules: list | None = None, **files) -> Path:
    """The packaged model's files, linked, with another pooling config, modules.json or other JSON files."""
    out = tmp_path / "model"
    out.mkdir()
    for f in PACKAGED.iterdir():
        if f.is_file():
            (out / f.name).symlink_to(f)
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"word_embedding_dimension": 384,
                                                                          "pooling_mode_mean_tokens": True}))
    if modules is not None:
        (out / "modules.json").unlink()
        (out / "modules.json").write_text(json.dumps(modules))
    for name, content in files.items():
        (out / name).unlink(missing_ok=True)
        (out / name).write_text(json.dumps(content))
    return out


@pytest.mark.parametrize("pooling", [{"word_embedding_dimension": 384, "pooling_mode_cls_token": True,
                                      "pooling_mode_mean_tokens": False},
                                     {"embedding_dimension": 384, "pooling_mode": "max", "include_prompt": True}])
def test_cls_and_max_pooling_equal_sentence_transformers(tmp_path, pooling):
    folder = _variant(tmp_path, pooling)
    mode = "cls" if "pooling_mode_cls_token" in pooling else "max"
    assert direct_spec(folder).pooling == mode
    ref = SentenceTransformerEncoder(str(folder), "cpu", "float32").encode(TEXTS)
    vecs = DirectEncoder(str(folder), "cpu", "float32").encode(TEXTS, batch_size=4)
    assert np.abs(vecs - ref).max() <= 1e-5


MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]


@pytest.mark.parametrize("change, why", [
    ({"modules": [*MODULES, {"idx": 2, "name": "2", "path": "2_Dense",
                             "type": "sentence_transformers.models.Dense"}]}, "modules"),
    ({"pooling": {"word_embedding_dimension": 384, "pooling_mode_cls_token": True,
                  "pooling_mode_mean_tokens": True}}, "pooling"),
    ({"pooling": {"embedding_dimension": 384, "pooling_mode": "lasttoken"}}, "pooling"),
    ({"sentence_bert_config.json": {"max_seq_length": 256, "do_lower_case": True}}, "settings"),
    ({"sentence_bert_config.json": {"max_seq_length": 256, "processing_kwargs": {"text": {}}}}, "settings"),
    ({"config_sentence_transformers.json": {"prompts": {"query": "query: "}, "default_prompt_name": "query"}},
     "default prompt"),
    ({"modules": []}, "modules.json"),
])
def test_models_that_need_sentence_transformers_are_refused(tmp_path, change, why):
    folder = _variant(tmp_path, **change)
    with pytest.raises(Unsupported, match=why):
        direct_spec(folder)


def test_query_encoder_falls_back_to_sentence_transformers(tmp_path):
    folder = _variant(tmp_path, **{"config_sentence_transformers.json": {"prompts": {"query": "query: "},
                                                                          "default_prompt_name": "query"}})
    assert isinstance(query_encoder(str(folder), "cpu", "float32"), SentenceTransformerEncoder)


def test_a_model_saved_by_this_sentence_transformers_is_direct(tmp_path, reference):
    """The newer folder layout (sentence_bert_config.json without max_seq_length, the tokenizer's model_max_length;
    long module type names; prompts with no default) reads the same."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(PACKAGED), device="cpu").save(str(tmp_path / "saved"))
    spec = direct_spec(tmp_path / "saved")
    assert (spec.pooling, spec.max_length, spec.dim, spec.native) == ("mean", 256, 384, True)
    assert np.abs(DirectEncoder(str(tmp_path / "saved"), "cpu", "float32").encode(TEXTS) - reference).max() <= 1e-5
