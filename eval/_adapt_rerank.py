"""The reranking stage of ``genret adapt`` (and ``genret train rerank``): the candidate second stages — a
cross-encoder trained on the task, and the sentence reranker (a passage's best sentence under the index's dense
encoder, no training) —, each blended into the first stage as a held-out fold says, and the better one kept only
where its blend lifts that fold.

The first stage is the retriever searches use by default (the hybrid where the index has several members, with the
fusion ``adapt`` just fitted).  Over the held-out fold its first ``depth`` hits are scored by each candidate; the
blend weight (``retrieval.RerankedRetriever``: ``(1 - w)`` of the first stage's min-max normalised score, ``w`` of
the reranker's) and, where several are given, the depth are chosen on a grid by cross-validation: each fold's
records are ranked with the pair best on the other folds, and that held-out estimate is what is compared with the
first stage alone (both R-Precision, page and passage averaged).  A candidate is kept only where its estimate
beats the first stage by at least ``KEEP_SE`` standard errors of its gain, record by record, and it lifted more of
the records it changed than it lowered beyond chance (a one-sided sign test at ``KEEP_P``) (``clears``; a
cross-encoder also needs a training loss that fell) — the simpler system, the first stage alone, unless the other is
better by more than its noise.  Of those that clear it, the one with the higher
estimate goes into the index (``indexing.write_adapted_reranker``) with the depth and weight best on the whole fold,
and searches over that retriever use it without flags; where none does, nothing is written and the report says so.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from genret.indexing import SENTENCE_RERANK_MODEL, Index, write_adapted_reranker
from genret.retrieval import (
    CrossEncoderReranker,
    Hit,
    RerankConfig,
    Reranker,
    RerankTrainConfig,
    RetrievalConfig,
    blended_order,
    fine_tune_reranker,
    load_reranker,
    pairs_from_kilt,
    reranker_texts,
)

from ._fusion_tune import Scorer, run_members
from ._keep_rule import beyond_noise, paired_gain

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
LEVELS = ("page", "passage")
CROSS_ENCODER = "cross-encoder"


@dataclass
class RerankFit:
    """What the held-out fold said of the reranker it chose (``model``: ``cross-encoder`` or ``sentences``): the first
    stage alone (``first``), the blend's cross-validated estimate (``blended``), both R-Precision percent per level
    and their mean (``objective``); the weight best on the whole fold; whether it was kept (``clears``: the blend
    above the first stage alone by ``KEEP_SE`` standard errors or more and a sign test's p at most ``KEEP_P``, and
    for a cross-encoder a training loss that fell); each candidate's ``blended`` and ``weight`` (``candidates``);
    the cross-encoder's training statistics (empty when none was trained)."""

    over: str
    depth: int
    weight: float
    first: dict[str, float]
    blended: dict[str, float]
    kept: bool
    model: str = CROSS_ENCODER
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    minutes: dict[str, float] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)


class BlendFit(NamedTuple):
    """``fit_blend``'s answer: the depth and weight best on every record, the cross-validated blend's metrics and
    the first stage's (fractions per level and their ``objective``), and the blend's held-out gain over the first
    stage record by record (``gain``: objective points, mean and standard error, records better and worse)."""

    depth: int
    weight: float
    blended: dict[str, float]
    first: dict[str, float]
    gain: dict[str, float]


def clears(fit: BlendFit) -> bool:
    """Whether a second stage's fit earns its place (see KEEP_SE and KEEP_P): a weight above 0, a cross-validated
    blend above the first stage alone by at least ``KEEP_SE`` standard errors of its per-record gain (the gain's mean
    is the blend's objective less the first stage's, in points), and more records lifted than lowered beyond chance
    (the one-sided sign test's p at most ``KEEP_P``)."""
    return fit.weight > 0 and beyond_noise(fit.gain)


