"""Retriever registry, keyed by the component ``kind`` written in the index manifest."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from indexing import Index, NotFoundError

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._dense import DenseRetriever, DenseSearchConfig
from ._generative import GenerativeConfig, GenerativeRetriever
from ._types import Retriever


class RetrievalConfig(BaseModel):
    """Query-time retrieval settings, one section per retriever."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dense: DenseSearchConfig = Field(default_factory=DenseSearchConfig)
    bm25: BM25SearchConfig = Field(default_factory=BM25SearchConfig)
    generative: GenerativeConfig = Field(default_factory=GenerativeConfig)


# retriever name -> (index component it reads, {component kind -> factory})
REGISTRY: dict[str, tuple[str, dict[str, Callable[[Index, RetrievalConfig], Retriever]]]] = {
    "dense": ("dense", {"dense-faiss": lambda index, cfg: DenseRetriever(index, cfg.dense)}),
    "bm25": ("bm25", {"bm25-lucene": lambda index, cfg: BM25Retriever(index, cfg.bm25)}),
    "generative": ("fm", {"fm-index": lambda index, cfg: GenerativeRetriever(index, cfg.generative)}),
}


def available_retrievers(index: Index) -> list[str]:
    """Retriever names this index can serve, in preference order."""
    return [name for name, (comp, kinds) in REGISTRY.items()
            if index.has(comp) and index.component(comp).kind in kinds]


def load_retriever(index: Index, name: str | None = None, config: RetrievalConfig | None = None) -> Retriever:
    """The retriever ``name`` over ``index`` (default: the first one the index supports)."""
    config = config or RetrievalConfig()
    if name is None:
        names = available_retrievers(index)
        if not names:
            raise NotFoundError(f"index {index.path} has no component any retriever can use")
        name = names[0]
    if name not in REGISTRY:
        raise NotFoundError(f"unknown retriever {name!r}; known: {sorted(REGISTRY)}")
    comp_name, kinds = REGISTRY[name]
    kind = index.component(comp_name).kind
    if kind not in kinds:
        raise NotFoundError(f"retriever {name!r} cannot read component {comp_name!r} of kind {kind!r}")
    return kinds[kind](index, config)
