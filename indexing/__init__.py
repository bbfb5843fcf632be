"""Indexing: read a corpus, cut it into units with KILT provenance, build one index directory (manifest + SQLite unit
store + FM-index, FAISS and Lucene components), open it, extend it.

The names below are the package's whole surface, in four groups: building and maintaining an index; opening it and
reading its components (what the retrievers use); the encoders it is built with (and the Ray cluster it may be built
on); checking it.  The conventions every genret
package shares (errors, atomic and versioned JSON, staged directories, progress, devices, model resolution) are
``genret.core``'s; the FM-index's own names (``FMConfig``, ``load_fm``, ``FMQueries``, …) are
``genret.indexing.fm``'s.
"""

# build, extend, rebuild
from ._add import add_to_index
from ._adapted import (ADAPTED_DENSE, ADAPTED_RERANK, SENTENCE_RERANK_MODEL, adapted_reranker, dense_component,
                       drop_adapted_reranker, write_adapted_dense, write_adapted_reranker)
from ._bm25 import BM25Config
from ._memory import ADAPTED_MEMORY, QueryMemory, read_query_memory, write_query_memory
from ._build import IndexConfig, available_components, build_index
from ._corpus import Page, ReadStats, open_text, read_corpus
from ._dense import DenseConfig, encoder_model, rebuild_dense, unit_text
from ._ray_build import build_index_ray

# open and read
from ._dense import load_faiss
from ._faiss import configure_search, place_index
from ._index import Index
from ._lucene import LuceneIndex, open_lucene
from ._manifest import Component, Manifest, read_manifest, seal_manifest, write_manifest
from ._params import BM25Params, DenseParams, FMParams, StoreParams
from ._store import StoredUnit, UnitStore
from ._units import Unit, UnitConfig, sentence_spans

# encoders, the Ray cluster
from ._ray_cluster import ray_session
from ._encoder import Encoder, SentenceTransformerEncoder
from ._query_encoder import query_encoder

# checks
from ._verify import verify_index

__all__ = [
    "ADAPTED_DENSE", "ADAPTED_MEMORY", "ADAPTED_RERANK", "BM25Config", "BM25Params", "Component", "DenseConfig",
    "DenseParams", "Encoder", "FMParams", "Index", "IndexConfig", "LuceneIndex", "Manifest", "Page", "QueryMemory",
    "ReadStats", "SENTENCE_RERANK_MODEL", "SentenceTransformerEncoder", "StoreParams", "StoredUnit", "Unit",
    "UnitConfig", "UnitStore", "adapted_reranker", "add_to_index", "available_components", "build_index",
    "build_index_ray", "configure_search", "dense_component", "drop_adapted_reranker",
    "encoder_model", "load_faiss", "open_lucene", "open_text", "place_index", "query_encoder", "ray_session",
    "read_corpus", "read_manifest", "read_query_memory", "rebuild_dense", "seal_manifest", "sentence_spans",
    "unit_text", "verify_index", "write_adapted_dense", "write_adapted_reranker", "write_manifest",
    "write_query_memory",
]