def _orders(hits: list[list[Hit]], scores: list[list[float]], weight: float, depth: int) -> list[list[int]]:
    """Each record's unit ids as ``RerankedRetriever`` ranks them with ``weight``: its first ``depth`` hits by the
    blend (``scores`` cover at least that many), the rest below in their first-stage order."""
    return [[hs[i].unit_id for i in blended_order(hs[:depth], sc[:depth], weight)[0]]
            + [h.unit_id for h in hs[depth:]] for hs, sc in zip(hits, scores)]


def fit_blend(scorer: Scorer, hits: list[list[Hit]], scores: list[list[float]], depths: Sequence[int],
              folds: int = 5, seed: int = 13) -> BlendFit:
    """A ``BlendFit`` (depth, weight best on every record, cross-validated blend metrics, first stage's metrics, the
    blend's paired gain) over the held-out records ``scorer`` scores (see the module doc): the depth (one of
    ``depths``; ``scores`` cover the deepest) and the weight are chosen together, each fold's records ranked with
    the pair best on the other folds; ties go to the shallower depth (cheaper at search time), then the smaller
    weight. Metrics are fractions per level and their ``objective``."""
    depths = sorted(set(depths))
    grid = [(d, w) for d in depths for w in WEIGHTS if w > 0 or d == depths[0]]  # weight 0 is the first stage
    orders = {c: _orders(hits, scores, c[1], c[0]) for c in grid}
    n = len(hits)
    rows = list(range(n))
    random.Random(seed).shuffle(rows)
    folds = max(2, min(folds, n // 2)) if n >= 4 else 0
    first_stage = orders[(depths[0], 0.0)]

    def best(subset: list[int] | None) -> tuple[int, float]:
        pick = (lambda o: o) if subset is None else (lambda o: [o[r] for r in subset])
        return max(grid, key=lambda c: (scorer(pick(orders[c]), subset)["objective"], -c[0], -c[1]))

    if folds:
        chosen: list[list[int]] = [[] for _ in range(n)]
        for part in [rows[i::folds] for i in range(folds)]:
            left_out = set(part)
            rest = [r for r in rows if r not in left_out]
            pair = best(rest)
            for r in part:
                chosen[r] = orders[pair][r]
    else:
        chosen = first_stage
    gain = paired_gain(scorer.per_record(chosen), scorer.per_record(first_stage))
    return BlendFit(*best(None), scorer(chosen), scorer(first_stage), gain)  # weight 0: the shallowest depth only


def adapt_reranker(index_dir: str | Path, train: Sequence[dict], held: Sequence[dict], *, over: str,
                   config: RetrievalConfig, train_config: RerankTrainConfig | None, scratch: Path, task: str | None,
                   depth: int | Sequence[int] = 20, trained: dict[str, Any] | None = None, sentences: bool = True,
                   first: Sequence[list[Hit]] | None = None, progress: bool = True,
                   say: Callable[[str], None] = print) -> RerankFit:
    """Train a cross-encoder on ``train`` (KILT records; none when ``train_config`` is None), fit its blend and —
    with ``sentences`` and a dense component — the sentence reranker's over retriever ``over`` on ``held``, and
    write the better into the index when it lifts the fold (see the module doc).  ``config``: the first stage's
    retrieval settings (its own reranking is switched off here; its dense encoder is the sentence reranker's);
    ``trained``: what the index records of the training data (with the cross-encoder's settings and statistics
    added here); ``first``: the first stage's hit lists for ``held`` (default: ``over`` searched with ``config``)
    — ``adapt`` passes the hybrid's held-out rankings, each record fused with weights fitted without it, so that
    the first stage alone and the blend are both held-out figures (the fusion's fit on the whole fold would score
    the first stage in-sample, above what it does on new records, and keep too few rerankers).  ``depth``: how many
    of a record's first hits are reranked, or the candidate depths the fold chooses from with the weight."""
    config = config.model_copy(update={"rerank": config.rerank.model_copy(update={"model": None,
                                                                                   "adapted": False})})
    depths = (depth,) if isinstance(depth, int) else tuple(depth)
    deepest = max(depths)
    minutes: dict[str, float] = {}
    stats: dict[str, Any] = {}
    if train_config is not None:
        t0 = time.perf_counter()
        with Index(index_dir) as index:
            stats = fine_tune_reranker(index, pairs_from_kilt(train), scratch / "reranker", train_config,
                                       progress=progress)
        minutes["training"] = round((time.perf_counter() - t0) / 60, 2)
        say(f"rerank: trained on {stats['queries']} queries ({stats['rows']} rows, {stats['steps']} steps, loss "
            f"{stats['loss_first']} → {stats['loss_last']}); scoring the held-out fold's first {deepest} {over} hits")
    t0 = time.perf_counter()
    with Index(index_dir) as index:
        if first is None:
            hits = run_members(index, [over], list(held), 100, config, task, progress)[over]
        elif len(first) != len(held):
            raise ValueError(f"adapt_reranker: {len(first)} first-stage hit lists for {len(held)} held-out records")
        else:
            hits = list(first)
        rerankers: dict[str, Reranker] = {}
        if train_config is not None:
            rerankers[CROSS_ENCODER] = CrossEncoderReranker(str(scratch / "reranker"), train_config.device,
                                                            train_config.dtype)
        if sentences and index.has("dense"):
            rerankers[SENTENCE_RERANK_MODEL] = load_reranker(
                RerankConfig(model=SENTENCE_RERANK_MODEL, device=config.dense.device, dtype=config.dense.dtype),
                index, adapted_dense=config.dense.adapted)
        if not rerankers:
            raise ValueError("adapt_reranker: no candidate reranker (no cross-encoder to train, and no sentence "
                             "reranker: the index has no dense component or sentences is False)")
        scores = {name: [r.scores(rec["input"], reranker_texts(index, hs[:deepest], r)) for rec, hs in zip(held, hits)]
                  for name, r in rerankers.items()}
    scorer = Scorer(list(held), {over: hits}, "Rprec", LEVELS)
    fits = {name: fit_blend(scorer, hits, sc, depths) for name, sc in scores.items()}
    minutes["held-out scoring"] = round((time.perf_counter() - t0) / 60, 2)
    pct = lambda m: {k: round(100 * v, 1) for k, v in m.items()}  # noqa: E731
    eligible = [n for n in fits if n != CROSS_ENCODER or _learned(stats)]
    passing = [n for n in eligible if clears(fits[n])]
    name = max(passing or eligible or list(fits), key=lambda n: (fits[n].blended["objective"], n != CROSS_ENCODER))
    chosen_depth, weight, blended, first, gain = fits[name]
    fit = RerankFit(over=over, depth=chosen_depth, weight=weight, first=pct(first), blended=pct(blended),
                    kept=bool(passing), model=name,
                    candidates={n: {"depth": f.depth, "weight": f.weight, "blended": pct(f.blended), "gain": f.gain}
                                for n, f in fits.items()},
                    train=stats, minutes=minutes, gain=gain)
    if fit.kept:
        ce = name == CROSS_ENCODER  # its folder, training settings and statistics; the sentence reranker has none
        training = {"config": train_config.model_dump(exclude={"device", "max_minutes"}), **stats} if ce else {}
        write_adapted_reranker(index_dir, scratch / "reranker" if ce else None, over=over, depth=chosen_depth,
                               weight=weight,
                               trained={**(trained or {}), "model": name, **training,
                                        "held_out": {"first": fit.first, "blended": fit.blended}})
    return fit


def _learned(stats: dict[str, Any]) -> bool:
    """Whether the training loss fell (a model that did not learn is not kept, whatever a small fold says)."""
    first, last = stats.get("loss_first"), stats.get("loss_last")
    return first is not None and last is not None and last < first
