"""Typed component parameters: the ``params`` a builder writes into the manifest, as one pydantic model per
component ``kind``.  They are checked when a manifest is read (a missing or mistyped field is an
``IndexFormatError`` naming the component), and readers in other packages use the typed model
(``Component.typed_params()``), not dictionary keys.  Fields a builder adds beyond these (timings, versions) are
kept as they are (``extra="allow"``)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _inside(path: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise ValueError(f"{path!r} is not a relative path inside the index")
    return path


# A path relative to the index directory that stays inside it (a component's folder or file, a manifest file entry).
IndexPath = Annotated[str, AfterValidator(_inside)]
Count = Annotated[int, Field(ge=0)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class StoreParams(_Params):
    """``unit-store-sqlite``: the SQLite unit store."""

    units: Count


class BM25Params(_Params):
    """``bm25-lucene``: the Lucene index (pyserini/Anserini) and the BM25 parameters it was built with."""

    k1: float = Field(ge=0, allow_inf_nan=False)  # Lucene's BM25Similarity refuses the rest
    b: float = Field(ge=0, le=1)
    with_title: bool = True
    analyzer: str
    directory: IndexPath
    count: Count


class DenseParams(_Params):
    """``dense-faiss``: unit embeddings (float32, row per unit) and the FAISS index over them."""

    dim: int = Field(gt=0)
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = True
    with_title: bool = True
    count: Count
    index_type: Literal["flat", "hnsw", "ivfpq", "factory"] = "flat"
    factory: str | None = None  # the FAISS factory string of index_type "factory"
    faiss_file: IndexPath = "dense.faiss"
    encoder_dtype: str | None = None  # what the encoder computed in (float32, bfloat16, int8…); vectors are float32
    embeddings_file: IndexPath = "dense.f32"
    # an encoder kept inside the index (``dense-adapted``: fine-tuned by ``genret train dense``), else ``model``
    model_dir: IndexPath | None = None


class FMParams(_Params):
    """``fm-index``: the FM-index over the units' token ids and the tokenizer that made them."""

    tokenizer: str
    tokenizer_dir: IndexPath
    vocab_size: int = Field(gt=0)
    title_start_id: Count
    title_end_id: Count
    lowercase: bool = False
    n_docs: Count
    n_tokens: Count
    index: dict[str, Any]


PARAMS_BY_KIND: dict[str, type[_Params]] = {
    "unit-store-sqlite": StoreParams, "bm25-lucene": BM25Params, "dense-faiss": DenseParams, "fm-index": FMParams,
}
