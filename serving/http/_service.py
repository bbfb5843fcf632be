"""The search service: the one object the app, its routes, the dispatcher and the warm-up ask, with no knowledge of
HTTP.  A facade: each method delegates to the part that does the work —

- ``pool`` (``_pool.IndexPool``): the served indexes as snapshots, names resolved to retrievers, the retrievers;
- ``rag`` (``_rag.RagService``): the generator, the demonstration sources and the RAG pipelines over the pool;
- ``catalogue`` (``_catalogue.Catalogue``): ``/v1/indexes``' descriptions, the OpenAI-compatible model ids
  (``INDEX`` or ``INDEX/RETRIEVER``) and the embeddings by an index's dense encoder;
- the request checks (``_checks``) and preloading (``_warmup``).

Cheap methods (names, checks) run on the event loop; the model work (search, RAG, embeddings, preloading) blocks:
call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from genret.core import GenretError
from genret.indexing import Index
from genret.retrieval import Hit, Retriever
from genret.retrieval.rag import Generator

from ._catalogue import Catalogue
from ._checks import check_search
from ._errors import RequestError
from ._pool import IndexPool
from ._rag import RagOutcome, RagService, RagSpec
from ._settings import Settings
from ._snapshots import Snapshots
from ._warmup import check_names, load, served_parts

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RagOutcome", "RagSpec", "RequestError", "SearchService"]


class SearchService:
    """Opens every configured index once; retrievers, the generator and the encoders load on first use and stay."""

    def __init__(self, settings: Settings) -> None:
        if not settings.indexes:
            raise GenretError("no index to serve: give at least one index directory")
        self.settings = settings
        self.pool = IndexPool(settings)
        self.rag = RagService(settings, self.pool)
        self.catalogue = Catalogue(settings, self.pool, self.rag.demo_tasks)

    # ---- what is served (cheap) -----------------------------------------------------------------------------
    @property
    def snapshots(self) -> Snapshots:
        return self.pool.snapshots

    @property
    def indexes(self) -> dict[str, Index]:
        """The served indexes by name, each as of its current snapshot."""
        return self.pool.indexes

    @property
    def default_index(self) -> str:
        return self.pool.default_index

    @property
    def loaded(self) -> int:
        """Retrievers loaded so far (over the current snapshots)."""
        return self.pool.loaded

    @property
    def demo_tasks(self) -> list[str]:
        """The tasks with a demonstration pool (``settings.demos``)."""
        return self.rag.demo_tasks

    def describe(self) -> list[dict]:
        return self.catalogue.describe()

    def stale_indexes(self) -> dict[str, str]:
        """``{index: why}`` for indexes not served at their on-disk version (``/readyz`` answers 503)."""
        return self.pool.stale()

    # ---- requests checked, names resolved (cheap: nothing is loaded) ----------------------------------------
    def resolve(self, index: str | None, retriever: str | None, granularity: str | None = None) -> tuple[str, str]:
        """Canonical ``(index name, retriever name)``; ``None`` picks the default (``IndexPool.resolve``)."""
        return self.pool.resolve(index, retriever, granularity)

    def check(self, queries: Sequence[str], k: int, retriever: str, granularity: str | None = None,
              index: str | None = None) -> None:
        """Refuse bad requests with a clear :class:`RequestError` before any model work (``retriever`` of
        ``index``, as :meth:`resolve` returns them; None: the default index)."""
        check_search(self.pool, queries, k, retriever, granularity, index)

    def plan_search(self, queries: Sequence[str], k: int, index: str | None = None, retriever: str | None = None,
                    granularity: str | None = None) -> tuple[str, str]:
        """The ``(index, retriever)`` a search request names — with a granularity and no retriever, the index's
        first retriever that ranks by it — once the request is checked."""
        index, retriever = self.resolve(index, retriever, granularity)
        self.check(queries, k, retriever, granularity, index)
        return index, retriever

    def rag_spec(self, query: str, **request) -> RagSpec:
        """A checked RAG request, its defaults filled in (``RagService.spec``)."""
        return self.rag.spec(query, **request)

    def reranks(self, index: str | None, retriever: str | None) -> bool:
        """Whether ``retriever`` of ``index`` is served with a reranking stage (``IndexPool.reranks``; cheap)."""
        return self.pool.reranks(index, retriever)

    def rag_reranks(self, spec: RagSpec) -> bool:
        """Whether the passages of ``spec`` are reranked: retrieved (a retriever), ``rerank`` asked for, and the
        retriever served with a reranking stage (cheap)."""
        return spec.retriever is not None and spec.rerank and self.reranks(spec.index, spec.retriever)

    def models(self) -> list[tuple[str, str, str]]:
        """``(model id, index, retriever)`` of every OpenAI-compatible model id (``Catalogue.models``)."""
        return self.catalogue.models()

    def resolve_model(self, model: str | None) -> tuple[str | None, str | None]:
        return self.catalogue.resolve_model(model)

    def embedding_index(self, model: str | None) -> str:
        return self.catalogue.embedding_index(model)

    def embedding_dim(self, index: str) -> int:
        return self.catalogue.embedding_dim(index)

    def check_preload(self, names: Sequence[str]) -> None:
        check_names(self, names)

    # ---- model work (blocking: call it off the event loop) --------------------------------------------------
    def using(self, index: str | None, name: str | None, rerank: bool = True) -> AbstractContextManager[Retriever]:
        """Retriever ``name`` of ``index``'s current snapshot, kept open until the block ends (``IndexPool.using``;
        ``rerank`` False: its first stage)."""
        return self.pool.using(index, name, rerank)

    def retriever(self, index: str | None, name: str | None) -> Retriever:
        return self.pool.retriever(index, name)

    def use_retriever(self, index: str | None, name: str | None, retriever: Retriever | None) -> Retriever | None:
        """Serve ``retriever`` as ``name`` on ``index`` from now on (``IndexPool.use_retriever``); returns the one
        it replaces, which the caller closes."""
        return self.pool.use_retriever(index, name, retriever)

    def batch_search(self, queries: Sequence[str], k: int, index: str | None = None, retriever: str | None = None,
                     task: str | None = None, granularity: str | None = None, rerank: bool = True) -> list[list[Hit]]:
        """One hit list per query (unchecked: :meth:`check` first); ``rerank`` False: the retriever's first stage
        only (``IndexPool.batch_search``)."""
        return self.pool.batch_search(queries, k, index, retriever, task, granularity, rerank)

    def search(self, query: str, k: int, index: str | None = None, retriever: str | None = None,
               task: str | None = None, granularity: str | None = None,
               rerank: bool = True) -> tuple[str, str, list[Hit]]:
        """``(index name, retriever name, hits)``, checked."""
        index, retriever = self.resolve(index, retriever)
        self.check([query], k, retriever, granularity, index)
        return index, retriever, self.batch_search([query], k, index, retriever, task, granularity, rerank)[0]

    def generator(self, *, log_failure: bool = True) -> Generator:
        return self.rag.generator(log_failure=log_failure)

    def use_generator(self, generator: Generator | None) -> Generator | None:
        """Answer with ``generator`` from now on (None: load it again); returns the one it replaces."""
        return self.rag.use_generator(generator)

    def batch_rag(self, queries: Sequence[str], spec: RagSpec) -> list[RagOutcome]:
        return self.rag.batch(queries, spec)

    def stream_rag(self, query: str, spec: RagSpec) -> Iterator[tuple[str, object]]:
        return self.rag.stream(query, spec)

    def embed(self, index: str, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return self.catalogue.embed(index, texts)

    def preload(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Load the named parts (``_warmup``: retrievers on every index offering them, ``embeddings``, and
        ``generator``); ``(index, name)`` loaded, ``"*"`` for the generator's index."""
        parts = served_parts(self, names)
        for part in parts:
            load(self, part)
        return [(part.index or "*", part.name) for part in parts]

    def close(self) -> None:
        self.rag.close()
        self.pool.close()
