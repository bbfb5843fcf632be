"""LTRGR-style rank loss (Li et al. 2023, "Learning to Rank in Generative Retrieval") for the second stage.

For a query, its gold unit and hard negatives, each unit gets a differentiable SEAL-like score: spans of the
unit are sampled as the supervised pairs are (anchored on the query's words first; ``_pairs.sample_spans``),
each span is scored by its teacher-forced log-probability under the query's prompt (mean over its tokens, so
spans of different lengths compare), and the unit's score is the log of the mean span probability
(``logsumexp - log n``: a soft maximum, so the unit's best n-grams dominate as in SEAL's aggregation while every
span gets gradient).  The loss is the margin loss ``max(0, margin - (s_gold - s_neg))`` averaged over
negatives and queries; the trainer adds it, weighted, to the generation loss.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from genret.indexing import UnitStore

from ._pairs import Pair, content_words, sample_spans, token_words
from ._pseudo import Labelled


class UnitTokens:
    """Text tokens and token words of units, encoded once and cached."""

    def __init__(self, store: UnitStore, encoder) -> None:
        self.store, self.encoder = store, encoder
        self._cache: dict[int, tuple[list[int], list[tuple[str, bool]]]] = {}

    def get(self, unit_id: int) -> tuple[list[int], list[tuple[str, bool]]]:
        if unit_id not in self._cache:
            toks = self.encoder.text_tokens(self.store.get([unit_id])[0].text)
            self._cache[unit_id] = (toks, token_words(self.encoder, toks))
        return self._cache[unit_id]


@dataclass
class RankBatch:
    """The rows to score (as pairs) and, per query, the row ranges of its gold unit and of each negative."""

    pairs: list[Pair]
    groups: list[list[tuple[int, int]]]  # per query: [(start, end) of gold rows, (start, end) per negative, ...]


def rank_batch(examples: list[Labelled], units: UnitTokens, rng: random.Random, *, spans: int, min_len: int,
               max_len: int) -> RankBatch:
    """Sample the spans of each query's gold unit (one of its golds) and negatives."""
    pairs: list[Pair] = []
    groups: list[list[tuple[int, int]]] = []
    for ex in examples:
        qwords = content_words(ex.query)
        ranges = []
        for uid in (rng.choice(ex.gold), *ex.negatives):
            toks, words = units.get(uid)
            sampled = sample_spans(toks, words, qwords, rng, spans, min_len, max_len)
            ranges.append((len(pairs), len(pairs) + len(sampled)))
            pairs.extend(Pair(ex.task, ex.query, s, "body") for s in sampled)
        gold, negs = ranges[0], [r for r in ranges[1:] if r[1] > r[0]]
        if gold[1] > gold[0] and negs:
            groups.append([gold, *negs])
    return RankBatch(pairs, groups)


def unit_scores(span_scores, groups: list[list[tuple[int, int]]]):
    """``[tensor (1 + negatives,)]`` per query: log-mean-exp of each unit's span scores."""
    import torch

    return [torch.stack([torch.logsumexp(span_scores[s:e], 0) - math.log(e - s) for s, e in g]) for g in groups]


def margin_loss(span_scores, groups: list[list[tuple[int, int]]], margin: float):
    """``(loss, accuracy)``: mean of ``max(0, margin - (s_gold - s_neg))``, share of negatives below gold."""
    import torch

    per_query = unit_scores(span_scores, groups)
    diffs = torch.cat([s[0] - s[1:] for s in per_query])
    loss = torch.stack([torch.clamp(margin - (s[0] - s[1:]), min=0).mean() for s in per_query]).mean()
    return loss, float((diffs > 0).float().mean())
