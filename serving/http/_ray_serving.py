"""``genret serve --ray``: the same HTTP API, its retrievers' index parts in Ray actors (the ``genret[ray]`` extra).

The FastAPI app, its limits (admission, micro-batching, timeouts, connection guards) and the ``SearchService`` stay
those of ``genret serve``, in this process — the ingress; only the retriever loader changes
(``genret.retrieval.load_ray_retriever``): each index shard is a set of ``replicas`` Ray actors (FM-index shard,
FAISS slice), BM25 one replicated Lucene index, and the ingress scatters a query to them and merges exactly.
Ray Serve is not used: its proxy would replace the server's own limits and error mapping, and ``ray[serve]`` pulls
in ~35 more packages (its pins do not clash with the server's FastAPI/Starlette today: ``pip install --dry-run``).
"""

from __future__ import annotations

from contextlib import ExitStack

from pydantic import BaseModel, ConfigDict, Field

from genret.indexing import Index
from genret.retrieval import RetrievalConfig, Retriever


class RayServing(BaseModel):
    """Where and how the retrievers' index parts run on Ray (``settings.ray``; ``GENRET_RAY__…``)."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="the Ray cluster ('auto', 'ray://host:10001'); none: a local "
                                "one started with the server (and stopped with it)")
    replicas: int = Field(1, ge=1, description="actors per shard (and BM25 replicas), for throughput")
    shards: int | None = Field(None, ge=1, description="dense shards (equal unit ranges); default the FM-index's")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local cluster (no address; default all)")
    actor_cpus: float | None = Field(None, ge=0, description="CPUs reserved by each actor (default Ray's: 1 to "
                                     "place it, 0 while it runs)")


class RayBackend:
    """The Ray session of a ``SearchService`` and its retriever loader."""

    def __init__(self, config: RayServing) -> None:
        from genret.indexing import ray_session

        self.config = config
        self._stack = ExitStack()
        self._stack.enter_context(ray_session(config.address, num_cpus=config.num_cpus))

    def load(self, index: Index, name: str, retrieval: RetrievalConfig) -> Retriever:
        from genret.retrieval import load_ray_retriever

        c = self.config
        return load_ray_retriever(index, name, retrieval, shards=c.shards, replicas=c.replicas,
                                  num_cpus=c.actor_cpus)

    def close(self) -> None:
        self._stack.close()
