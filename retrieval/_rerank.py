"""A second stage over any retriever: its first ``depth`` hits re-ordered by a model that reads query and passage
together.

Three rerankers, one small contract (``Reranker.scores``: one score a passage, higher is better):

- ``CrossEncoderReranker``: a sentence-transformers ``CrossEncoder`` (any local cross-encoder a user has, e.g.
  an MS MARCO MiniLM one), scoring (query, passage) pairs;
- ``QueryLikelihoodReranker``: the zero-training option (UPR, Sachan et al. 2022): a causal LM's log P(query |
  passage) under a "write a question this passage answers" prompt — the packaged SmolLM2 by default.  Every
  passage of a query is read once (one batched prompt pass) and the query teacher-forced over each passage's KV
  cache (``generative._lm_steps.Stepper``).  The query is the same for all of a query's passages, so the sum of
  its token log-probabilities ranks them as their mean would;
- ``SentenceReranker`` (``_rerank_sentences``): a passage scored by its best sentence under the index's dense
  encoder — no training, and what ``genret adapt`` keeps where no cross-encoder trains in its budget.

``RerankedRetriever`` wraps a retriever: it asks for ``max(k, depth)`` hits, re-orders the first ``depth`` by the
reranker's scores (the hit keeps its unit, provenance, text and explanations; its score becomes the reranker's,
its rank the new one), and keeps the rest below them in their first-stage order, their scores moved below the
reranked ones so that scores stay non-increasing.  With ``weight`` below 1 a hit's new score interpolates
the two stages: ``(1 - weight) * minmax(first-stage score) + weight * minmax(reranker score)`` over the reranked
head (the way ``genret adapt`` keeps a cross-encoder trained on few queries: alone it can rank worse than the
first stage, blended it adds what the first stage misses).  ``RerankConfig.model``: None (off, or the index's
adapted reranker: ``rerank_settings``), ``adapted``, ``ql`` / ``ql:MODEL`` (query likelihood with the packaged or
another causal LM), ``sentences`` / ``sentences:MODEL`` (best sentence under the index's dense encoder or another
bi-encoder), or a cross-encoder's name or path.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from genret.core import DEFAULT_LM, model_load_lock
from genret.indexing import SENTENCE_RERANK_MODEL, Index, unit_text

from ._contract import Hit, Retriever
from ._rerank_sentences import sentence_reranker

QL_PROMPT = "Passage: {passage}\nWrite a question that this passage answers.\nQuestion:"


class RerankConfig(BaseModel):
    """The reranking stage (off unless ``model`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = Field(None, description="None: no reranking (but see ``adapted``); 'adapted': the "
                              "index's reranker fitted by `genret adapt`; 'ql' or 'ql:MODEL': query likelihood "
                              "under the packaged (or another causal) LM; 'sentences' or 'sentences:MODEL': a "
                              "passage's best sentence under the index's dense encoder (or another bi-encoder); else "
                              "a sentence-transformers CrossEncoder's name or path")
    depth: int | None = Field(None, ge=1, le=1000, description="first-stage hits a query re-ordered (None: the "
                              "adapted reranker's, else 20)")
    weight: float | None = Field(None, ge=0, le=1, description="the reranker's share of a reranked hit's score "
                                 "(None: the adapted reranker's fitted one, else 1: its score alone)")
    adapted: bool = Field(True, description="with no model named, rerank with the index's adapted reranker "
                          "(`genret adapt`) where it was fitted over this retriever")
    max_passage_tokens: int = Field(256, ge=16, description="query likelihood: a passage's tokens kept, at most")
    device: str = "auto"
    dtype: str = "auto"


class Reranker(Protocol):
    """Scores passages for a query: ``scores(query, passages)`` returns one float a passage, higher = more
    relevant (only their order within one query matters).  A passage is ``title\ntext`` unless the reranker
    has ``reads_titles`` False (then the text alone)."""

    name: str

    def scores(self, query: str, passages: Sequence[str]) -> list[float]: ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` by name or local path."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        from genret.core import resolve_device, resolve_dtype, resolve_model_path, torch_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, role="cross-encoder")
        self.name = f"cross-encoder:{model}"
        with model_load_lock():
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(resolve_model_path(model), device=self.device,
                                       model_kwargs={"dtype": torch_dtype(self.dtype)})
        self._lock = threading.Lock()

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            out = self._model.predict([(query, p) for p in passages], batch_size=16, show_progress_bar=False)
        return [float(x) for x in out]


class QueryLikelihoodReranker:
    """log P(query | passage) under a causal LM (see the module doc)."""

    def __init__(self, model: str = DEFAULT_LM, device: str = "auto", dtype: str = "auto",
                 max_passage_tokens: int = 256) -> None:
        from ._lm import load_lm

        self.lm = load_lm(model, device, dtype, role="query-likelihood reranker", lite=True)
        if self.lm.seq2seq:
            from genret.core import ConfigError

            raise ConfigError(f"query-likelihood reranking needs a causal LM; {model} is encoder-decoder")
        self.name = f"ql:{model}"
        self.max_passage_tokens = max_passage_tokens
        self._lock = threading.Lock()

    def _passage(self, text: str) -> str:
        tok = self.lm.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_passage_tokens else tok.decode(ids[:self.max_passage_tokens])

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        from .generative import Stepper

        if not passages:
            return []
        tok = self.lm.tokenizer
        prompts = [tok(QL_PROMPT.format(passage=self._passage(p)))["input_ids"] for p in passages]
        target = tuple(tok(" " + " ".join(query.split()), add_special_tokens=False)["input_ids"])
        with self._lock:
            stepper = Stepper(self.lm)
            stepper.start([list(p) for p in prompts])
            return [float(x) for x in stepper.teacher_force(list(range(len(passages))), [target] * len(passages))]


def blend(first: Sequence[float], second: Sequence[float], weight: float) -> list[float]:
    """``weight`` 1: ``second`` as it is; else ``(1 - weight) * minmax(first) + weight * minmax(second)`` (a list
    whose scores are all equal normalises to zeros)."""
    if weight >= 1.0:
        return [float(x) for x in second]

    def minmax(xs: Sequence[float]) -> list[float]:
        lo, hi = min(xs), max(xs)
        return [0.0 if hi <= lo else (float(x) - lo) / (hi - lo) for x in xs]

    return [(1.0 - weight) * a + weight * b for a, b in zip(minmax(first), minmax(second))]


def blended_order(hits: Sequence[Hit], scores: Sequence[float], weight: float) -> tuple[list[int], list[float]]:
    """``(order, blended scores)``: the positions of ``hits`` best first by ``blend`` of their first-stage scores
    and the reranker's ``scores`` (ties: first-stage order), and the blended score of each hit in place."""
    if not hits:
        return [], []
    mixed = blend([h.score for h in hits], scores, weight)
    return sorted(range(len(hits)), key=lambda i: (-mixed[i], i)), mixed


def hit_texts(index: Index, hits: Sequence[Hit], with_title: bool = True) -> list[str]:
    """Each hit's title and text as a reranker reads them (the text alone without ``with_title``; from the index's
    store where the hit carries no text)."""
    missing = [h.unit_id for h in hits if h.text is None]
    stored = {u.unit_id: u.text for u in index.store.get(missing)} if missing else {}
    return [unit_text(h.provenance.title, h.text if h.text is not None else stored[h.unit_id], with_title)
            for h in hits]


def reranker_texts(index: Index, hits: Sequence[Hit], reranker: Reranker) -> list[str]:
    """The passages ``reranker`` reads for ``hits`` (``hit_texts``, with titles unless it has ``reads_titles``
    False)."""
    return hit_texts(index, hits, getattr(reranker, "reads_titles", True))


def load_reranker(config: RerankConfig, index: Index | None = None, *, adapted_dense: bool = True) -> Reranker:
    """The reranker ``config.model`` names (``ValueError`` when it names none); ``index`` and ``adapted_dense``:
    the dense encoder ``sentences`` reads with (the index's adapted one unless ``adapted_dense`` is False)."""
    if not config.model:
        raise ValueError("no reranker configured (RerankConfig.model is None)")
    if config.model == SENTENCE_RERANK_MODEL or config.model.startswith(SENTENCE_RERANK_MODEL + ":"):
        return sentence_reranker(config.model.partition(":")[2] or None, index, adapted=adapted_dense,
                                 device=config.device, dtype=config.dtype)
    if config.model == "ql" or config.model.startswith("ql:"):
        model = config.model.partition(":")[2] or DEFAULT_LM
        return QueryLikelihoodReranker(model, config.device, config.dtype, config.max_passage_tokens)
    return CrossEncoderReranker(config.model, config.device, config.dtype)


class RerankedRetriever(Retriever):
    """``inner``'s hits, the first ``depth`` re-ordered by ``reranker`` (``weight`` < 1: by the blend of both
    stages' scores; see the module doc)."""

    def __init__(self, inner: Retriever, reranker: Reranker, depth: int, index: Index, weight: float = 1.0) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"rerank weight must be within [0, 1], got {weight}")
        self.inner, self.reranker, self.depth, self.index, self.weight = inner, reranker, depth, index, weight
        self.name = inner.name
        self.granularities = inner.granularities

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        self.check_search(k, granularity)
        kw = {"task": task} if granularity is None else {"task": task, "granularity": granularity}
        first = self.inner.batch_search(queries, max(k, self.depth), **kw)
        return [self._rerank(q, hits)[:k] for q, hits in zip(queries, first)]

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        head, tail = hits[:self.depth], hits[self.depth:]
        if not head:
            return hits
        order, scores = blended_order(head, self.reranker.scores(query, reranker_texts(self.index, head,
                                                                                        self.reranker)), self.weight)
        out = [dataclasses.replace(head[i], score=float(scores[i]), rank=r) for r, i in enumerate(order, 1)]
        floor = min(scores)
        out += [dataclasses.replace(h, score=floor - j, rank=len(out) + j) for j, h in enumerate(tail, 1)]
        return out

    def close(self) -> None:
        self.inner.close()
