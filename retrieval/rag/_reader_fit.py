"""Fitting the span reader: ``fit_reader`` on scored candidates labelled right or wrong, and ``fit_span_reader`` on
training questions with gold answers run through a RAG pipeline (``genret train reader``).

Each training question goes through the pipeline as an answer would (its retriever, passages and prompt); the
reader's candidates are labelled right when normalised equal to a gold answer, and ``fit_reader`` fits the weights (a
list-wise softmax).  Exact match before and after (on the same questions), held out (k-fold cross-validation,
``held_out_em``: the figure to trust) and the share of questions whose passages hold a right candidate (the ceiling)
come back with the reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from genret.core import GenretError, InputError, progress_bar

from ._pipeline import RagPipeline
from ._reader import Candidate, SpanReader


def fit_reader(examples: Sequence[tuple[Sequence[Candidate], Sequence[bool]]], *, l2: float = 1.0,
               base: SpanReader | None = None, fitted_on: str = "") -> SpanReader:
    """Weights that maximise the probability of the right candidates (a softmax over each question's candidates;
    questions with no right candidate are skipped), with an L2 penalty ``l2`` on standardised features (L-BFGS,
    torch)."""
    import torch

    used = [(c, y) for c, y in examples if any(y)]
    if not used:
        raise GenretError("no training question has a right candidate among the passages: nothing to fit")
    names = sorted({k for c, _ in used for cand in c for k in cand.features})
    xs = [torch.tensor([[cand.features.get(k, 0.0) for k in names] for cand in c], dtype=torch.float64)
          for c, _ in used]
    ys = [torch.tensor(list(y), dtype=torch.bool) for _, y in used]
    allx = torch.cat(xs)
    mean, std = allx.mean(0), allx.std(0).clamp_min(1e-6)
    xs = [(x - mean) / std for x in xs]
    w = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        nll = sum(torch.logsumexp(x @ w, 0) - torch.logsumexp((x @ w)[y], 0) for x, y in zip(xs, ys)) / len(xs)
        total = nll + l2 * w.pow(2).sum() / (2 * len(xs))
        total.backward()
        return total

    opt.step(loss)
    raw = (w.detach() / std).tolist()  # weights on the raw features (the mean shifts every score alike)
    base = base or SpanReader()
    return base.model_copy(update={"weights": {k: round(v, 6) for k, v in zip(names, raw) if abs(v) > 1e-9},
                                   "fitted_on": fitted_on})


def fit_span_reader(pipeline: RagPipeline, records: Sequence[Mapping[str, Any]], *, normalize: Callable[[str], str],
                    task: str | None = None, l2: float = 1.0, base: SpanReader | None = None, folds: int = 5,
                    progress: bool = True) -> tuple[SpanReader, dict[str, Any]]:
    """A reader fitted on ``records`` (KILT records with answers), and its figures: exact match on those questions
    before and after fitting, and held out (``folds``-fold cross-validation; 0 or 1: not computed).  A candidate is
    right when ``normalize`` makes it equal to a gold answer (``genret train reader`` passes ``genret.eval``'s SQuAD
    normalisation: the retrieval layer does not import the evaluation's)."""
    base = base or SpanReader()
    examples = []
    with progress_bar(len(records), "span candidates", enabled=progress) as bar:
        for record in records:
            golds = {normalize(a) for a in _answers(record)}
            if golds:
                cands = pipeline.span_candidates(str(record["input"]), task=task, reader=base)
                examples.append((cands, [normalize(c.text) in golds for c in cands]))
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


def _answers(record: Mapping[str, Any]) -> set[str]:
    """The stripped non-empty ``answer`` strings of a KILT record's outputs."""
    return {str(out["answer"]).strip() for out in record.get("output") or ()
            if isinstance(out, Mapping) and str(out.get("answer") or "").strip()}
