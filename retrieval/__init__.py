"""Retrieval: the ``Retriever`` interface, its ``Hit`` results, and the retrievers."""

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._dense import DenseRetriever, DenseSearchConfig
from ._registry import REGISTRY, RetrievalConfig, available_retrievers, load_retriever
from ._types import Hit, Provenance, Retriever

__all__ = [
    "REGISTRY", "BM25Retriever", "BM25SearchConfig", "DenseRetriever", "DenseSearchConfig", "Hit", "Provenance",
    "RetrievalConfig", "Retriever", "available_retrievers", "load_retriever",
]
