"""One entry point for the official KILT numbers of a prediction file against a gold file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genret.eval._downstream_metrics import _answer_scores
from genret.eval._kilt_io import align, gc_paused, read_kilt
from genret.eval._retrieval_metrics import DEFAULT_KS, PAGE_KEYS, RankKeys, _keys, _ks, _retrieval_scores

__all__ = ["score"]

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
    ks_sorted, keys = _ks(ks), _keys(rank_keys)
    pairs = align(_records(guess), _records(gold))
    if downstream is None:
        downstream = _has_answers(pairs)
    # The KILT gate needs each pair's page-level R-Precision: shared with the main pass when it is
    # page level, else one extra page-level pass.
    page_rprec: list[float] | None = [] if downstream and keys == PAGE_KEYS else None
    with gc_paused():
        retrieval = _retrieval_scores(pairs, ks_sorted, keys, include_recall_at_1, rprec_values=page_rprec)
        answers: dict[str, dict[str, float]] = {"downstream": {}, "kilt": {}}
        if downstream:
            if page_rprec is None:
                page_rprec = []
                _retrieval_scores(pairs, [1], PAGE_KEYS, False, rprec_values=page_rprec)
            answers = _answer_scores(pairs, page_rprec, "fast")
    return {"retrieval": retrieval, "downstream": answers["downstream"], "kilt": answers["kilt"],
            "count": len(pairs)}
