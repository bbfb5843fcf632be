"""Indexing: read a corpus, cut it into units with KILT provenance, build one index directory (manifest + SQLite unit
store + FM-index, FAISS and Lucene components), open it, extend it.

The names below are the package's whole surface, in four groups: building and maintaining an index; opening it and
reading its components (what the retrievers use); the models it is built with; and the file and error conventions
every genret package shares (atomic writes, staged directories, versioned JSON, progress, the error types).
"""

# build, extend, rebuild
from ._add import add_to_index
from ._bm25 import BM25Config
from ._build import IndexConfig, available_components, build_index
from ._corpus import Page, ReadStats, open_text, read_corpus
from ._dense import DenseConfig, rebuild_dense
from ._ray_build import build_index_ray

# open and read
from ._dense import load_faiss
from ._faiss import configure_search, place_index
from .fm import FMConfig, FMQueries, encode_texts, load_fm, load_fm_tokenizer, merge_next_tokens
from ._index import Index
from ._lucene import LuceneIndex, open_lucene
from ._manifest import Component, Manifest, read_manifest, write_manifest
from ._params import BM25Params, DenseParams, FMParams, StoreParams
from ._store import StoredUnit, UnitStore
from ._units import Unit, UnitConfig, sentence_spans

# models and devices
from ._device import native_bf16, quantize_int8, resolve_device, resolve_dtype, torch_dtype
from ._ray_cluster import ray_session
from ._encoder import DEFAULT_DENSE_MODEL, Encoder, SentenceTransformerEncoder, resolve_model_path
from ._models import DEFAULT_LM, load_tokenizer, loading_model, resolve_checkpoint
from ._query_encoder import query_encoder

# shared conventions: files, progress, errors
from ._errors import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError
from ._hashing import sha256_file
from ._manifest import read_versioned_json, write_json_atomic
from ._verify import verify_index
from ._writes import staged_dir, write_lock
from ._progress import progress_bar

__all__ = [
    "BM25Config", "BM25Params", "Component", "ConfigError", "DEFAULT_DENSE_MODEL", "DEFAULT_LM", "DenseConfig",
    "DenseParams", "Encoder", "FMConfig", "FMParams", "FMQueries", "GenretError", "Index", "IndexConfig",
    "IndexFormatError", "InputError", "LuceneIndex", "Manifest", "NotFoundError", "Page", "ReadStats",
    "SentenceTransformerEncoder", "StoreParams", "StoredUnit", "Unit", "UnitConfig", "UnitStore", "add_to_index",
    "available_components", "build_index", "build_index_ray", "configure_search", "encode_texts", "load_faiss",
    "load_fm",
    "load_fm_tokenizer", "load_tokenizer", "loading_model", "merge_next_tokens", "open_lucene", "open_text",
    "place_index",
    "progress_bar", "query_encoder", "ray_session", "read_corpus", "read_manifest", "read_versioned_json",
    "rebuild_dense",
    "resolve_checkpoint",
    "resolve_device", "resolve_dtype", "torch_dtype", "quantize_int8", "native_bf16",
    "resolve_model_path", "sentence_spans", "sha256_file", "staged_dir", "verify_index", "write_json_atomic",
    "write_lock", "write_manifest",
]
