"""Retrieval: the ``Retriever`` interface, its ``Hit`` results, and the retrievers."""

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._demo_pool import build_demo_pool
from ._demo_train import DemoTrainConfig, train_demos
from ._demos import DEMO_SOURCES, DemoSource, load_demo_source
from ._dense import DenseRetriever, DenseSearchConfig
from ._generative import GenerativeConfig, GenerativeRetriever
from ._generator import Generator, GeneratorConfig, load_generator
from ._hybrid import DEFAULT_MEMBER_WEIGHTS, HybridConfig, HybridRetriever
from ._prompts import DEFAULT_PROMPTS, PromptSpec
from ._rag import Citation, RagAnswer, RagConfig, RagPipeline, open_pipeline
from ._rag_prompt import ANSWER_TASKS, AnswerTask
from ._registry import REGISTRY, RetrievalConfig, available_retrievers, load_retriever
from ._types import Demo, Hit, Provenance, Retriever

__all__ = [
    "ANSWER_TASKS", "AnswerTask", "Citation", "Demo", "Generator", "GeneratorConfig", "RagAnswer", "RagConfig",
    "RagPipeline", "load_generator", "open_pipeline",
    "BM25Retriever", "BM25SearchConfig", "DEFAULT_MEMBER_WEIGHTS", "DEFAULT_PROMPTS", "DEMO_SOURCES", "DemoSource",
    "DemoTrainConfig",
    "build_demo_pool", "load_demo_source", "train_demos", "DenseRetriever", "DenseSearchConfig",
    "GenerativeConfig", "GenerativeRetriever", "Hit", "HybridConfig", "HybridRetriever", "PromptSpec", "Provenance",
    "REGISTRY", "RetrievalConfig", "Retriever", "available_retrievers", "load_retriever",
]
