"""Retrieval: the ``Retriever`` interface, its ``Hit`` results, and the retrievers."""

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._dense import DenseRetriever, DenseSearchConfig
from ._generative import GenerativeConfig, GenerativeRetriever
from ._hybrid import HybridConfig, HybridRetriever
from ._prompts import DEFAULT_PROMPTS, PromptSpec
from ._registry import REGISTRY, RetrievalConfig, available_retrievers, load_retriever
from ._types import Hit, Provenance, Retriever

__all__ = [
    "BM25Retriever", "BM25SearchConfig", "DEFAULT_PROMPTS", "DenseRetriever", "DenseSearchConfig",
    "GenerativeConfig", "GenerativeRetriever", "Hit", "HybridConfig", "HybridRetriever", "PromptSpec", "Provenance",
    "REGISTRY", "RetrievalConfig", "Retriever", "available_retrievers", "load_retriever",
]
