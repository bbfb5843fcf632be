"""Retrieval: the ``Retriever`` interface, its ``Hit`` results, and the retrievers."""

from ._dense import DenseRetriever, DenseSearchConfig
from ._registry import REGISTRY, RetrievalConfig, available_retrievers, load_retriever
from ._types import Hit, Provenance, Retriever

__all__ = [
    "REGISTRY", "DenseRetriever", "DenseSearchConfig", "Hit", "Provenance", "RetrievalConfig", "Retriever",
    "available_retrievers", "load_retriever",
]
