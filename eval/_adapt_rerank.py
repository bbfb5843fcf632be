"""The reranking stage of ``genret adapt`` (and ``genret train rerank``): train a cross-encoder on the task, fit how
much of it to blend into the first stage on a held-out fold, and keep it only where the blend lifts that fold.

The first stage is the retriever searches use by default (the hybrid where the index has several members, with the
fusion ``adapt`` just fitted).  Over the held-out fold its first ``depth`` hits are scored by the trained
cross-encoder; the blend weight (``retrieval.RerankedRetriever``: ``(1 - w)`` of the first stage's min-max
normalised score, ``w`` of the cross-encoder's) is chosen on a grid by cross-validation: each fold's records are
ranked with the weight best on the other folds, and that held-out estimate is what is compared with the first stage
alone (both R-Precision, page and passage averaged).  Where it is higher the model goes into the index
(``indexing.write_adapted_reranker``) with the weight best on the whole fold, and searches over that retriever use
it without flags; where not, nothing is written and the report says so.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genret.indexing import Index, write_adapted_reranker
from genret.retrieval import (
    CrossEncoderReranker,
    Hit,
    RerankTrainConfig,
    RetrievalConfig,
    blended_order,
    fine_tune_reranker,
    hit_texts,
    pairs_from_kilt,
)

from ._fusion_tune import Scorer, run_members

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
LEVELS = ("page", "passage")


@dataclass
class RerankFit:
    """What the held-out fold said of a trained reranker: the first stage alone (``first``), the blend's
    cross-validated estimate (``blended``), both R-Precision percent per level and their mean (``objective``); the
    weight best on the whole fold; whether it was kept (the blend higher than the first stage alone, and a training
    loss that fell)."""

    over: str
    depth: int
    weight: float
    first: dict[str, float]
    blended: dict[str, float]
    kept: bool
    train: dict[str, Any] = field(default_factory=dict)
    minutes: dict[str, float] = field(default_factory=dict)


def _orders(hits: list[list[Hit]], scores: list[list[float]], weight: float, depth: int) -> list[list[int]]:
    """Each record's unit ids as ``RerankedRetriever`` ranks them with ``weight``: its first ``depth`` hits by the
    blend, the rest below in their first-stage order."""
    return [[hs[i].unit_id for i in blended_order(hs[:depth], sc, weight)[0]] + [h.unit_id for h in hs[depth:]]
            for hs, sc in zip(hits, scores)]


def fit_blend(scorer: Scorer, hits: list[list[Hit]], scores: list[list[float]], depth: int, folds: int = 5,
              seed: int = 13) -> tuple[float, dict[str, float], dict[str, float]]:
    """``(weight best on every record, cross-validated blend metrics, first stage's metrics)`` over the held-out
    records ``scorer`` scores (see the module doc); metrics are fractions per level and their ``objective``."""
    orders = {w: _orders(hits, scores, w, depth) for w in WEIGHTS}
    n = len(hits)
    rows = list(range(n))
    random.Random(seed).shuffle(rows)
    folds = max(2, min(folds, n // 2)) if n >= 4 else 0
    chosen: list[list[int]] = [[] for _ in range(n)]
    if folds:
        parts = [rows[i::folds] for i in range(folds)]
        for part in parts:
            rest = [r for r in rows if r not in set(part)]
            best = max(WEIGHTS, key=lambda w: (scorer([orders[w][r] for r in rest], rest)["objective"], -w))
            for r in part:
                chosen[r] = orders[best][r]
        held = scorer(chosen)
    else:
        held = scorer(orders[0.0])
    best_all = max(WEIGHTS, key=lambda w: (scorer(orders[w])["objective"], -w))
    return best_all, held, scorer(orders[0.0])


def adapt_reranker(index_dir: str | Path, train: Sequence[dict], held: Sequence[dict], *, over: str,
                   config: RetrievalConfig, train_config: RerankTrainConfig, scratch: Path, task: str | None,
                   depth: int = 20, trained: dict[str, Any] | None = None, progress: bool = True,
                   say: Callable[[str], None] = print) -> RerankFit:
    """Train a cross-encoder on ``train`` (KILT records), fit its blend over retriever ``over`` on ``held`` and
    write it into the index when it lifts the fold (see the module doc).  ``config``: the first stage's retrieval
    settings (its own reranking is switched off here)."""
    config = config.model_copy(update={"rerank": config.rerank.model_copy(update={"model": None,
                                                                                   "adapted": False})})
    minutes: dict[str, float] = {}
    t0 = time.perf_counter()
    with Index(index_dir) as index:
        stats = fine_tune_reranker(index, pairs_from_kilt(train), scratch / "reranker", train_config,
                                   progress=progress)
    minutes["training"] = round((time.perf_counter() - t0) / 60, 2)
    say(f"rerank: trained on {stats['queries']} queries ({stats['rows']} rows, {stats['steps']} steps, loss "
        f"{stats['loss_first']} → {stats['loss_last']}); scoring the held-out fold's first {depth} {over} hits")
    t0 = time.perf_counter()
    with Index(index_dir) as index:
        hits = run_members(index, [over], list(held), 100, config, task, progress)[over]
        reranker = CrossEncoderReranker(str(scratch / "reranker"), train_config.device, train_config.dtype)
        scores = [reranker.scores(rec["input"], hit_texts(index, hs[:depth])) for rec, hs in zip(held, hits)]
    scorer = Scorer(list(held), {over: hits}, "Rprec", LEVELS)
    weight, blended, first = fit_blend(scorer, hits, scores, depth)
    minutes["held-out scoring"] = round((time.perf_counter() - t0) / 60, 2)
    pct = {k: round(100 * v, 1) for k, v in first.items()}
    fit = RerankFit(over=over, depth=depth, weight=weight, first=pct,
                    blended={k: round(100 * v, 1) for k, v in blended.items()},
                    kept=blended["objective"] > first["objective"] and weight > 0 and _learned(stats), train=stats,
                    minutes=minutes)
    if fit.kept:
        write_adapted_reranker(index_dir, scratch / "reranker", over=over, depth=depth, weight=weight,
                               trained={**(trained or {}), **stats, "held_out": {"first": fit.first,
                                                                                  "blended": fit.blended}})
    return fit


def _learned(stats: dict[str, Any]) -> bool:
    """Whether the training loss fell (a model that did not learn is not kept, whatever a small fold says)."""
    first, last = stats.get("loss_first"), stats.get("loss_last")
    return first is not None and last is not None and last < first

