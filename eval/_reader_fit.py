"""Fitting the span reader on questions with gold answers: ``genret train reader``.

Each training question goes through the RAG pipeline as an answer would (its retriever, passages and prompt); the
reader's candidates are labelled right when SQuAD-normalised equal to a gold answer, and ``fit_reader`` fits the
weights (a list-wise softmax).  Exact match before and after (the reader's own weights, on the same questions) and
the share of questions whose passages hold a right candidate (the ceiling) come back with the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genret.indexing import InputError, progress_bar
from genret.retrieval.rag import RagPipeline, SpanReader, fit_reader

from ._downstream_metrics import gold_answers, normalize_answer


def fit_span_reader(pipeline: RagPipeline, records: Sequence[Mapping[str, Any]], *, task: str | None = None,
                    l2: float = 1.0, base: SpanReader | None = None,
                    progress: bool = True) -> tuple[SpanReader, dict[str, Any]]:
    """A reader fitted on ``records`` (KILT records with answers), and its training figures."""
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

    def em(r: SpanReader) -> float:
        right = sum(bool(c) and y[max(range(len(c)), key=lambda i: r.score(c[i]))] for c, y in examples)
        return round(100 * right / len(examples), 2)

    stats = {"questions": len(examples), "with_right_candidate": round(100 * sum(any(y) for _, y in examples)
                                                                      / len(examples), 2),
             "em_before": em(base), "em_after": em(reader),
             "candidates_per_question": round(sum(len(c) for c, _ in examples) / len(examples), 1)}
    return reader, stats
