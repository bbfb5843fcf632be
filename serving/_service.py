"""The search service: opened indexes and their retrievers, with no knowledge of HTTP.

Indexes are opened once, from the configured directories only, and addressed by name (the directory's
base name): a name is a dictionary key, never a path, so no request can make the service open anything.
Retrievers are created on first use (or at start, ``server.preload``) and kept.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from indexing import GenretError, Index, NotFoundError
from retrieval import Hit, Retriever, available_retrievers, load_retriever

from ._errors import RequestError
from ._settings import Settings

__all__ = ["RequestError", "SearchService"]

# retrievers that take a granularity override (the generative retriever's task prompts choose one)
GRANULAR = ("generative",)


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

    @property
    def loaded(self) -> int:
        """Retrievers loaded so far."""
        return len(self._retrievers)

    def describe(self) -> list[dict]:
        return [{"name": name, "units": len(ix.store), "unit_kind": ix.manifest.units.kind,
                 "retrievers": available_retrievers(ix, self.settings.retrieval)}
                for name, ix in self.indexes.items()]

    # ---- names -> (index, retriever), without loading anything ----------------------------------------------
    def resolve(self, index: str | None, retriever: str | None) -> tuple[str, str]:
        """Canonical ``(index name, retriever name)``; ``None`` picks the default.  Cheap (no model loads)."""
        index = self.default_index if index is None else index
        if index not in self.indexes:
            raise NotFoundError(f"unknown index {index!r}; served: {sorted(self.indexes)}")
        names = available_retrievers(self.indexes[index], self.settings.retrieval)
        if retriever is None:
            if not names:
                raise NotFoundError(f"index {index!r} has no component any retriever can use")
            return index, names[0]
        if retriever not in names:
            raise NotFoundError(f"unknown retriever {retriever!r} for index {index!r}; available: {names}")
        return index, retriever

    def check(self, queries: Sequence[str], k: int, retriever: str, granularity: str | None = None) -> None:
        """Refuse bad requests with a clear :class:`RequestError` before any model work."""
        cfg = self.settings.server
        if not 1 <= k <= cfg.max_k:
            raise RequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
        if not queries:
            raise RequestError("no query given")
        if len(queries) > cfg.max_batch:
            raise RequestError(f"at most {cfg.max_batch} queries per batch, got {len(queries)}")
        for i, q in enumerate(queries):
            where = f"query {i}" if len(queries) > 1 else "query"
            if not q.strip():
                raise RequestError(f"{where} is empty")
            if len(q) > cfg.max_query_chars:
                raise RequestError(f"{where} longer than {cfg.max_query_chars} characters ({len(q)})")
            try:
                q.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(f"{where} is not valid Unicode (lone surrogate)") from None
        if granularity is not None and retriever not in GRANULAR:
            raise RequestError(f"granularity applies to the {' / '.join(GRANULAR)} retriever, not {retriever!r}")

    # ---- model work (blocking: call it off the event loop) --------------------------------------------------
    def retriever(self, index: str | None, name: str | None) -> Retriever:
        index, name = self.resolve(index, name)
        key = (index, name)
        with self._lock:
            if key not in self._retrievers:
                self._retrievers[key] = load_retriever(self.indexes[index], name, self.settings.retrieval)
            return self._retrievers[key]

    def batch_search(self, queries: Sequence[str], k: int, index: str | None = None, retriever: str | None = None,
                     task: str | None = None, granularity: str | None = None) -> list[list[Hit]]:
        """One hit list per query (unchecked: :meth:`check` first)."""
        r = self.retriever(index, retriever)
        if granularity is not None:
            return r.batch_search(list(queries), k, task=task, granularity=granularity)
        return r.batch_search(list(queries), k, task=task)

    def search(self, query: str, k: int, index: str | None = None, retriever: str | None = None,
               task: str | None = None, granularity: str | None = None) -> tuple[str, str, list[Hit]]:
        """``(index name, retriever name, hits)``, checked; blocking."""
        index, retriever = self.resolve(index, retriever)
        self.check([query], k, retriever, granularity)
        return index, retriever, self.batch_search([query], k, index, retriever, task, granularity)[0]

    def preload(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Load the named retrievers on every index that offers them; ``(index, retriever)`` loaded."""
        loaded = []
        for index in self.indexes:
            offered = available_retrievers(self.indexes[index], self.settings.retrieval)
            for name in names:
                if name in offered:
                    self.retriever(index, name)
                    loaded.append((index, name))
        return loaded

    def check_preload(self, names: Sequence[str]) -> None:
        offered = {n for ix in self.indexes.values() for n in available_retrievers(ix, self.settings.retrieval)}
        missing = [n for n in names if n not in offered]
        if missing:
            raise GenretError(f"cannot preload {missing}: no served index offers them (offered: {sorted(offered)})")

    def close(self) -> None:
        for r in self._retrievers.values():
            close = getattr(r, "close", None)
            if callable(close):
                close()
        self._retrievers.clear()
        for index in self.indexes.values():
            index.close()
