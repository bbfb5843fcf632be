"""Fitting the span reader on questions with gold answers: ``genret train reader``.

Each training question goes through the RAG pipeline as an answer would (its retriever, passages and prompt); the
reader's candidates are labelled right when SQuAD-normalised equal to a gold answer, and ``fit_reader`` fits the
weights (a list-wise softmax).  Exact match before and after (on the same questions), held out (k-fold
cross-validation: the figure to trust) and the share of questions whose passages hold a right candidate (the
ceiling) come back with the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genret.core import GenretError, InputError, progress_bar
from genret.retrieval.rag import RagPipeline, SpanReader, fit_reader

from ._downstream_metrics import gold_answers, normalize_answer


def fit_span_reader(pipeline: RagPipeline, records: Sequence[Mapping[str, Any]], *, task: str | None = None,
                    l2: float = 1.0, base: SpanReader | None = None, folds: int = 5,
                    progress: bool = True) -> tuple[SpanReader, dict[str, Any]]:
    """A reader fitted on ``records`` (KILT records with answers), and its figures: exact match on those questions
    before and after fitting, and held out (``folds``-fold cross-validation; 0 or 1: not computed)."""
    base = base or SpanReader()
    examples = []
    with progress_bar(len(records), "span candidates", enabled=progress) as bar:
        for record in records:
            golds = {normalize_answer(a) for a in gold_answers(record)}
            if golds:
                cands = pipeline.span_candidates(str(record["input"]), task=task, reader=base)
                examples.append((cands, [normalize_answer(c.text) in golds for c in cands]))
            bar.update(1)
    if not examples:
        raise InputError("no training record has an answer")
    reader = fit_reader(examples, l2=l2, base=base, fitted_on=f"{len(examples)} questions, task {task}")
    stats = {"questions": len(examples), "with_right_candidate": round(100 * sum(any(y) for _, y in examples)
                                                                      / len(examples), 2),
             "em_before": _em(base, examples), "em_after": _em(reader, examples),
             "candidates_per_question": round(sum(len(c) for c, _ in examples) / len(examples), 1)}
    if folds > 1 and len(examples) >= 2 * folds:
        stats["em_held_out"] = held_out_em(examples, l2=l2, base=base, folds=folds)
    return reader, stats


def _em(reader: SpanReader, examples: Sequence[tuple[Sequence[Any], Sequence[bool]]]) -> float:
    right = sum(bool(c) and y[max(range(len(c)), key=lambda i: reader.score(c[i]))] for c, y in examples)
    return round(100 * right / len(examples), 2)


def held_out_em(examples: Sequence[tuple[Sequence[Any], Sequence[bool]]], *, l2: float, base: SpanReader,
                folds: int = 5) -> float:
    """Exact match of readers fitted on all folds but one, on the fold left out (every question once): what the
    fitted reader is worth on questions it did not see, unlike ``em_after``."""
    right = 0.0
    for k in range(folds):
        held = [e for i, e in enumerate(examples) if i % folds == k]
        try:
            fitted = fit_reader([e for i, e in enumerate(examples) if i % folds != k], l2=l2, base=base)
        except GenretError:  # no right candidate in these folds: nothing to fit, the base reader answers
            fitted = base
        right += _em(fitted, held) * len(held)
    return round(right / len(examples), 2)
