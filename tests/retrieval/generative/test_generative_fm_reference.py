"""The generative retriever gives the same keys and scores over the FM-index as over a brute-force n-gram table.

``RefFM`` answers the ``FMQueries`` API by scanning the unit token lists, so this pins the retriever's results
to the n-gram statistics themselves, whatever the FM-index's internal layout (issue 17 replaced it).
"""

from collections import Counter

import numpy as np
import pytest

from genret.indexing import Index
from genret.indexing.fm import FMQueries
from genret.retrieval import GenerativeConfig, GenerativeRetriever
from genret.retrieval.generative import ScoringConfig

QUERIES = ["Who created the Python programming language?", "When did the oil embargo start?",
           "Which pigment absorbs red light?", "Who first climbed the highest mountain in the world?"]


class RefFM(FMQueries):
    """Brute force over the documents' token lists; a range is the n-gram itself."""

    def __init__(self, docs: list[list[int]], vocab_size: int) -> None:
        self.docs, self.vocab_size = docs, vocab_size
        self.n_docs, self.n_tokens = len(docs), sum(map(len, docs))

    def _occ(self, g: tuple) -> list[tuple[int, int]]:
        n = len(g)
        return [(d, i) for d, doc in enumerate(self.docs) for i in range(len(doc) - n + 1)
                if tuple(doc[i:i + n]) == g]

    def root(self):
        return ()

    def extend(self, rng, token):
        return (*rng, int(token))

    def count_range(self, rng):
        return self.n_tokens if not rng else len(self._occ(tuple(rng)))

    def next_tokens_of_range(self, rng):
        g = tuple(rng)
        c = Counter(doc[i + len(g)] for d, i in self._occ(g) for doc in [self.docs[d]] if i + len(g) < len(doc)) \
            if g else Counter(t for doc in self.docs for t in doc)
        keys = sorted(c)
        return np.array(keys, dtype=np.int64), np.array([c[k] for k in keys], dtype=np.int64)

    def locate_ranges(self, rngs, limit=None):
        out = []
        for rng in rngs:
            occ = sorted(self._occ(tuple(rng)))
            assert limit is None or not isinstance(limit, int) or len(occ) <= limit, "limit would pick rows"
            out.append(occ)
        return out

    def doc_counts_ranges(self, rngs, limit=None):
        return [dict(Counter(d for d, _ in occ)) for occ in self.locate_ranges(rngs, limit)]

    def doc_length(self, doc):
        return len(self.docs[doc])


@pytest.fixture(scope="module")
def pair(tiny_index, tiny_lm_dir):
    index = Index(tiny_index)
    cfg = GenerativeConfig(model=str(tiny_lm_dir), device="cpu", beam=4, max_len=4, title_max_len=6,
                           decode_body=True, decode_titles=True,
                           scoring=ScoringConfig(n_full=1000, max_occurrences=10_000))
    real = GenerativeRetriever(index, cfg)
    units = index.store.get(list(range(len(index.store))))
    docs = real.encoder.encode([(u.title, u.text) for u in units])
    ref = GenerativeRetriever(index, cfg, lm=real.lm, fm=RefFM(docs, real.fm.vocab_size))
    yield real, ref
    index.close()


def test_fm_index_answers_like_brute_force(pair):
    real, ref = pair
    for g in ([], [real.fm.n_docs], *[d[i:i + 3] for d in ref.fm.docs for i in range(0, len(d), 5)]):
        assert real.fm.count(g) == ref.fm.count(g)
        assert [x.tolist() for x in real.fm.next_tokens(g)] == [x.tolist() for x in ref.fm.next_tokens(g)]
        if g:
            assert real.fm.locate(g) == ref.fm.locate(g)


def test_keys_and_scores_are_those_of_the_ngram_statistics(pair):
    real, ref = pair
    for task in ("generic", None):
        assert real.decode_keys(QUERIES, task=task) == ref.decode_keys(QUERIES, task=task)
    for q in QUERIES:
        a, b = real.search(q, k=5, task="generic"), ref.search(q, k=5, task="generic")
        assert [(h.unit_id, h.score, h.matched) for h in a] == [(h.unit_id, h.score, h.matched) for h in b]
        assert a
