"""The search service: opened indexes and their retrievers, with no knowledge of HTTP."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from indexing import GenretError, Index, NotFoundError
from retrieval import Hit, Retriever, available_retrievers, load_retriever

from ._settings import Settings


class RequestError(GenretError):
    """A request the service refuses (bad k, empty query, …)."""


class SearchService:
    """Opens every configured index once; retrievers are created on first use and kept."""

    def __init__(self, settings: Settings) -> None:
        if not settings.indexes:
            raise GenretError("no index to serve: give at least one index directory")
        self.settings = settings
        self.indexes: dict[str, Index] = {}
        for path in settings.indexes:
            index = Index(path)
            if index.name in self.indexes:
                raise GenretError(f"two served indexes share the name {index.name!r}")
            self.indexes[index.name] = index
        self._retrievers: dict[tuple[str, str], Retriever] = {}
        self._lock = threading.Lock()

    @property
    def default_index(self) -> str:
        return next(iter(self.indexes))

    def describe(self) -> list[dict]:
        return [{"name": name, "units": len(ix.store), "unit_kind": ix.manifest.units.kind,
                 "retrievers": available_retrievers(ix)} for name, ix in self.indexes.items()]

    def retriever(self, index_name: str | None, name: str | None) -> Retriever:
        index_name = index_name or self.default_index
        if index_name not in self.indexes:
            raise NotFoundError(f"unknown index {index_name!r}; served: {sorted(self.indexes)}")
        index = self.indexes[index_name]
        name = name or next(iter(available_retrievers(index)), None)  # None: load_retriever says there is none
        key = (index_name, name)
        with self._lock:
            if key not in self._retrievers:
                self._retrievers[key] = load_retriever(index, name, self.settings.retrieval)
            return self._retrievers[key]

    def _check(self, queries: Sequence[str], k: int) -> None:
        cfg = self.settings.server
        if not 1 <= k <= cfg.max_k:
            raise RequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
        for q in queries:
            if not q.strip():
                raise RequestError("query is empty")
            if len(q) > cfg.max_query_chars:
                raise RequestError(f"query longer than {cfg.max_query_chars} characters")

    def search(self, query: str, k: int, index: str | None = None, retriever: str | None = None,
               task: str | None = None) -> tuple[str, str, list[Hit]]:
        """``(index name, retriever name, hits)``; blocking (model work), call it off the event loop."""
        self._check([query], k)
        index = index or self.default_index
        r = self.retriever(index, retriever)
        return index, r.name, r.search(query, k, task=task)

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
