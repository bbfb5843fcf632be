"""One entry point for the official KILT numbers of a prediction file against a gold file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ._downstream_metrics import answer_scores
from ._kilt_io import align, gc_paused, read_kilt
from ._retrieval_metrics import DEFAULT_KS, PAGE_KEYS, RankKeys, check_ks, check_rank_keys, checked_retrieval_scores

__all__ = ["downstream_scores", "score"]

Records = str | os.PathLike[str] | Iterable[Mapping[str, Any]]


def _records(source: Records) -> list[Mapping[str, Any]]:
    if isinstance(source, str | os.PathLike):
        return list(read_kilt(source))
    return list(source)


def _has_answers(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> bool:
    """True when some guess carries a non-empty answer and some gold record has an answer."""
    outputs = [guess["output"][0] for guess, _ in pairs]
    guessed = any(isinstance(output, Mapping) and str(output.get("answer", "")).strip() for output in outputs)
    return guessed and any(isinstance(output, Mapping) and output.get("answer")
                           for _, gold in pairs for output in gold["output"])


def score(guess: Records, gold: Records, *, ks: Iterable[int] = DEFAULT_KS, rank_keys: RankKeys = PAGE_KEYS,
          downstream: bool | None = None, include_recall_at_1: bool = False) -> dict[str, Any]:
    """Score KILT predictions against gold records with KILT's own metric definitions.

    ``guess`` and ``gold`` are KILT files (see :func:`genret.eval._kilt_io.read_kilt`) or lists of records.
    Guesses are aligned to the gold order by id; a missing guess is an error, extra guesses are
    ignored. ``retrieval`` is :func:`retrieval_scores` at ``ks`` and ``rank_keys`` (``recall@1`` only
    with ``include_recall_at_1``); ``downstream`` and ``kilt`` are KILT's answer metrics and their
    page-level-R-Precision-gated versions, computed when ``downstream`` is true or, when it is None,
    when at least one guess carries a non-empty answer and the gold has answers (empty dicts
    otherwise). As in KILT, every gold record then needs an answer.

    Returns ``{"retrieval": {...}, "downstream": {...}, "kilt": {...}, "count": number of gold records}``.
    """
    ks_sorted, keys = check_ks(ks), check_rank_keys(rank_keys)
    pairs = align(_records(guess), _records(gold))
    if downstream is None:
        downstream = _has_answers(pairs)
    # The KILT gate needs each pair's page-level R-Precision: shared with the main pass when it is
    # page level, else one extra page-level pass.
    page_rprec: list[float] | None = [] if downstream and keys == PAGE_KEYS else None
    with gc_paused():
        retrieval = checked_retrieval_scores(pairs, ks_sorted, keys, include_recall_at_1, rprec_values=page_rprec)
        answers: dict[str, dict[str, float]] = {"downstream": {}, "kilt": {}}
        if downstream:
            if page_rprec is None:
                page_rprec = []
                checked_retrieval_scores(pairs, [1], PAGE_KEYS, False, rprec_values=page_rprec)
            answers = answer_scores(pairs, page_rprec, "fast")
    return {"retrieval": retrieval, "downstream": answers["downstream"], "kilt": answers["kilt"],
            "count": len(pairs)}


def downstream_scores(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], *,
                      rouge_impl: Literal["fast", "package"] = "fast") -> dict[str, dict[str, float]]:
    """KILT's downstream ``evaluate`` on aligned ``(guess, gold)`` pairs.

    Returns ``{"kilt": {"KILT-accuracy", "KILT-em", "KILT-f1", "KILT-rougel"},
    "downstream": {"accuracy", "em", "f1", "rougel"}, "retrieval": {"Rprec", "recall@5"}}``, each a
    mean over all pairs (an empty predicted answer scores 0 but is counted).
    """
    with gc_paused():
        page_rprec: list[float] = []
        retrieval = checked_retrieval_scores(pairs, [1, 5], PAGE_KEYS, False, rprec_values=page_rprec)
        answers = answer_scores(pairs, page_rprec, rouge_impl)
    return {**answers, "retrieval": {"Rprec": retrieval["Rprec"], "recall@5": retrieval["recall@5"]}}
