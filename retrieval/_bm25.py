"""BM25 retrieval: Anserini's ``SimpleSearcher`` (what pyserini's ``LuceneSearcher`` wraps) over the index's
``bm25`` component.

Queries are analysed with Anserini's default English analyzer (the one the index was built with) and run as
bag-of-words BM25 queries, so results equal ``python -m pyserini.search.lucene --bm25`` with the same k1/b:
best first, ties by ascending document id string.  A query with no indexed term (empty, stop words only,
unseen words) has no hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genret.indexing import BM25Params, Index, IndexFormatError, InputError

from ._contract import Hit, Provenance, Retriever


class BM25SearchConfig(BaseModel):
    """Query-time settings of the BM25 retriever; k1/b default to the values in the index manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    k1: float | None = Field(None, ge=0, description="BM25 k1 (default: the index's)")
    b: float | None = Field(None, ge=0, le=1, description="BM25 b (default: the index's)")
    threads: int = Field(2, ge=1, description="Java search threads for batch_search")


class BM25Retriever(Retriever):
    """Lucene BM25 search over the index's ``bm25`` component (kind ``bm25-lucene``).

    Thread-safe: Anserini's searcher is safe for concurrent searches (its own ``batch_search`` runs
    ``search`` from a thread pool), and its settings are fixed here at construction.
    """

    name = "bm25"

    def __init__(self, index: Index, config: BM25SearchConfig | None = None) -> None:
        from genret.indexing import BM25_ANALYZER as ANALYZER
        from genret.indexing import BM25_KIND, import_pyserini

        config = config or BM25SearchConfig()
        comp = index.component("bm25")
        if comp.kind != BM25_KIND:
            raise IndexFormatError(f"{index.path}: component 'bm25' is of kind {comp.kind!r}, not {BM25_KIND!r}")
        params = comp.typed_params(BM25Params)
        if params.analyzer != ANALYZER:
            raise IndexFormatError(f"{index.path}: BM25 index analysed with {params.analyzer!r}; "
                                   f"this genret searches with {ANALYZER!r}: rebuild the index")
        self.index = index
        self.k1 = float(params.k1 if config.k1 is None else config.k1)
        self.b = float(params.b if config.b is None else config.b)
        self.threads = config.threads
        self._ps = import_pyserini()
        lucene_dir = index.path / params.directory
        try:
            self._searcher = self._ps.SimpleSearcher(str(lucene_dir))
        except self._ps.JavaException as exc:
            raise IndexFormatError(f"{lucene_dir}: Lucene cannot open the BM25 index: {exc}") from None
        self._searcher.set_bm25(self.k1, self.b)
        docs = int(self._searcher.get_total_num_docs())
        if docs != params.count:
            raise IndexFormatError(f"{lucene_dir} holds {docs} documents, the manifest says {params.count}")

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        """Hits for each query (``task`` is ignored: BM25 has no task prompts)."""
        self.check_search(k, granularity)
        if not queries:
            return []
        if len(queries) == 1:
            return [self._search_one(str(queries[0]), k)]
        from genret.indexing import java_list

        qids = [str(i) for i in range(len(queries))]
        try:
            results = self._searcher.batch_search(java_list([str(q) for q in queries]), java_list(qids), int(k),
                                                  int(self.threads))
        except self._ps.JavaException:
            # Anserini's batch_search hides which query failed and why: run them one by one to say so.
            return [self._search_one(str(q), k) for q in queries]
        by_qid = {e.getKey(): e.getValue() for e in results.entrySet().toArray()}
        return [self._hits(by_qid.get(qid) or []) for qid in qids]

    def _search_one(self, query: str, k: int) -> list[Hit]:
        from genret.indexing import MAX_QUERY_TERMS

        try:
            return self._hits(self._searcher.search(query, int(k)))
        except self._ps.JavaException as exc:
            if "TooManyClauses" in str(exc):
                raise InputError(f"query has more than {MAX_QUERY_TERMS} distinct terms: {query[:80]!r}…") from None
            raise

    def _hits(self, scored: Sequence[Any]) -> list[Hit]:
        pairs = [(int(d.docid), float(d.score)) for d in scored]
        units = self.index.store.get([i for i, _ in pairs])
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text) for r, ((_, s), u) in enumerate(zip(pairs, units), 1)]

    def close(self) -> None:
        """Release the Lucene searcher (the retriever cannot be used afterwards)."""
        self._searcher.close()
