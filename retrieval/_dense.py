"""Dense retrieval: encode the query, search the FAISS index of the unit embeddings."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genret.core import model_load_lock
from genret.indexing import DenseParams, Encoder, Index, dense_component, encoder_model, query_encoder

from ._contract import Hit, Provenance, Retriever

GPU_MAX_K = 2048


class DenseSearchConfig(BaseModel):
    """Query-time settings of the dense retriever (the model comes from the index manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str = "auto"
    dtype: str = Field("auto", description="what the query encoder computes in (any dtype answers any index: the "
                       "vectors are float32)")
    batch_size: int | None = Field(None, ge=1, description="queries an encoder batch (default: the device's, "
                                   "16 on a CPU)")
    adapted: bool = Field(True, description="search with the encoder fine-tuned on a task (`genret train dense`) "
                          "where the index has one; false: the encoder it was built with (--untrained)")
    ef_search: int | None = Field(None, ge=1, description="HNSW candidate list size (default: the index's)")
    nprobe: int | None = Field(None, ge=1, description="IVF-PQ lists visited a query (default: the index's)")


def component_encoder(index: Index, component: str, device: str = "auto", dtype: str = "auto") -> Encoder:
    """The query encoder of ``index``'s dense component ``component`` (the model that embedded its units) — without
    sentence-transformers where the model allows (its import was most of the start-up); one model load at a time in
    the process, its imports included."""
    with model_load_lock():
        return query_encoder(encoder_model(index.path, index.component(component)), device, dtype)


class DenseRetriever(Retriever):
    """FAISS search over the index's ``dense`` component with the encoder that built it — or over its
    ``dense-adapted`` component, whose encoder was fine-tuned on a task, where it has one (``config.adapted``).

    The FAISS index (flat, HNSW or IVF-PQ: whatever the manifest records) gets its query-time knobs from
    the config or else the manifest (``search_params`` says which were set), and goes to the GPU when the
    resolved device is CUDA and faiss has GPU support (``genret.indexing._dense.place_index``; HNSW stays on
    the CPU).  Approximate indexes may return fewer than ``k`` hits (IVF lists visited hold fewer).
    """

    name = "dense"

    def __init__(self, index: Index, config: DenseSearchConfig | None = None,
                 encoder: Encoder | None = None) -> None:
        from genret.core import resolve_device
        from genret.indexing import configure_search, load_faiss, place_index

        config = config or DenseSearchConfig()
        self.component = dense_component(index, config.adapted)
        comp = index.component(self.component)
        self.index = index
        self._config = config
        self._encoder = encoder or component_encoder(index, self.component, config.device, config.dtype)
        dim = comp.typed_params(DenseParams).dim
        if self._encoder.dim != dim:
            raise ValueError(f"encoder dim {self._encoder.dim} != index dim {dim}")
        self._cpu_faiss = load_faiss(index.path, comp)
        self.search_params = configure_search(self._cpu_faiss, comp, ef_search=config.ef_search,
                                              nprobe=config.nprobe)
        self._faiss = place_index(self._cpu_faiss, resolve_device(config.device))
        self._lock = threading.Lock()

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        self.check_search(k, granularity)
        if not queries:
            return []
        with self._lock:  # the encoder and FAISS are used by one thread at a time
            vecs = self._encoder.encode(list(queries), batch_size=self._config.batch_size)
            # faiss GPU indexes take k ≤ 2048: larger k is served by the CPU copy
            faiss_index = self._faiss if k <= GPU_MAX_K else self._cpu_faiss
            scores, ids = faiss_index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
        return [self._hits(s, i) for s, i in zip(scores, ids)]

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        keep = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
        units = self.index.store.get([i for _, i in keep])
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text)
                for r, ((s, _), u) in enumerate(zip(keep, units), start=1)]
