"""Reading the BM25 component: Anserini's ``SimpleSearcher`` (what pyserini's ``LuceneSearcher`` wraps) over the
Lucene index, checked against the manifest (kind, analyzer, document count) when opened.

Queries are analysed with Anserini's default English analyzer (the one the index was built with) and run as
bag-of-words BM25 queries: best first, ties by ascending document id string.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._bm25 import ANALYZER, BM25_KIND
from ._errors import IndexFormatError, InputError
from ._java import MAX_QUERY_TERMS, import_pyserini, java_list
from ._manifest import Component
from ._params import BM25Params

Scored = list[tuple[int, float]]  # (unit id, BM25 score), best first


class LuceneIndex:
    """An opened BM25 component with fixed k1/b.  Thread-safe: Anserini's searcher is safe for concurrent
    searches (its own ``batch_search`` runs ``search`` from a thread pool)."""

    def __init__(self, index_dir: str | Path, component: Component, *, k1: float | None = None,
                 b: float | None = None) -> None:
        if component.kind != BM25_KIND:
            raise IndexFormatError(f"{index_dir}: component 'bm25' is of kind {component.kind!r}, not {BM25_KIND!r}")
        params = component.typed_params(BM25Params)
        if params.analyzer != ANALYZER:
            raise IndexFormatError(f"{index_dir}: BM25 index analysed with {params.analyzer!r}; "
                                   f"this genret searches with {ANALYZER!r}: rebuild the index")
        self.k1 = float(params.k1 if k1 is None else k1)
        self.b = float(params.b if b is None else b)
        self._ps = import_pyserini()
        lucene_dir = Path(index_dir) / params.directory
        try:
            self._searcher = self._ps.SimpleSearcher(str(lucene_dir))
        except self._ps.JavaException as exc:
            raise IndexFormatError(f"{lucene_dir}: Lucene cannot open the BM25 index: {exc}") from None
        self._searcher.set_bm25(self.k1, self.b)
        docs = int(self._searcher.get_total_num_docs())
        if docs != params.count:
            raise IndexFormatError(f"{lucene_dir} holds {docs} documents, the manifest says {params.count}")

    def search(self, query: str, k: int) -> Scored:
        """The ``k`` best units for one query (a query with more distinct terms than Lucene allows: ``InputError``)."""
        try:
            return _scored(self._searcher.search(query, int(k)))
        except self._ps.JavaException as exc:
            if "TooManyClauses" in str(exc):
                raise InputError(f"query has more than {MAX_QUERY_TERMS} distinct terms: {query[:80]!r}…") from None
            raise

    def batch_search(self, queries: Sequence[str], k: int, threads: int) -> list[Scored]:
        """``search`` of each query, run by Anserini on ``threads`` Java threads."""
        if len(queries) == 1:
            return [self.search(str(queries[0]), k)]
        qids = [str(i) for i in range(len(queries))]
        try:
            results = self._searcher.batch_search(java_list([str(q) for q in queries]), java_list(qids), int(k),
                                                  int(threads))
        except self._ps.JavaException:
            # Anserini's batch_search hides which query failed and why: run them one by one to say so.
            return [self.search(str(q), k) for q in queries]
        by_qid = {e.getKey(): e.getValue() for e in results.entrySet().toArray()}
        return [_scored(by_qid.get(qid) or []) for qid in qids]

    def close(self) -> None:
        """Release the Lucene searcher (no search afterwards)."""
        self._searcher.close()


def _scored(hits: Sequence) -> Scored:
    return [(int(d.docid), float(d.score)) for d in hits]


def open_lucene(index_dir: str | Path, component: Component, *, k1: float | None = None,
                b: float | None = None) -> LuceneIndex:
    """The BM25 component of the index at ``index_dir`` (``component``: its manifest entry), opened and checked;
    ``k1``/``b`` default to the values it was built with."""
    return LuceneIndex(index_dir, component, k1=k1, b=b)
