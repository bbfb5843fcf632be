"""The sentence reranker: a passage scored by its best sentence under a bi-encoder — no training, no new model.

A dense encoder reads a whole paragraph into one vector, and a question written about one of its sentences (SQuAD's
are) matches that vector only as well as the sentence dominates the paragraph.  Scored by its best sentence's
cosine with the question instead, and blended into the first stage (``RerankedRetriever``'s weight, fitted by
``genret adapt`` on a held-out fold), a paragraph the first stage ranked second often comes first: on mini-KILT
squad dev this lifts the adapted hybrid's passage R-Precision by about 3 points (docs/src/results.md, "Adapted in
one step").  The encoder is the index's dense one (the adapted encoder where the index has it), so this costs only
encoding the sentences of the reranked hits: sentences are split as units are (``indexing.sentence_spans``) and
their vectors kept in a bounded cache, since the hits of a task's queries share their pages.

The passage a reranker is handed is ``title\ntext`` (``retrieval.hit_texts``); this reranker scores the text's
sentences, not the title (``reads_titles`` False): a title line would be every passage of a page's best match for
a question naming the page, and the first stage already weighs the page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from genret.core import NotFoundError, model_load_lock
from genret.indexing import (
    SENTENCE_RERANK_MODEL,
    Encoder,
    Index,
    dense_component,
    encoder_model,
    query_encoder,
    sentence_spans,
)


def split_sentences(text: str) -> list[str]:
    """The sentences of a passage's text (the passage itself when it has none)."""
    parts = [text[s:e] for s, e in sentence_spans(text)]
    return parts or [text]


class SentenceReranker:
    """A passage's score: the highest cosine between the query and one of its sentences, under ``encoder``
    (see the module doc).  Sentence vectors are cached, ``cache_size`` sentences at most."""

    reads_titles = False

    def __init__(self, encoder: Encoder, name: str, cache_size: int = 50_000) -> None:
        self.encoder, self.name, self.cache_size = encoder, name, cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        sentences = [split_sentences(p) for p in passages]
        with self._lock:
            vectors = self._vectors([s for group in sentences for s in group])
            q = self.encoder.encode([query])[0]
        return [float(max(vectors[s] @ q for s in group)) for group in sentences]

    def _vectors(self, sentences: list[str]) -> dict[str, np.ndarray]:
        new = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if new:
            for s, v in zip(new, self.encoder.encode(new)):
                self._cache[s] = v
        out = {}
        for s in sentences:
            self._cache.move_to_end(s)
            out[s] = self._cache[s]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


def sentence_reranker(model: str | None, index: Index | None, *, adapted: bool = True, device: str = "auto",
                      dtype: str = "auto") -> SentenceReranker:
    """The sentence reranker with bi-encoder ``model`` (a sentence-transformers name or path), or — None — the
    index's dense encoder (its adapted one where it has one and ``adapted``); ``NotFoundError`` when neither is
    there."""
    if model is None:
        if index is None or not index.has("dense"):
            where = f"index {index.path} has" if index is not None else "no index was given, so there is"
            raise NotFoundError(f"the sentence reranker reads with the index's dense encoder, and {where} no dense "
                                "component; name a model (`--rerank sentences:MODEL`) or build the index with "
                                "`genret index … --dense`")
        component = dense_component(index, adapted)
        model, name = encoder_model(index.path, index.component(component)), f"{SENTENCE_RERANK_MODEL}:{component}"
    else:
        name = f"{SENTENCE_RERANK_MODEL}:{model}"
    with model_load_lock():
        encoder = query_encoder(model, device, dtype)
    return SentenceReranker(encoder, name)
