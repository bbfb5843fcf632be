"""Shards of an index as Ray actors, and ``RemoteFM``: the FM-index query API over FM shard actors.

An index's units ``[0, n)`` are cut into contiguous shards (the FM-index's own shards, as the manifest lists them);
each shard is served by ``replicas`` actors of each kind it needs:

- ``FMShard``: one FM-index shard (memory-mapped from the index directory, which every node must see);
- ``DenseShard``: the FAISS search over the shard's units — for a ``flat`` index, an exact inner-product index over
  the shard's rows (read from the stored index), so merged results equal the single index's; any other FAISS
  type is served whole by one replicated actor set (an approximate index cut in slices would rank otherwise);
- ``BM25Replica``: the whole Lucene index (BM25 is not sharded: its statistics are collection-wide).

Actors restart when their process or node dies (``max_restarts=-1``) and calls to them are retried
(``max_task_retries=-1``); a restarted actor reloads its shard from the index directory.  Ray is imported only here,
inside functions: this module is loaded by ``load_ray_retriever`` alone.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genret.indexing import Component
from genret.indexing.fm import FMQueries, merge_next_tokens

ACTOR_OPTIONS = {"max_restarts": -1, "max_task_retries": -1}
COUNT_CACHE = 200_000  # n-gram counts a RemoteFM keeps (the same keys recur within and across queries)


class FMShard:
    """Actor: FM-index shard ``i`` of the ``fm`` component of the index at ``index_dir``."""

    def __init__(self, index_dir: str, component: Component, i: int) -> None:
        from genret.indexing.fm import load_fm

        p = component.params
        shard = p["index"]["shards"][i]
        one = {**p["index"], "shards": [shard], "n_docs": shard["n_docs"], "n_tokens": shard["n_tokens"]}
        comp = component.model_copy(update={"params": {**p, "index": one, "n_docs": shard["n_docs"],
                                                       "n_tokens": shard["n_tokens"], "shards": 1}})
        self.fm = load_fm(index_dir, comp)

    def info(self) -> tuple[int, int, int]:
        return self.fm.vocab_size, self.fm.n_docs, self.fm.n_tokens

    def root(self):
        return self.fm.root()

    def extend(self, rng, token: int):
        return self.fm.extend(rng, token)

    def range_of(self, ngram: list[int]):
        return self.fm.range_of(ngram)

    def counts(self, ngrams: list[list[int]]) -> list[int]:
        return [int(c) for c in self.fm.count_many(ngrams)]

    def count_range(self, rng) -> int:
        return int(self.fm.count_range(rng))

    def next_tokens_of_range(self, rng):
        return self.fm.next_tokens_of_range(rng)

    def doc_counts_ranges(self, rngs, limit):
        return self.fm.doc_counts_ranges(rngs, limit)

    def locate_ranges(self, rngs, limit):
        return self.fm.locate_ranges(rngs, limit)

    def doc_length(self, doc: int) -> int:
        return int(self.fm.doc_length(doc))


class DenseShard:
    """Actor: FAISS search over units ``[start, stop)`` (None: the whole index, as stored)."""

    def __init__(self, index_dir: str, component: Component, span: tuple[int, int] | None,
                 ef_search: int | None = None, nprobe: int | None = None) -> None:
        import faiss

        from genret.indexing import configure_search, load_faiss

        whole = load_faiss(Path(index_dir), component)
        configure_search(whole, component, ef_search=ef_search, nprobe=nprobe)
        self.start = 0
        if span is None:
            self.faiss = whole
            return
        self.start, stop = span
        self.faiss = faiss.IndexFlatIP(whole.d)
        if stop > self.start:
            self.faiss.add(whole.reconstruct_n(self.start, stop - self.start))

    def search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, max(self.faiss.ntotal, 1))
        scores, ids = self.faiss.search(vecs, k)
        return scores, np.where(ids >= 0, ids + self.start, -1)


class BM25Replica:
    """Actor: a ``BM25Retriever`` over the whole index (collection statistics stay global)."""

    def __init__(self, index_dir: str, config: Any) -> None:
        from genret.indexing import Index

        from ._bm25 import BM25Retriever

        self.index = Index(Path(index_dir))
        self.retriever = BM25Retriever(self.index, config)

    def batch_search(self, queries: list[str], k: int):
        return self.retriever.batch_search(queries, k)


def spawn(cls: type, replicas: int, args: Sequence[Any], num_cpus: float | None = None) -> list[Any]:
    """``replicas`` actors of ``cls`` (a plain class made a Ray actor here), restarted and retried on failure."""
    import ray

    options = dict(ACTOR_OPTIONS)
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    actor = ray.remote(**options)(cls)
    return [actor.remote(*args) for _ in range(replicas)]


class ReplicaSet:
    """The replicas of one shard; calls go to them in turn (a thread-safe round robin)."""

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles
        self._next = itertools.cycle(range(len(handles)))
        self._lock = threading.Lock()

    def pick(self) -> Any:
        with self._lock:
            return self.handles[next(self._next)]

    def kill(self) -> None:
        import ray

        for h in self.handles:
            ray.kill(h)
        self.handles = []


class RemoteFM(FMQueries):
    """The FM-index query API over FM shard actors, with global document ids: what ``ShardedFMIndex`` does in
    one process, scattered.  Counts are summed over the shards (so a key's count, and so its SEAL weight, is the
    single index's) and kept (the same keys recur), next-token sets merged with counts added, located documents
    shifted by their shard's offset; a ``limit`` is filled from shard 0 onwards, as ``ShardedFMIndex`` does.
    N-gram ranges and counts take one call per shard (``range_of``, ``count``, ``count_many``)."""

    def __init__(self, shards: list[ReplicaSet]) -> None:
        import ray

        self._ray = ray
        self.shards = shards
        infos = ray.get([s.pick().info.remote() for s in shards])
        vocab = {v for v, _, _ in infos}
        if len(vocab) != 1:
            raise ValueError(f"FM shards have different vocabulary sizes {sorted(vocab)}")
        self.vocab_size = vocab.pop()
        self.doc_offsets = np.concatenate([[0], np.cumsum([d for _, d, _ in infos])]).astype(np.int64)
        self.n_docs = int(self.doc_offsets[-1])
        self.n_tokens = sum(t for _, _, t in infos)
        self._root = tuple(ray.get([s.pick().root.remote() for s in shards]))
        self._root_next = None
        self._counts: dict[tuple[int, ...], int] = {}  # n-gram -> corpus count (bounded: COUNT_CACHE)
        self._counts_lock = threading.Lock()

    def _each(self, method: str, args: Sequence[tuple]) -> list[Any]:
        """``method(*args[i])`` on a replica of every shard ``i``, in parallel."""
        return self._ray.get([getattr(s.pick(), method).remote(*a) for s, a in zip(self.shards, args, strict=True)])

    def _same(self, method: str, *args) -> list[Any]:
        return self._each(method, [args] * len(self.shards))

    # -- the primitives -------------------------------------------------------------------------------------
    def root(self):
        return self._root

    def extend(self, rng, token: int):
        return tuple(self._each("extend", [(r, int(token)) for r in rng]))

    def range_of(self, ngram: Sequence[int]):
        return tuple(self._same("range_of", [int(t) for t in ngram]))

    def count(self, ngram: Sequence[int]) -> int:
        return int(self.count_many([ngram])[0])

    def count_many(self, ngrams) -> np.ndarray:
        """Counts summed over the shards, one call per shard for the n-grams not counted before (the index does not
        change under a retriever: a new version is a new snapshot, a new ``RemoteFM``)."""
        grams = [tuple(int(t) for t in g) for g in ngrams]
        todo = list(dict.fromkeys(g for g in grams if g not in self._counts))
        if todo:
            sums = np.sum(np.array(self._same("counts", [list(g) for g in todo]), dtype=np.int64), axis=0)
            with self._counts_lock:
                if len(self._counts) + len(todo) > COUNT_CACHE:
                    self._counts.clear()
                self._counts.update(zip(todo, (int(c) for c in sums)))
            fresh = dict(zip(todo, (int(c) for c in sums)))
        else:
            fresh = {}
        return np.array([fresh[g] if g in fresh else self._counts[g] for g in grams], dtype=np.int64)

    def count_range(self, rng) -> int:
        return sum(self._each("count_range", [(r,) for r in rng]))

    def next_tokens_of_range(self, rng):
        if all(r[2] == 0 for r in rng):  # the root: every token's corpus frequency, merged once
            if self._root_next is None:
                self._root_next = merge_next_tokens(self._each("next_tokens_of_range", [(r,) for r in rng]))
            return self._root_next[0].copy(), self._root_next[1].copy()
        return merge_next_tokens(self._each("next_tokens_of_range", [(r,) for r in rng]))

    def doc_length(self, doc: int) -> int:
        if not 0 <= doc < self.n_docs:
            raise IndexError(f"document {doc} not in [0, {self.n_docs})")
        i = int(np.searchsorted(self.doc_offsets, doc, side="right")) - 1
        return self._ray.get(self.shards[i].pick().doc_length.remote(doc - int(self.doc_offsets[i])))

    def locate_ranges(self, rngs, limit=None):
        return self._limited(rngs, limit, "locate_ranges",
                             lambda part, off: [(d + off, o) for d, o in part], lambda a, b: a + b, list)

    def doc_counts_ranges(self, rngs, limit=None):
        return self._limited(rngs, limit, "doc_counts_ranges",
                             lambda part, off: {d + off: c for d, c in part.items()}, lambda a, b: {**a, **b}, dict)

    def _limited(self, rngs, limit, method: str, shift, merge, empty) -> list[Any]:
        """Every shard asked at once with the whole limit; where a shard's part would overfill a range's limit
        (``ShardedFMIndex`` asks shards in order, each for what is left), that shard is asked again for the rest."""
        rngs = list(rngs)
        limits = [limit] * len(rngs) if limit is None or isinstance(limit, int) else list(limit)
        parts = self._same_ranges(method, rngs, limits)
        results, found = [empty() for _ in rngs], [0] * len(rngs)
        for i in range(len(self.shards)):
            offset = int(self.doc_offsets[i])
            for j, part in enumerate(parts[i]):
                left = None if limits[j] is None else max(limits[j] - found[j], 0)
                size = _size(part)
                if left is not None and size > left:
                    part = self._ray.get(getattr(self.shards[i].pick(), method).remote([rngs[j][i]], [left]))[0]
                    size = _size(part)
                found[j] += size
                results[j] = merge(results[j], shift(part, offset))
        return results

    def _same_ranges(self, method: str, rngs: list, limits: list) -> list[list[Any]]:
        return self._each(method, [([r[i] for r in rngs], limits) for i in range(len(self.shards))])


def _size(part: Any) -> int:
    return len(part) if isinstance(part, list) else sum(part.values())


