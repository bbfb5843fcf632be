"""BM25 retrieval: the search of Anserini's ``SimpleSearcher`` (what pyserini's ``LuceneSearcher`` wraps) over the
index's ``bm25`` component, run by ``genret.indexing.open_lucene`` on Lucene with Anserini's own analyzer, query
generator and tie rule (without loading ``SimpleSearcher``, whose class initialisation costs ≈ 0.7 s of start-up).

Queries are analysed with Anserini's default English analyzer (the one the index was built with) and run as
bag-of-words BM25 queries, so results equal ``python -m pyserini.search.lucene --bm25`` with the same k1/b:
best first, ties by ascending document id string.  A query with no indexed term (empty, stop words only,
unseen words) has no hits.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from genret.indexing import Index

from ._contract import Hit, Provenance, Retriever


class BM25SearchConfig(BaseModel):
    """Query-time settings of the BM25 retriever; k1/b default to the values in the index manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    k1: float | None = Field(None, ge=0, description="BM25 k1 (default: the index's)")
    b: float | None = Field(None, ge=0, le=1, description="BM25 b (default: the index's)")
    threads: int = Field(2, ge=1, description="Java search threads for batch_search")


class BM25Retriever(Retriever):
    """Lucene BM25 search over the index's ``bm25`` component (kind ``bm25-lucene``; see
    ``genret.indexing.open_lucene``).  Thread-safe; its settings are fixed at construction."""

    name = "bm25"

    def __init__(self, index: Index, config: BM25SearchConfig | None = None) -> None:
        from genret.indexing import open_lucene

        config = config or BM25SearchConfig()
        self.index = index
        self.threads = config.threads
        self._lucene = open_lucene(index.path, index.component("bm25"), k1=config.k1, b=config.b)
        self.k1, self.b = self._lucene.k1, self._lucene.b

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        """Hits for each query (``task`` is ignored: BM25 has no task prompts)."""
        self.check_search(k, granularity)
        if not queries:
            return []
        return [self._hits(scored) for scored in self._lucene.batch_search(list(queries), k, self.threads)]

    def _hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        units = self.index.store.get([i for i, _ in scored])
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text) for r, ((_, s), u) in enumerate(zip(scored, units), 1)]

    def close(self) -> None:
        """Release the Lucene searcher (the retriever cannot be used afterwards)."""
        self._lucene.close()
