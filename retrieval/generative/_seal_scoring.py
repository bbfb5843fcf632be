"""SEAL scoring: from decoded n-grams (keys) to unit scores.

Each key n gets a weight from its conditional log-probability given the query, log P(n|q), against its
unconditional corpus probability P(n) = (F(n) + s) / (T + s) (F = count in the FM-index, T = tokens in
the corpus, s = smoothing):

    w(n) = max(0, log[P(n|q) (1 - P(n))] - log[P(n) (1 - P(n|q))]) ** alpha

A unit's score sums the weights of the keys it contains, without double counting: occurrences are
taken in decreasing weight order and one is accepted only where its tokens do not overlap a token
already taken; each n-gram counts once, scaled by how many of its token types are new to the unit,
``1 - beta + beta * |types(n) - covered| / |types(n)|`` (Bevilacqua et al., 2022, "Autoregressive
Search Engines").  ``score_tokens`` is that formula on one unit's tokens; ``first_stage`` cheaply ranks
candidate units from the index before the full formula is applied to the best of them.

Unigram scores (SEAL's ``unigram_scores``): the model's next-token distribution right after the prompt gives
each token type t a weight ``max(0, log[P(t|q)(1 - P(t))] - log[P(t)(1 - P(t|q))])`` (no exponent, as in SEAL);
each distinct type among a unit's tokens that no n-gram match covered adds its weight once, damped by the
coverage factor.

Two additions for small corpora and small, uncalibrated models:

- ``smoothing`` is SEAL's for a corpus of ``smoothing_tokens`` tokens or more and shrinks in proportion below
  that, so a two-page corpus is not smoothed into "every n-gram is common";
- calibration (``calibration`` = λ in [0, 1]): the evidence inside ``max(0, ·)`` becomes
  ``(1 - λ) · SEAL's log-odds + λ · (log P(n|q) - log P(n|∅))``, where P(n|∅) is the same model's probability
  of the key under the prompt with an empty query.  At λ = 1 the weight is the model's pointwise mutual
  information between key and query: keys the model writes whatever the question ("The answer", "In 19…")
  lose their weight, and a small corpus (where every n-gram looks frequent) no longer zeroes every key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ScoringConfig(BaseModel):
    """SEAL scoring parameters (defaults from the SEAL paper)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    alpha: float = Field(2.0, gt=0)
    beta: float = Field(0.8, ge=0, le=1)
    smoothing: float = Field(5.0, gt=0)
    smoothing_tokens: int = Field(100_000_000, ge=1, description="corpora smaller than this get proportionally "
                                  "less smoothing")
    calibration: float = Field(1.0, ge=0, le=1, description="λ: how far P(n|q) is divided by the model's P(n|∅)")
    max_occurrences: int = Field(1500, ge=1, description="keys more frequent than this do not propose candidates")
    n_full: int = Field(300, ge=1, description="candidates scored with the full formula")


def smoothing(n_tokens: int, config: ScoringConfig) -> float:
    """The smoothing constant for a corpus of ``n_tokens`` tokens."""
    return config.smoothing * min(1.0, n_tokens / config.smoothing_tokens)


def key_weight(logprob: float, count: int, n_tokens: int, config: ScoringConfig, prior: float | None = None,
               exponent: float | None = None) -> float:
    """w(n) for a key of log-probability ``logprob`` (``prior``: its log-probability under the empty query,
    for calibration) occurring ``count`` times among ``n_tokens`` (``key_weights`` for one key)."""
    return float(key_weights([logprob], [count], n_tokens, config, None if prior is None else [prior], exponent)[0])


def key_weights(logprobs, counts, n_tokens: int, config: ScoringConfig, priors=None, exponent: float | None = None):
    """w(n) of many keys at once (float64 arrays; e.g. SEAL's unigram scores over the vocabulary's best tokens):
    SEAL's log-odds of P(n|q) against the smoothed corpus probability P(n) = (F(n) + s) / (T + s), mixed with the
    calibration term ``log P(n|q) - prior`` where ``priors`` are given; 0 for keys absent from the corpus."""
    lp = np.asarray(logprobs, dtype=np.float64)
    count = np.asarray(counts, dtype=np.float64)
    s = smoothing(n_tokens, config)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.minimum(np.log((count + s) / (n_tokens + s)), -1e-10)
        sr = np.minimum(lp, -1e-10)
        w = (sr + np.log1p(-np.exp(snr))) - (snr + np.log1p(-np.exp(sr)))
        lam = config.calibration if priors is not None else 0.0
        if lam:
            w = (1.0 - lam) * w + lam * (lp - np.asarray(priors, dtype=np.float64))
        w = np.maximum(w, 0.0) ** (config.alpha if exponent is None else exponent)
    return np.where(count > 0, w, 0.0)


def _coverage(types: frozenset[int], covered: set[int], beta: float) -> float:
    return 1.0 - beta + beta * len(types - covered) / len(types)


