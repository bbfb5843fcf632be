"""Retriever registry, keyed by the component ``kind`` written in the index manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from genret.core import NotFoundError
from genret.indexing import ADAPTED_MEMORY, Index, adapted_reranker

from ._bm25 import BM25Retriever, BM25SearchConfig
from ._contract import Retriever
from ._dense import DenseRetriever, DenseSearchConfig
from ._memory import MemoryRetriever, MemorySearchConfig
from ._rerank import RerankConfig, RerankedRetriever, load_reranker
from .generative import GenerativeConfig, GenerativeRetriever
from .hybrid import CALIBRATED_MEMBERS, HybridConfig, HybridRetriever, effective_hybrid, fitted_default

log = logging.getLogger("genret")


class RetrievalConfig(BaseModel):
    """Query-time retrieval settings, one section per retriever."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dense: DenseSearchConfig = Field(default_factory=DenseSearchConfig)
    bm25: BM25SearchConfig = Field(default_factory=BM25SearchConfig)
    generative: GenerativeConfig = Field(default_factory=GenerativeConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    memory: MemorySearchConfig = Field(default_factory=MemorySearchConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)


def load_hybrid(index: Index, config: RetrievalConfig, load: Callable[[str], Retriever] | None = None, *,
                shared: bool = False) -> HybridRetriever:
    """The registry factory: a ``HybridRetriever`` over ``index`` whose members are
    ``load_retriever(index, name, config)`` for each member (``load(name)`` instead when given: the Ray-served
    members) — ``config.hybrid`` and the fitted weights saved in the index decide which: see
    ``hybrid.effective_hybrid`` —, fused as they say (``config``: a ``RetrievalConfig`` with a ``hybrid:
    HybridConfig`` section).  Members a fitted file weighs 0 are not loaded.  Members built before a failing one are
    closed, unless ``shared``: then ``load(name)`` hands out retrievers the caller keeps (e.g. the ones a server
    serves alone), which the hybrid neither closes on a failure nor when it is closed."""
    hybrid, source = effective_hybrid(index, config.hybrid, default_members(index))
    if "memory" in (hybrid.retrievers or ()) and not (config.memory.adapted and index.has(ADAPTED_MEMORY)):
        if config.memory.adapted:  # the fitted weights name a memory the index no longer has: fuse without it
            log.warning("hybrid: %s names the query memory, which index %s does not have; fusing without it "
                        "(`genret adapt --force` rebuilds both)", source, index.path)
        hybrid = hybrid.model_copy(update={  # and with --untrained: the index as built
            "retrievers": [m for m in hybrid.retrievers if m != "memory"],
            "weights": None if hybrid.weights is None else {m: w for m, w in hybrid.weights.items() if m != "memory"}})
    load = load or (lambda name: _load_one(index, name, config))
    members: dict[str, Retriever] = {}
    try:
        for name in hybrid.retrievers or ():
            members[name] = load(name)
    except BaseException:
        for member in members.values() if not shared else ():
            member.close()
        raise
    retriever = HybridRetriever(members, hybrid, owns_members=not shared)
    retriever.tuned_from = None if source is None else str(source)
    return retriever


class Backend(NamedTuple):
    """A registered retriever: the index component it reads, a factory per component kind, and the granularities
    it takes (None: its members', for hybrid)."""

    component: str
    factories: dict[str, Callable[[Index, RetrievalConfig], Retriever]]
    granularities: tuple[str, ...] | None


# retriever name -> its backend, in preference order
REGISTRY: dict[str, Backend] = {
    "dense": Backend("dense", {"dense-faiss": lambda index, cfg: DenseRetriever(index, cfg.dense)},
                     DenseRetriever.granularities),
    "bm25": Backend("bm25", {"bm25-lucene": lambda index, cfg: BM25Retriever(index, cfg.bm25)},
                    BM25Retriever.granularities),
    "generative": Backend("fm", {"fm-index": lambda index, cfg: GenerativeRetriever(index, cfg.generative)},
                          GenerativeRetriever.granularities),
    # the training questions `genret adapt` keeps: a hybrid member by fitted weights only (``default_members``)
    "memory": Backend(ADAPTED_MEMORY, {"query-memory": lambda index, cfg: MemoryRetriever(
        index, cfg.memory, device=cfg.dense.device, dtype=cfg.dense.dtype)},
                      MemoryRetriever.granularities),
    # last, so that it is the default only where fitted weights say so (``fitted_default``); available when all its
    # members are
    "hybrid": Backend("store", {"unit-store-sqlite": load_hybrid}, None),
}


def base_retrievers(index: Index) -> list[str]:
    """The non-hybrid retrievers this index supports, in preference order (dense, bm25, generative)."""
    return [name for name, backend in REGISTRY.items() if name != "hybrid" and index.has(backend.component)
            and index.component(backend.component).kind in backend.factories]


def default_members(index: Index) -> list[str]:
    """The hybrid's members when neither the config nor fitted weights name them: every non-hybrid retriever the
    index supports but the calibrated ones (the query memory), which join by fitted or explicit weights only."""
    return [name for name in base_retrievers(index) if name not in CALIBRATED_MEMBERS]


def available_retrievers(index: Index, config: RetrievalConfig | None = None) -> list[str]:
    """Retriever names this index can serve, in preference order (the first: its default).  Hybrid: when all its
    configured members are (``hybrid.retrievers``, else the members ``hybrid.weights`` names), or, with neither
    given, when the index supports at least two retrievers (its default members: all of them, or those of its fitted
    weights); it comes first where fitted weights decide it (``fitted_default``), last otherwise."""
    config = config or RetrievalConfig()
    names = base_retrievers(index)
    hybrid = config.hybrid
    wanted = hybrid.retrievers if hybrid.retrievers is not None else list(hybrid.weights or ())
    if (all(m in names for m in wanted) and wanted) or (not wanted and len(default_members(index)) >= 2):
        names.insert(0 if fitted_default(index, hybrid) else len(names), "hybrid")
    return names


def load_retriever(index: Index, name: str | None = None, config: RetrievalConfig | None = None) -> Retriever:
    """The retriever ``name`` over ``index`` (default: the index's default under ``config``, the first of
    ``available_retrievers``: the hybrid where fitted weights decide it), followed by the
    reranking stage ``rerank_settings`` gives (a hybrid's members are not reranked, only its fusion)."""
    config = config or RetrievalConfig()
    name = name or _default_name(index, config)
    return with_rerank(index, name, _load_one(index, name, config), config)


def rerank_settings(index: Index, name: str, config: RetrievalConfig | None = None) -> RerankConfig | None:
    """The reranking stage over retriever ``name`` of ``index``, resolved (None: none): the model
    ``config.rerank`` names (``adapted``: the index's adapted cross-encoder), or — none named and
    ``rerank.adapted`` — the index's adapted cross-encoder where ``genret adapt`` fitted it over ``name``; depth
    and weight as given, else the adapted one's, else 20 and 1."""
    rerank = (config or RetrievalConfig()).rerank
    adapted = adapted_reranker(index)
    if rerank.model == "adapted" and adapted is None:
        raise NotFoundError(f"index {index.path} has no adapted reranker (`genret adapt` trains one)")
    use_adapted = rerank.model == "adapted" or (rerank.model is None and rerank.adapted and adapted is not None
                                                and adapted["over"] == name)
    if not use_adapted:
        if not rerank.model:
            return None
        return rerank.model_copy(update={"depth": rerank.depth or 20, "weight": 1.0 if rerank.weight is None
                                         else rerank.weight})
    return rerank.model_copy(update={"model": adapted["model"], "depth": rerank.depth or adapted["depth"],
                                     "weight": adapted["weight"] if rerank.weight is None else rerank.weight})


def with_rerank(index: Index, name: str, retriever: Retriever, config: RetrievalConfig | None = None) -> Retriever:
    """``retriever`` (retriever ``name`` over ``index``) followed by its reranking stage (``rerank_settings``), or
    as it is when it has none; ``retriever`` is closed if the reranker fails to load."""
    settings = rerank_settings(index, name, config)
    if settings is None:
        return retriever
    try:
        reranker = load_reranker(settings, index, adapted_dense=(config or RetrievalConfig()).dense.adapted)
        return RerankedRetriever(retriever, reranker, settings.depth, index, settings.weight)
    except BaseException:
        retriever.close()
        raise


def first_stage(retriever: Retriever) -> Retriever:
    """The retriever under a reranking stage (``retriever`` itself when it has none)."""
    return retriever.inner if isinstance(retriever, RerankedRetriever) else retriever


def _default_name(index: Index, config: RetrievalConfig) -> str:
    names = available_retrievers(index, config)
    if not names:
        raise NotFoundError(f"index {index.path} has no component any retriever can use")
    return names[0]


def _load_one(index: Index, name: str | None, config: RetrievalConfig) -> Retriever:
    name = name or _default_name(index, config)
    if name not in REGISTRY:
        raise NotFoundError(f"unknown retriever {name!r}; known: {sorted(REGISTRY)}")
    comp_name, kinds, _ = REGISTRY[name]
    kind = index.component(comp_name).kind
    if kind not in kinds:
        raise NotFoundError(f"retriever {name!r} cannot read component {comp_name!r} of kind {kind!r}")
    return kinds[kind](index, config)


def retriever_granularities(index: Index, name: str, config: RetrievalConfig | None = None) -> tuple[str, ...]:
    """The granularities retriever ``name`` over ``index`` takes, known without loading it (hybrid: those of its
    configured members, or of every retriever the index has)."""
    config = config or RetrievalConfig()
    if name not in REGISTRY:
        raise NotFoundError(f"unknown retriever {name!r}; known: {sorted(REGISTRY)}")
    own = REGISTRY[name].granularities
    if own is not None:
        return own
    hybrid = config.hybrid
    members = hybrid.retrievers if hybrid.retrievers is not None else list(hybrid.weights or default_members(index))
    return tuple(sorted({g for m in members if m in REGISTRY and m != name
                         for g in retriever_granularities(index, m, config)}))
