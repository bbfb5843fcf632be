"""The query memory retriever: the gold passages of the training questions nearest to the query.

Retrieval from the training data (REINA, Wang et al. 2022; RePAQ's question memory, Lewis et al. 2021): where a
task's questions recur in paraphrase — several questions per passage, a claim and its negation citing one
abstract — the training question nearest to a new one names its passage better than the passage's own text does.
``genret adapt`` embeds the training questions with the index's dense encoder and keeps them, with their gold units,
in the index (``genret.indexing``'s ``memory-adapted``); this retriever embeds a query with the same encoder, takes
its ``neighbours`` nearest training questions by cosine and scores each of their gold units by the similarity of the
nearest question citing it, mapped to [0, 1]: ``(s − floor) / (1 − floor)``, questions at or below ``floor`` ignored.
The scores are calibrated — the same similarity means the same score for every query — so the hybrid takes them as
they are instead of normalising them per query (``hybrid.CALIBRATED_MEMBERS``): a query with no close training
question gets little or nothing from it.  Mini-KILT dev, the packaged MiniLM, nearest training question only: its
page is the gold one for 1,538 of the 1,640 squad questions with one above similarity 0.6, and for 52 of 57 scifact
claims (``bench/memory_neighbours.py``).

A hybrid member only where fitted weights give it one (``genret adapt``): it is never a default member.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genret.indexing import Encoder, Index, QueryMemory, dense_component, read_query_memory

from ._contract import Hit, Provenance, Retriever
from ._dense import component_encoder
from ._dense_train import gold_units, pairs_from_kilt


class MemorySearchConfig(BaseModel):
    """Query-time settings of the query memory retriever (the encoder is the index's dense one, on the dense
    retriever's device and dtype)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    neighbours: int = Field(20, ge=1, description="training questions whose gold units a query scores")
    floor: float = Field(0.5, ge=-1.0, lt=1.0, description="cosine similarity at or below which a training "
                         "question counts for nothing (score (s - floor) / (1 - floor))")
    adapted: bool = Field(True, description="use the index's query memory where fitted weights name it; false: "
                          "the hybrid leaves it out (--untrained)")


class MemoryRetriever(Retriever):
    """Scores the gold units of the training questions nearest to the query (see the module doc).  ``memory``: a
    ``QueryMemory`` to search instead of the index's own (``genret adapt``'s held-out fold searches one built
    without it); ``encoder``: the dense encoder it was embedded with, when the caller has it loaded (else loaded on
    ``device`` in ``dtype``).  Returns at most ``k`` hits, possibly none (no training question above ``floor``)."""

    name = "memory"

    def __init__(self, index: Index, config: MemorySearchConfig | None = None, *, memory: QueryMemory | None = None,
                 encoder: Encoder | None = None, device: str = "auto", dtype: str = "auto") -> None:
        self.index = index
        self._config = config or MemorySearchConfig()
        self.memory = memory if memory is not None else read_query_memory(index)
        encoder = encoder or component_encoder(index, self.memory.encoder, device, dtype)
        if encoder.dim != self.memory.vectors.shape[1]:
            raise ValueError(f"encoder dim {encoder.dim} != memory dim {self.memory.vectors.shape[1]}")
        self._encoder = encoder
        self._lock = threading.Lock()

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        self.check_search(k, granularity)
        if not queries:
            return []
        with self._lock:
            vecs = np.asarray(self._encoder.encode(list(queries)), dtype=np.float32)
        return [self._hits(row, k) for row in memory_scores(self.memory, vecs, self._config)]

    def _hits(self, scores: dict[int, float], k: int) -> list[Hit]:
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        units = self.index.store.get([u for u, _ in best])
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text) for r, ((_, s), u) in enumerate(zip(best, units), 1)]


def memory_scores(memory: QueryMemory, query_vectors: np.ndarray, config: MemorySearchConfig) -> list[dict[int, float]]:
    """``{unit id: score}`` per query vector (see the module doc); vectors need not be normalised."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    if not len(memory.queries):
        return [{} for _ in range(len(query_vectors))]
    sims = unit(query_vectors) @ unit(memory.vectors).T
    n = min(config.neighbours, sims.shape[1])
    out = []
    for row in sims:
        nearest = np.argpartition(-row, n - 1)[:n]
        scores: dict[int, float] = {}
        for j in nearest[np.argsort(-row[nearest], kind="stable")]:
            s = float(row[j])
            if s <= config.floor:
                break
            value = (min(s, 1.0) - config.floor) / (1.0 - config.floor)
            for u in memory.units[j]:
                scores.setdefault(u, value)  # the nearest question citing a unit sets its score
        out.append(scores)
    return out


def memory_encoder(index: Index, device: str = "auto", dtype: str = "auto") -> Encoder:
    """The encoder a query memory of ``index`` is embedded with: that of the dense component it searches with
    (``dense_component``: the adapted one where it has one)."""
    return component_encoder(index, dense_component(index), device, dtype)


def build_memory(queries: Sequence[str], units: Sequence[Sequence[int]], encoder: Encoder, component: str,
                 batch_size: int | None = None) -> QueryMemory:
    """A ``QueryMemory`` of ``queries`` (each with its gold ``units``) embedded with ``encoder``, the encoder of
    the index's dense component ``component``."""
    if len(queries) != len(units):
        raise ValueError(f"{len(queries)} queries, {len(units)} unit lists")
    dim = encoder.dim
    vectors = (np.asarray(encoder.encode(list(queries), batch_size=batch_size), dtype=np.float32) if queries
               else np.zeros((0, dim), dtype=np.float32))
    return QueryMemory(tuple(queries), tuple(tuple(int(u) for u in row) for row in units), vectors, component)


def memory_from_kilt(index: Index, records: Sequence[dict], encoder: Encoder,
                     batch_size: int | None = None) -> QueryMemory:
    """``build_memory`` over KILT records: each record's input with the units of its gold passages in ``index``
    (records without one are left out, logged), embedded with ``encoder`` (``memory_encoder(index)``'s)."""
    kept = gold_units(index, pairs_from_kilt(records), "query memory")
    return build_memory([q for q, _ in kept], [g for _, g in kept], encoder, dense_component(index), batch_size)