def _order(item: tuple[tuple[int, ...], float]) -> tuple:
    ngram, w = item
    return (-w, -len(ngram), ngram)


def _lookup(ids) -> np.ndarray:
    """A boolean table over token ids: True at ``ids`` (``_members`` reads it)."""
    ids = np.fromiter(ids, dtype=np.int64)
    table = np.zeros(int(ids.max()) + 2 if len(ids) else 1, dtype=bool)
    table[ids] = True
    return table


def _members(table: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Positions of ``tokens`` whose id ``table`` marks (ids beyond the table are not marked)."""
    return np.flatnonzero(table[np.minimum(tokens, len(table) - 1)])


class KeyMatcher:
    """``score_tokens`` for many units under one query's keys: the keys are indexed once (by first token, in
    the order matches are taken, with their token types), so scoring a unit costs one vectorised look-up of its
    tokens and Python work only where a key could start (a unit of ~200 tokens holds a handful of such places)."""

    def __init__(self, weights: Mapping[tuple[int, ...], float]) -> None:
        live = sorted(((n, w) for n, w in weights.items() if w > 0 and n), key=_order)
        self.rank = {n: r for r, (n, _) in enumerate(live)}
        self.weights = dict(live)
        self.types = {n: frozenset(n) for n, _ in live}
        self.by_first: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        for n, _ in live:
            self.by_first[n[0]].append(n)
        self._firsts = _lookup(self.by_first)
        self._unigrams: tuple[Mapping[int, float], np.ndarray] | None = None

    def _unigram_table(self, unigrams: Mapping[int, float]) -> np.ndarray:
        if self._unigrams is None or self._unigrams[0] is not unigrams:  # one table per unigram mapping
            self._unigrams = (unigrams, _lookup(t for t, w in unigrams.items() if w > 0))
        return self._unigrams[1]

    def score(self, tokens: Sequence[int], beta: float, unigrams: Mapping[int, float] | None = None
              ) -> tuple[float, list[tuple[tuple[int, ...], float]]]:
        """As ``score_tokens``."""
        tokens = list(tokens)
        arr = np.asarray(tokens, dtype=np.int64)
        occurrences: dict[tuple[int, ...], list[int]] = {}
        by_first = self.by_first
        for i in _members(self._firsts, arr).tolist():
            for ngram in by_first[tokens[i]]:
                if len(ngram) == 1 or tuple(tokens[i:i + len(ngram)]) == ngram:
                    occurrences.setdefault(ngram, []).append(i)
        free = [True] * len(tokens)
        covered: set[int] = set()
        matched: list[tuple[tuple[int, ...], float]] = []
        total = 0.0
        for ngram in sorted(occurrences, key=self.rank.__getitem__):
            counted = False
            for start in occurrences[ngram]:  # every free occurrence is taken; the n-gram counts once
                end = start + len(ngram)
                if not all(free[start:end]):
                    continue
                free[start:end] = [False] * (end - start)
                if not counted:
                    contribution = self.weights[ngram] * _coverage(self.types[ngram], covered, beta)
                    covered.update(ngram)
                    total += contribution
                    matched.append((ngram, contribution))
                    counted = True
        if unigrams:
            seen: set[int] = set()
            for i in _members(self._unigram_table(unigrams), arr).tolist():
                t = tokens[i]
                if free[i] and t not in seen:
                    seen.add(t)
                    contribution = unigrams[t] * (1.0 - beta + beta * (t not in covered))
                    total += contribution
                    matched.append(((t,), contribution))
        return total, matched


def score_tokens(tokens: Sequence[int], weights: Mapping[tuple[int, ...], float], beta: float,
                 unigrams: Mapping[int, float] | None = None) -> tuple[float, list[tuple[tuple[int, ...], float]]]:
    """Score one unit's token sequence; returns the score and the matched keys with their contributions
    (``unigrams``: token type -> unigram weight, added for the types no n-gram match covers).  Scoring many
    units under the same keys: ``KeyMatcher(weights).score(tokens, beta, unigrams)``."""
    return KeyMatcher(weights).score(tokens, beta, unigrams)


def first_stage(doc_keys: Mapping[int, list[tuple[int, ...]]], weights: Mapping[tuple[int, ...], float],
                beta: float, limit: int) -> list[int]:
    """Candidate units ranked by the sum of their keys' weights with the coverage factor (no overlap test)."""
    scored = []
    for doc, ngrams in doc_keys.items():
        covered: set[int] = set()
        s = 0.0
        for ngram in sorted(set(ngrams), key=lambda n: _order((n, weights[n]))):
            s += weights[ngram] * _coverage(frozenset(ngram), covered, beta)
            covered.update(ngram)
        scored.append((-s, doc))
    scored.sort()
    return [doc for _, doc in scored[:limit]]
