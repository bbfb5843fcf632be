"""Sources of in-context demonstrations: ``DemoSource`` and its registry (udr, bm25, random).

Every source searches one task's pool in a demos directory (``_demo_pool``): demonstrations come back only
from the asked task's pool, best first (the RAG prompt wants the most similar *last*: reverse them).

* ``udr``: dense search with the pool's encoder (a trained UDR bi-encoder or the default MiniLM), the task's
  instruction prefixed to the query (the pool side is indexed without it).
* ``bm25``: Lucene BM25 over the pool inputs (a query without any indexed term gets no demonstrations).
* ``random``: a uniform sample, the same for the same query text, task and seed.
"""

from __future__ import annotations

import hashlib
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from genret.core import ConfigError, IndexFormatError, NotFoundError, model_load_lock

from .._contract import Demo
from ._pool import DemoPool, list_tasks


class DemoSource(ABC):
    """Contract: ``batch_search`` returns, per query, at most ``k`` demonstrations of ``task``'s pool, best
    first, none whose id is in that query's ``exclude`` collection (e.g. the query's own id in training).
    ``search`` equals ``batch_search`` on one query.  ``k`` ≥ 1; an unknown task raises ``NotFoundError``
    naming the known ones.  Safe to call from several threads."""

    name: str = "demos"

    def __init__(self, demos_dir: str | Path) -> None:
        self.demos_dir = Path(demos_dir)
        self.tasks = list_tasks(self.demos_dir)
        if not self.tasks:
            raise IndexFormatError(f"{self.demos_dir} holds no demonstration pool; build one with "
                                   "`genret index-demos POOL.jsonl --task NAME --out DIR`")
        self._pools: dict[str, DemoPool] = {}
        self._lock = threading.Lock()

    def pool(self, task: str) -> DemoPool:
        """The opened pool of ``task`` (opened and verified on first use)."""
        with self._lock:
            if task not in self._pools:
                if task not in self.tasks:
                    raise NotFoundError(f"no demonstration pool for task {task!r} in {self.demos_dir}; "
                                        f"known tasks: {self.tasks}")
                self._pools[task] = self._open(DemoPool(self.demos_dir, task))
            return self._pools[task]

    def _open(self, pool: DemoPool) -> DemoPool:
        """Hook: prepare a freshly opened pool (load searchers)."""
        return pool

    @abstractmethod
    def _ranked(self, pool: DemoPool, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """Per query up to ``k`` ``(row, score)`` pairs of ``pool``, best first."""

    def batch_search(self, queries: Sequence[str], k: int = 4, *, task: str,
                     exclude: Sequence[Collection[str]] | None = None) -> list[list[Demo]]:
        if k < 1:
            raise ValueError("k must be at least 1")
        queries = [str(q) for q in queries]
        if exclude is None:
            exclude = [()] * len(queries)
        if len(exclude) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(exclude)} exclude collections")
        if not queries:
            return []
        pool = self.pool(task)
        excluded = [set(map(str, e)) for e in exclude]
        want = min(len(pool), k + max(len(e) for e in excluded))
        out = []
        for ranked, ex in zip(self._ranked(pool, queries, want), excluded):
            demos = [pool.demo(row, score) for row, score in ranked if pool.ids[row] not in ex]
            out.append(demos[:k])
        return out

    def search(self, query: str, k: int = 4, *, task: str, exclude: Collection[str] = ()) -> list[Demo]:
        return self.batch_search([query], k, task=task, exclude=[exclude])[0]

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def __enter__(self) -> DemoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UDRSource(DemoSource):
    """Dense demonstration retrieval (UDR): instruction + query → the pool's encoder → FAISS."""

    name = "udr"

    def __init__(self, demos_dir: str | Path, *, device: str = "auto") -> None:
        super().__init__(demos_dir)
        self.device = device
        self._encoders: dict[str, object] = {}  # one encoder object per model, shared by the tasks using it
        self._retrievers: dict[str, object] = {}

    def _open(self, pool: DemoPool) -> DemoPool:
        from genret.indexing import SentenceTransformerEncoder

        from .._dense import DenseRetriever, DenseSearchConfig

        spec = pool.encoder_spec
        if spec not in self._encoders:
            with model_load_lock():  # one model load at a time in the process (genret.core)
                self._encoders[spec] = SentenceTransformerEncoder(spec, self.device)
        try:
            self._retrievers[pool.task] = DenseRetriever(pool.index, DenseSearchConfig(device=self.device),
                                                         encoder=self._encoders[spec])
        except ValueError as exc:  # encoder and vectors disagree in dimension
            pool.close()
            raise IndexFormatError(f"{pool.path}: {exc}") from None
        return pool

    def _ranked(self, pool, queries, k):
        hits = self._retrievers[pool.task].batch_search([pool.instruction + q for q in queries], k)
        return [[(h.unit_id, h.score) for h in row] for row in hits]


class BM25DemoSource(DemoSource):
    """BM25 over the pool inputs (no instruction)."""

    name = "bm25"

    def __init__(self, demos_dir: str | Path) -> None:
        super().__init__(demos_dir)
        self._retrievers: dict[str, object] = {}

    def _open(self, pool: DemoPool) -> DemoPool:
        from .._bm25 import BM25Retriever

        self._retrievers[pool.task] = BM25Retriever(pool.index)
        return pool

    def _ranked(self, pool, queries, k):
        hits = self._retrievers[pool.task].batch_search(queries, k)
        return [[(h.unit_id, h.score) for h in row] for row in hits]


class RandomDemoSource(DemoSource):
    """A uniform sample of the pool, determined by (seed, task, query text); every score is 0."""

    name = "random"

    def __init__(self, demos_dir: str | Path, *, seed: int = 0) -> None:
        super().__init__(demos_dir)
        self.seed = seed

    def _ranked(self, pool, queries, k):
        out = []
        for q in queries:
            key = hashlib.sha256(f"{self.seed}\0{pool.task}\0{q}".encode()).digest()
            rows = random.Random(key).sample(range(len(pool)), min(k, len(pool)))
            out.append([(r, 0.0) for r in rows])
        return out


# kind -> factory(demos_dir, device, seed)
DEMO_SOURCES: dict[str, Callable[[Path, str, int], DemoSource]] = {
    "udr": lambda d, device, seed: UDRSource(d, device=device),
    "bm25": lambda d, device, seed: BM25DemoSource(d),
    "random": lambda d, device, seed: RandomDemoSource(d, seed=seed),
}


def load_demo_source(demos_dir: str | Path, kind: str = "udr", *, device: str = "auto", seed: int = 0) -> DemoSource:
    """The demonstration source ``kind`` (``udr``, ``bm25``, ``random``) over the pools in ``demos_dir``."""
    if kind not in DEMO_SOURCES:
        raise ConfigError(f"unknown demonstration source {kind!r}; known: {sorted(DEMO_SOURCES)}")
    return DEMO_SOURCES[kind](Path(demos_dir), device, seed)
