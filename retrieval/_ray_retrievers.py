"""Retrievers whose index lives in Ray actors (``_ray_shards``), merged into the single index's answers.

``load_ray_retriever(index, name, config)`` is ``load_retriever`` with the heavy parts scattered over a Ray
cluster; the caller keeps the index directory open (manifest, unit store: hits are read from it) and the models
that run once per query (the dense encoder, the generative LM):

- ``dense``: the query is encoded here, searched on every ``DenseShard`` and the per-shard top-k merged (best
  score first, ties by unit id): for a flat index, exactly the single index's top-k;
- ``generative``: the ``GenerativeRetriever`` itself, over ``RemoteFM``: every corpus count it takes (keys, the
  unigram table, constrained decoding's next tokens) is summed over the shards before SEAL's weights are computed,
  so scores equal the single index's;
- ``bm25``: one replicated Lucene index (``BM25Replica``): BM25's idf and average length are collection statistics;
- ``hybrid``: the fusion of the above, as ``load_hybrid`` does it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from genret.core import NotFoundError, model_load_lock
from genret.indexing import DenseParams, Index, dense_component, encoder_model, query_encoder

from ._contract import Hit, Provenance, Retriever
from ._ray_shards import BM25Replica, DenseShard, FMShard, RemoteFM, ReplicaSet, spawn
from ._registry import REGISTRY, RetrievalConfig, base_retrievers, load_hybrid, load_retriever
from .generative import GenerativeRetriever


def shard_spans(index: Index, shards: int | None = None) -> list[tuple[int, int]]:
    """The unit ranges served apart: ``shards`` equal ones when given, else the FM-index's shards (else one)."""
    n = len(index.store)
    if shards is None and index.has("fm"):
        sizes = [int(s["n_docs"]) for s in index.component("fm").params["index"]["shards"]]
        cuts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        return list(zip(cuts[:-1], cuts[1:]))
    shards = shards or 1
    cuts = [n * k // shards for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class RayDenseRetriever(Retriever):
    """Dense retrieval over ``DenseShard`` actors: encode here, search everywhere, merge the top-k exactly."""

    name = "dense"

    def __init__(self, index: Index, config: RetrievalConfig, spans: list[tuple[int, int]], replicas: int = 1,
                 num_cpus: float | None = None) -> None:
        comp = index.component(dense_component(index, config.dense.adapted))  # as DenseRetriever
        params = comp.typed_params(DenseParams)
        self.index, self._config = index, config.dense
        with model_load_lock():  # as DenseRetriever
            self._encoder = query_encoder(encoder_model(index.path, comp), config.dense.device, config.dense.dtype)
        if self._encoder.dim != params.dim:
            raise ValueError(f"encoder dim {self._encoder.dim} != index dim {params.dim}")
        cut = params.index_type == "flat" and len(spans) > 1
        self.spans = spans if cut else [(0, params.count)]
        self.shards = [ReplicaSet(spawn(DenseShard, replicas, (str(index.path), comp, span if cut else None,
                                                               config.dense.ef_search, config.dense.nprobe),
                                        num_cpus)) for span in self.spans]
        self._lock = threading.Lock()

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        import ray

        self.check_search(k, granularity)
        if not queries:
            return []
        with self._lock:  # the encoder is used by one thread at a time
            vecs = np.ascontiguousarray(self._encoder.encode(list(queries), batch_size=self._config.batch_size),
                                        dtype=np.float32)
        parts = ray.get([s.pick().search.remote(vecs, k) for s in self.shards])
        return [self._hits(merge_top_k([(p[0][q], p[1][q]) for p in parts], k)) for q in range(len(queries))]

    def _hits(self, scored: list[tuple[float, int]]) -> list[Hit]:
        units = self.index.store.get([i for _, i in scored])
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text) for r, ((s, _), u) in enumerate(zip(scored, units), 1)]

    def close(self) -> None:
        for s in self.shards:
            s.kill()


def merge_top_k(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[tuple[float, int]]:
    """The best ``k`` ``(score, id)`` over per-shard results (ids < 0 are FAISS's padding): score descending,
    ties by id."""
    pairs = [(float(s), int(i)) for scores, ids in parts for s, i in zip(scores, ids) if i >= 0]
    pairs.sort(key=lambda p: (-p[0], p[1]))
    return pairs[:k]


class RayBM25Retriever(Retriever):
    """BM25 over ``BM25Replica`` actors (one index, replicated): each call goes to one replica."""

    name = "bm25"

    def __init__(self, index: Index, config: RetrievalConfig, replicas: int = 1,
                 num_cpus: float | None = None) -> None:
        self.replicas = ReplicaSet(spawn(BM25Replica, replicas, (str(index.path), config.bm25), num_cpus))

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        import ray

        self.check_search(k, granularity)
        if not queries:
            return []
        return ray.get(self.replicas.pick().batch_search.remote(list(queries), k))

    def close(self) -> None:
        self.replicas.kill()


class RayGenerativeRetriever(GenerativeRetriever):
    """The generative retriever over ``RemoteFM`` (FM shard actors); everything else runs here."""

    def __init__(self, index: Index, config: RetrievalConfig, replicas: int = 1,
                 num_cpus: float | None = None) -> None:
        comp = index.component("fm")
        n = len(comp.params["index"]["shards"])
        self.fm_shards = [ReplicaSet(spawn(FMShard, replicas, (str(index.path), comp, i), num_cpus))
                          for i in range(n)]
        try:
            super().__init__(index, config.generative, fm=RemoteFM(self.fm_shards))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in self.fm_shards:
            s.kill()


def load_ray_retriever(index: Index, name: str | None = None, config: RetrievalConfig | None = None, *,
                       shards: int | None = None, replicas: int = 1, num_cpus: float | None = None) -> Retriever:
    """Retriever ``name`` over ``index`` with its index parts in Ray actors (a connected Ray session is needed:
    ``genret.indexing.ray_session``): ``replicas`` actors per shard (``num_cpus`` each; None: Ray's default),
    the FM-index's shards (``shards``: dense only, equal unit ranges instead).  Same results as
    ``load_retriever`` (see the module doc); ``close()`` ends the actors."""
    config = config or RetrievalConfig()
    names = base_retrievers(index)
    name = name or (names[0] if names else None)
    if name == "dense" and "dense" in names:
        return RayDenseRetriever(index, config, shard_spans(index, shards), replicas, num_cpus)
    if name == "bm25" and "bm25" in names:
        return RayBM25Retriever(index, config, replicas, num_cpus)
    if name == "generative" and "generative" in names:
        return RayGenerativeRetriever(index, config, replicas, num_cpus)
    if name == "memory" and "memory" in names:  # a few MB of training questions: searched in this process
        return load_retriever(index, name, config)
    if name == "hybrid":
        return load_hybrid(index, config, lambda member: load_ray_retriever(
            index, member, config, shards=shards, replicas=replicas, num_cpus=num_cpus))
    raise NotFoundError(f"retriever {name!r} cannot be served on Ray over {index.path} (it has {names}; "
                        f"known: {sorted(REGISTRY)})")
