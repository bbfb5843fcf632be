"""Typed component parameters: the ``params`` a builder writes into the manifest, as one pydantic model per
component ``kind``.  They are checked when a manifest is read (a missing or mistyped field is an
``IndexFormatError`` naming the component), and readers in other packages use the typed model
(``Component.typed_params()``), not dictionary keys.  Fields a builder adds beyond these (timings, versions) are
kept as they are (``extra="allow"``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Params(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class StoreParams(_Params):
    """``unit-store-sqlite``: the SQLite unit store."""

    units: int


class BM25Params(_Params):
    """``bm25-lucene``: the Lucene index (pyserini/Anserini) and the BM25 parameters it was built with."""

    k1: float
    b: float
    with_title: bool = True
    analyzer: str
    directory: str
    count: int


class DenseParams(_Params):
    """``dense-faiss``: unit embeddings (float32, row per unit) and the FAISS index over them."""

    dim: int
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = True
    with_title: bool = True
    count: int
    index_type: Literal["flat", "hnsw", "ivfpq", "factory"] = "flat"
    factory: str | None = None  # the FAISS factory string of index_type "factory"
    faiss_file: str = "dense.faiss"
    encoder_dtype: str | None = None  # what the encoder computed in (float32, bfloat16, int8…); vectors are float32


class FMParams(_Params):
    """``fm-index``: the FM-index over the units' token ids and the tokenizer that made them."""

    tokenizer: str
    tokenizer_dir: str
    vocab_size: int
    title_start_id: int
    title_end_id: int
    lowercase: bool = False
    n_docs: int
    n_tokens: int
    index: dict[str, Any]


PARAMS_BY_KIND: dict[str, type[_Params]] = {
    "unit-store-sqlite": StoreParams, "bm25-lucene": BM25Params, "dense-faiss": DenseParams, "fm-index": FMParams,
}
