"""The served indexes and their retrievers: names in, retrievers out, with no knowledge of HTTP.

Indexes are opened from the configured directories only, and addressed by name (the directory's base name): a
name is a dictionary key, never a path, so no request can make the pool open anything.  Each is served as one
consistent snapshot (``_snapshots``): a new version written under it is swapped in whole, never mixed with the
old one.  Retrievers are loaded on first use and kept with their snapshot (a hybrid over the members it serves;
with ``settings.ray`` each is backed by Ray actors, ``_ray_serving``), each followed by its reranking stage where
one applies (``genret.retrieval.with_rerank``: a model ``retrieval.rerank`` names, or the index's adapted reranker
over the retriever ``genret adapt`` fitted it to).  A served hybrid fuses its members' first stages, never their
reranked hits, and is reranked itself; a request may ask for the first stage only (``rerank=False``).
:meth:`IndexPool.resolve` turns the names a request gives (or leaves out) into canonical ones without loading
anything — with a granularity and no retriever named, the index's first retriever that ranks by it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from genret.core import NotFoundError
from genret.indexing import Index
from genret.retrieval import (
    Hit,
    Retriever,
    available_retrievers,
    first_stage,
    load_hybrid,
    load_retriever,
    rerank_settings,
    retriever_granularities,
    with_rerank,
)

from ._errors import Unavailable
from ._snapshots import Snapshot, Snapshots, StaleSnapshot
from ._warmup import load_order, warm_retriever

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = ["IndexPool"]


class IndexPool:
    """Opens every configured index once; retrievers are created on first use and kept with their snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ray = None
        if settings.ray is not None:  # the retrievers' index parts in Ray actors (genret serve --ray)
            from ._ray_serving import RayBackend

            self._ray = RayBackend(settings.ray)
        self.snapshots = Snapshots(list(settings.indexes), self._load, interval=settings.server.reload_interval_s,
                                   warm=None if settings.server.lazy else warm_retriever, wanted=self._wanted)

    def _wanted(self, index: Index, loaded: Collection[str]) -> list[str]:
        """The retrievers a new version of an index loads before it serves: the ones its old version had loaded
        (or failed to) and the ones the server preloads (``server.preload``; everything unless ``server.lazy``),
        as far as the new version offers them, in ``load_order`` (a hybrid after its members)."""
        cfg = self.settings.server
        return [name for name in load_order(self.offered(index))
                if name in loaded or (name in cfg.preload if cfg.preload else not cfg.lazy)]

    def _load(self, snap: Snapshot, name: str) -> Retriever:
        offered = self.offered(snap.index)
        if name not in offered:  # resolved over a version the one on disk replaced, which has no such component
            raise NotFoundError(f"unknown retriever {name!r} for index {snap.index.name!r} (its current version has "
                                f"no component for it); available: {offered}")
        cfg = self.settings.retrieval
        if self._ray is not None:
            return with_rerank(snap.index, name, self._ray.load(snap.index, name, cfg), cfg)
        if name == "hybrid":  # over the first stages of the members this snapshot serves: no second copy of a model
            hybrid = load_hybrid(snap.index, cfg, lambda m: first_stage(self.snapshots.retriever(snap, m)),
                                 shared=True)
            return with_rerank(snap.index, name, hybrid, cfg)
        return load_retriever(snap.index, name, cfg)  # with its reranking stage, if any

    # ---- what is served (cheap: nothing is loaded) ----------------------------------------------------------
    @property
    def indexes(self) -> dict[str, Index]:
        """The served indexes by name, each as of its current snapshot."""
        return {name: snap.index for name, snap in self.snapshots.current.items()}

    @property
    def default_index(self) -> str:
        return next(iter(self.snapshots.current))

    @property
    def loaded(self) -> int:
        """Retrievers loaded so far (over the current snapshots)."""
        return sum(len(snap.retrievers) for snap in self.snapshots.current.values())

    def offered(self, index: Index) -> list[str]:
        """The retrievers ``index`` offers, in preference order (the first: its default)."""
        return available_retrievers(index, self.settings.retrieval)

    def granularities(self, index: str | None) -> dict[str, tuple[str, ...]]:
        """``{retriever: granularities it ranks by}`` for the retrievers ``index`` offers (None: the default)."""
        ix = self.indexes[self.default_index if index is None else index]
        return {name: retriever_granularities(ix, name, self.settings.retrieval) for name in self.offered(ix)}

    def resolve(self, index: str | None, retriever: str | None,
                granularity: str | None = None) -> tuple[str, str]:
        """Canonical ``(index name, retriever name)``; ``None`` picks the default index, and the default retriever
        — or, given a ``granularity``, the index's first retriever that ranks by it (none: the default, whose
        check then says why).  Cheap (no model loads)."""
        index = self.default_index if index is None else index
        if index not in self.indexes:
            raise NotFoundError(f"unknown index {index!r}; served: {sorted(self.indexes)}")
        names = self.offered(self.indexes[index])
        if retriever is None and granularity is not None:
            retriever = next((name for name, takes in self.granularities(index).items() if granularity in takes),
                             None)
        if retriever is None:
            if not names:
                raise NotFoundError(f"index {index!r} has no component any retriever can use")
            return index, names[0]
        if retriever not in names:
            raise NotFoundError(f"unknown retriever {retriever!r} for index {index!r}; available: {names}")
        return index, retriever

    def stale(self) -> dict[str, str]:
        """``{index: why}`` for indexes not served at their on-disk version."""
        return self.snapshots.stale()

    # ---- retrievers (blocking: call it off the event loop) --------------------------------------------------
    @contextmanager
    def using(self, index: str | None, name: str | None, rerank: bool = True) -> Iterator[Retriever]:
        """Retriever ``name`` of ``index``'s current snapshot, which stays open until the block ends (a new
        version swapped in meanwhile serves the next requests); ``rerank`` False: its first stage only (the
        retriever under its reranking stage, if it has one)."""
        index, name = self.resolve(index, name)
        for _ in range(3):
            with self.snapshots.use(index) as snap:
                try:
                    r = self.snapshots.retriever(snap, name)
                except StaleSnapshot:
                    self.snapshots.refresh(index)
                    continue
                yield r if rerank else first_stage(r)
                return
        raise Unavailable(f"index {index!r} keeps changing on disk; try again", self.settings.server.retry_after_s)

    def retriever(self, index: str | None, name: str | None) -> Retriever:
        """Retriever ``name`` of ``index``'s current snapshot (loaded on first use); for work that spans a
        request, prefer :meth:`using`."""
        with self.using(index, name) as r:
            return r

    def use_retriever(self, index: str | None, name: str | None, retriever: Retriever | None) -> Retriever | None:
        """Serve ``retriever`` as ``name`` on ``index`` from now on (one built elsewhere, or a test's stand-in;
        None: load it again on next use); returns the one it replaces, if any, which the caller closes."""
        index, name = self.resolve(index, name)
        snap = self.snapshots.current[index]
        with snap.lock:
            old = snap.retrievers.pop(name, None)
            if retriever is not None:
                snap.retrievers[name] = retriever
            return old

    def reranks(self, index: str | None, name: str | None) -> bool:
        """Whether retriever ``name`` of ``index`` is served with a reranking stage (``rerank_settings``: a model
        ``retrieval.rerank`` names, or the index's adapted reranker over ``name``).  Cheap (no model loads)."""
        index, name = self.resolve(index, name)
        return rerank_settings(self.indexes[index], name, self.settings.retrieval) is not None

    def batch_search(self, queries: Sequence[str], k: int, index: str | None = None, retriever: str | None = None,
                     task: str | None = None, granularity: str | None = None, rerank: bool = True) -> list[list[Hit]]:
        """One hit list per query (unchecked: ``_checks.check_search`` first); ``rerank`` False: by the first
        stage only."""
        with self.using(index, retriever, rerank) as r:
            if granularity is not None:
                return r.batch_search(list(queries), k, task=task, granularity=granularity)
            return r.batch_search(list(queries), k, task=task)

    def close(self) -> None:
        self.snapshots.close()
        if self._ray is not None:
            self._ray.close()
