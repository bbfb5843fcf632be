"""Reading the BM25 component: the search of Anserini's ``SimpleSearcher`` (what pyserini's ``LuceneSearcher``
wraps), run on Lucene's ``IndexSearcher`` with Anserini's own classes, over the Lucene index, checked against the
manifest (kind, analyzer, document count) when opened.

``SimpleSearcher.search(q, k)`` is, for an index written by Lucene 9: Anserini's default English analyzer (the one
the index was built with), its ``BagOfWordsQueryGenerator`` (one SHOULD term clause per distinct analysed term,
boosted by its count), ``IndexSearcher.search(query, k, Sort(score, "id" string), doDocScores)`` with
``BM25Similarity(k1, b)``, then ``ScoreTiesAdjusterReranker``: scores rounded to 4 decimals and each run of equal
rounded scores lowered by 1e-6, 2e-6, … so that it keeps its order (ascending document id string).  ``LuceneIndex``
runs exactly these classes in that order, without loading ``SimpleSearcher`` (0.7 s of class initialisation: see
``indexing._java``), so scores, order and ties are pyserini's (a test compares them).  For an index an older Lucene
wrote, ``SimpleSearcher`` sorts by score alone and keeps Lucene's scores; so does this.

Threads: pyjnius binds an instance method to its object through state shared by every object of the class, so the
Java calls of two ``LuceneIndex`` objects must not overlap (one would run on the other's searcher), while any number
of threads may search one ``LuceneIndex`` at once.  ``_GATE`` lets in the threads of one index at a time; the query
generator and the tie rule are one object each for the process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..core import ConfigError, IndexFormatError, InputError
from ._bm25 import ANALYZER, BM25_KIND
from ._java import MAX_QUERY_TERMS, import_lucene, java_error_line
from ._manifest import Component
from ._params import BM25Params

Scored = list[tuple[int, float]]  # (unit id, BM25 score), best first

FIELD = "contents"  # Anserini's Constants.CONTENTS
ID_FIELD = "id"  # Anserini's Constants.ID: a stored string with sorted doc values


class _Gate:
    """Admits the threads of one owner at a time, any number of them.  A thread of another owner queues; while one
    queues, new threads of the current owner queue behind it, and when the owner's last thread leaves, the owner at
    the head of the queue comes in with all its queued threads (first come, first served: none starves)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: object = None
        self._inside = 0
        self._queue: list[list] = []  # [owner, admitted], oldest first

    @contextmanager
    def enter(self, owner: object) -> Iterator[None]:
        with self._cond:
            if not self._queue and (not self._inside or self._owner is owner):
                self._owner = owner
                self._inside += 1
            else:
                ticket = [owner, False]
                self._queue.append(ticket)
                try:
                    while not ticket[1]:
                        self._cond.wait()
                except BaseException:  # interrupted while queued: give the place back
                    if ticket[1]:
                        self._leave()
                    else:
                        self._queue.remove(ticket)
                    raise
        try:
            yield
        finally:
            with self._cond:
                self._leave()

    def _leave(self) -> None:  # holding self._cond
        self._inside -= 1
        if self._inside:
            return
        self._owner = None
        if self._queue:
            self._owner = self._queue[0][0]
            for ticket in self._queue:
                if ticket[0] is self._owner:
                    ticket[1] = True
                    self._inside += 1
            self._queue = [t for t in self._queue if not t[1]]
            self._cond.notify_all()


_GATE = _Gate()
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` search threads (pyjnius releases the GIL while Java runs; a thread that
    called Java stays attached to the JVM, so threads are kept rather than started per batch)."""
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="genret-bm25")
        return pool


class LuceneIndex:
    """An opened BM25 component with fixed k1/b.  Thread-safe: Lucene's ``IndexSearcher``, the analyzer and the
    sort are safe for concurrent searches (see the module docstring for searches of several indexes)."""

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
        if not (math.isfinite(self.k1) and self.k1 >= 0):  # what Lucene's BM25Similarity takes
            raise ConfigError(f"BM25 k1 must be a finite number ≥ 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"BM25 b must be between 0 and 1, got {self.b}")
        self._lc = lc = import_lucene()
        lucene_dir = Path(index_dir) / params.directory
        if not lucene_dir.is_dir():  # as SimpleSearcher, which refuses a path that is not a readable directory
            raise IndexFormatError(f"{lucene_dir}: Lucene cannot open the BM25 index: not a directory")
        with _GATE.enter(self):
            try:
                self._reader = lc.DirectoryReader.open(lc.FSDirectory.open(lc.Paths.get(str(lucene_dir))))
            except lc.JavaException as exc:
                raise IndexFormatError(f"{lucene_dir}: Lucene cannot open the BM25 index ({java_error_line(exc)}): "
                                       "rebuild the index") from None
            # as SimpleSearcher: an index written by Lucene 8 is searched without the sort by id and the tie rule
            self._lucene8 = "lucene.version=9" not in str(self._reader.toString())
            docs = int(self._reader.maxDoc())  # SimpleSearcher.get_total_num_docs
            if docs != params.count:
                self._reader.close()
                raise IndexFormatError(f"{lucene_dir} holds {docs} documents, the manifest says {params.count}")
            self._searcher = lc.IndexSearcher(self._reader, signature="(Lorg/apache/lucene/index/IndexReader;)V")
            self._searcher.setSimilarity(lc.BM25Similarity(self.k1, self.b))
        self._sort = lc.Sort(lc.SortField.FIELD_SCORE, lc.SortField(ID_FIELD, lc.SortFieldType.STRING_VAL))
        self._analyzer = lc.DefaultEnglishAnalyzer.newDefaultInstance()  # = IndexCollection.DEFAULT_ANALYZER

    def search(self, query: str, k: int) -> Scored:
        """The ``k`` best units for one query (a query with more distinct terms than Lucene allows: ``InputError``)."""
        lc = self._lc
        try:
            with _GATE.enter(self):
                q = lc.query_generator.buildQuery(FIELD, self._analyzer, query)
                if self._lucene8:
                    hits = lc.ScoredDocs.fromTopDocs(self._searcher.search(q, int(k)), self._searcher)
                else:
                    top = self._searcher.search(q, int(k), self._sort, True)
                    hits = lc.tie_adjuster.rerank(lc.ScoredDocs.fromTopDocs(top, self._searcher), None)
        except lc.JavaException as exc:
            if "TooManyClauses" in str(exc):
                raise InputError(f"query has more than {MAX_QUERY_TERMS} distinct terms: {query[:80]!r}…") from None
            raise
        return [(int(d), float(s)) for d, s in zip(hits.docids, hits.scores)]  # fields: no binding to share

    def batch_search(self, queries: Sequence[str], k: int, threads: int) -> list[Scored]:
        """``search`` of each query, on ``threads`` threads (their Java runs in parallel); the first query that
        fails, in order, raises."""
        if len(queries) == 1 or threads <= 1:
            return [self.search(str(q), k) for q in queries]
        return list(_pool(int(threads)).map(lambda q: self.search(str(q), k), queries))

    def close(self) -> None:
        """Release the Lucene reader (no search afterwards)."""
        with _GATE.enter(self):
            try:
                self._reader.close()
            except self._lc.JavaException:  # as SimpleSearcher.close
                pass


def open_lucene(index_dir: str | Path, component: Component, *, k1: float | None = None,
                b: float | None = None) -> LuceneIndex:
    """The BM25 component of the index at ``index_dir`` (``component``: its manifest entry), opened and checked;
    ``k1``/``b`` default to the values it was built with."""
    return LuceneIndex(index_dir, component, k1=k1, b=b)
