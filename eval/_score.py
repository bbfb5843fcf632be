"""One entry point for the official KILT numbers of a prediction file against a gold file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eval._downstream_metrics import downstream_scores
from eval._kilt_io import align, read_kilt
from eval._retrieval_metrics import DEFAULT_KS, PAGE_KEYS, RankKeys, retrieval_scores

__all__ = ["score"]

Records = str | os.PathLike[str] | Iterable[Mapping[str, Any]]


def _records(source: Records) -> list[Mapping[str, Any]]:
    if isinstance(source, str | os.PathLike):
        return list(read_kilt(source))
    return list(source)


def _has_answers(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> bool:
    for guess, _ in pairs:
        output = guess["output"][0]
        if isinstance(output, Mapping) and str(output.get("answer", "")).strip():
            return True
    return False


def score(guess: Records, gold: Records, *, ks: Iterable[int] = DEFAULT_KS, rank_keys: RankKeys = PAGE_KEYS,
          downstream: bool | None = None, include_recall_at_1: bool = False) -> dict[str, Any]:
    """Score KILT predictions against gold records with KILT's own metric definitions.

    ``guess`` and ``gold`` are KILT files (see :func:`eval._kilt_io.read_kilt`) or lists of records.
    Guesses are aligned to the gold order by id; a missing guess is an error, extra guesses are
    ignored. ``retrieval`` is :func:`retrieval_scores` at ``ks`` and ``rank_keys`` (``recall@1`` only
    with ``include_recall_at_1``); ``downstream`` and ``kilt`` are KILT's answer metrics and their
    page-level-R-Precision-gated versions, computed when ``downstream`` is true or, when it is None,
    when at least one guess carries a non-empty answer (empty dicts otherwise).

    Returns ``{"retrieval": {...}, "downstream": {...}, "kilt": {...}, "count": number of gold records}``.
    """
    pairs = align(_records(guess), _records(gold))
    retrieval = retrieval_scores(pairs, ks=ks, rank_keys=rank_keys, include_recall_at_1=include_recall_at_1)
    if downstream is None:
        downstream = _has_answers(pairs)
    answers = downstream_scores(pairs) if downstream else {"downstream": {}, "kilt": {}}
    return {"retrieval": retrieval, "downstream": answers["downstream"], "kilt": answers["kilt"],
            "count": len(pairs)}
