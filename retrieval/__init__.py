"""Retrieval: the ``Retriever`` contract and its ``Hit`` results; BM25, dense, generative and hybrid retrievers by
name (``load_retriever``); the task registry (``TASKS``: each task's retrieval prompt and answer form); and the
parts around them, each its own subpackage:

- ``generative``: SEAL/UGR generative retrieval (``generative.training``: fine-tuning it);
- ``demos``: in-context demonstrations (UDR pools, sources, training);
- ``rag``: generators, answer prompts and the RAG pipeline (``open_pipeline`` opens one from names).

The RAG names (``open_pipeline``, ``load_generator``, ``Generator``, ``GeneratorConfig``, ``RagConfig``,
``RagPipeline``) load on first use: a search needs neither ``rag`` nor ``demos`` (nor the HTTP client they import).
"""

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._contract import Demo, Hit, Provenance, Retriever
from ._dense import DenseRetriever, DenseSearchConfig
from ._rerank import (CrossEncoderReranker, QueryLikelihoodReranker, RerankConfig, RerankedRetriever, Reranker,
                      blend, blended_order, hit_texts, load_reranker, reranker_texts)
from ._memory import MemoryRetriever, MemorySearchConfig, build_memory, memory_encoder, memory_from_kilt
from ._dense_train import DensePair, DenseTrainConfig, fine_tune_dense, pairs_from_kilt
from ._rerank_sentences import SentenceReranker
from ._rerank_train import RerankTrainConfig, fine_tune_reranker
from .hybrid import DEFAULT_MEMBER_WEIGHTS, HybridConfig, HybridRetriever
from ._ray_retrievers import load_ray_retriever
from ._tasks import TASKS, Task, check_task
from ._registry import (REGISTRY, RetrievalConfig, available_retrievers, base_retrievers, default_members,
                        first_stage, load_hybrid,
                        load_retriever, rerank_settings, retriever_granularities, with_rerank)
from .generative import GenerativeConfig, GenerativeRetriever

_RAG_NAMES = frozenset({"Generator", "GeneratorConfig", "RagConfig", "RagPipeline", "load_generator"})

__all__ = [
    "BM25Retriever", "BM25SearchConfig", "CrossEncoderReranker", "DEFAULT_MEMBER_WEIGHTS", "Demo", "DensePair",
    "DenseRetriever", "DenseSearchConfig", "DenseTrainConfig", "GenerativeConfig", "GenerativeRetriever",
    "Generator", "GeneratorConfig", "Hit", "HybridConfig", "HybridRetriever", "MemoryRetriever",
    "MemorySearchConfig", "Provenance", "QueryLikelihoodReranker", "REGISTRY", "RagConfig", "RagPipeline",
    "RerankConfig", "RerankTrainConfig", "RerankedRetriever", "Reranker", "RetrievalConfig", "Retriever",
    "SentenceReranker", "TASKS", "Task", "available_retrievers", "base_retrievers", "blend", "blended_order",
    "build_memory", "check_task", "default_members", "fine_tune_dense", "fine_tune_reranker", "first_stage",
    "hit_texts", "load_generator", "load_hybrid", "load_ray_retriever", "load_reranker", "load_retriever",
    "memory_encoder", "memory_from_kilt", "open_pipeline", "pairs_from_kilt", "rerank_settings", "reranker_texts",
    "retriever_granularities", "with_rerank",
]


def __getattr__(name: str):
    if name == "open_pipeline":
        from ._open import open_pipeline as value
    elif name in _RAG_NAMES:
        from . import rag

        value = getattr(rag, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
