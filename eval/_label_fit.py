"""Fitting the label head on training claims: ``genret train labels``.

Each claim goes through its RAG pipeline as an answer would (that task's retriever, passages and prompt); the
generator's hidden state at the prompt's end is the claim's feature vector (``RagPipeline.label_features``), and
``fit_label_head`` fits a multinomial logistic regression on them.  Claims of several tasks with the same label set
can train one head.  The L2 penalty is chosen among ``l2s`` by held-out accuracy (k-fold cross-validation over the
claims); the figures per task — claims, the majority label's rate, held-out accuracy per penalty, accuracy on the
training claims — come back with the head.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from genret.core import InputError, progress_bar
from genret.retrieval.rag import LabelHead, RagPipeline, fit_label_head, held_out_predictions, resolve_answer_task

_BATCH = 8


def fit_label_head_on(data: Sequence[tuple[RagPipeline, Sequence[Mapping[str, Any]], str]], *,
                      depth: tuple[float, float] = (0.6, 0.6), l2s: Sequence[float] = (100.0, 300.0, 1000.0),
                      folds: int = 5, progress: bool = True) -> tuple[LabelHead, dict[str, Any]]:
    """A head fitted on ``data`` — (pipeline, KILT records with a label answer, task name) per task, every task with
    the same label set and the same generator model — and its figures."""
    if not data:
        raise InputError("no training data")
    label_sets = {resolve_answer_task(task, pipe.tasks)[1].labels for pipe, _, task in data}
    if len(label_sets) != 1 or not next(iter(label_sets)):
        raise InputError(f"the tasks' label sets differ or are empty: {sorted(label_sets)}")
    labels = next(iter(label_sets))
    demos = {pipe.config.demos if pipe.demo_source is not None else 0 for pipe, _, _ in data}
    if len(demos) != 1:
        raise InputError(f"one head reads one kind of prompt: demonstrations per prompt differ ({sorted(demos)})")
    models = {pipe.generator.config.model for pipe, _, _ in data}
    if len(models) != 1:
        raise InputError(f"one head reads one model's hidden states, got {sorted(models)}")
    feats: list[list[float]] = []
    golds: list[str] = []
    tasks: list[str] = []
    total = sum(len(records) for _, records, _ in data)
    with progress_bar(total, "label features", enabled=progress) as bar:
        for pipe, records, task in data:
            kept = [(r, g) for r in records if (g := _gold(r)) is not None]
            for r, g in kept:
                if g not in labels:
                    raise InputError(f"record {r.get('id')!r}: label {g!r} is not one of {list(labels)}")
            for start in range(0, len(kept), _BATCH):
                batch = kept[start:start + _BATCH]
                feats.extend(pipe.label_features([str(r["input"]) for r, _ in batch], task=task, depth=depth,
                                                 exclude=[[str(r.get("id", ""))] for r, _ in batch]))
                golds.extend(g for _, g in batch)
                tasks.extend(task for _ in batch)
                bar.update(len(batch))
            bar.update(len(records) - len(kept))
    if not golds:
        raise InputError("no training record has a label answer")
    held: dict[float, list[str]] = {}
    if folds > 1 and len(golds) >= 2 * folds:
        held = {l2: held_out_predictions(feats, golds, labels, l2=l2, folds=folds) for l2 in l2s}
    l2 = max(held, key=lambda k: (_accuracy(held[k], golds), -k)) if held else l2s[len(l2s) // 2]
    names = sorted(set(tasks))
    head = fit_label_head(feats, golds, labels, model=next(iter(models)), depth=depth, l2=l2, demos=next(iter(demos)),
                         fitted_on=f"{len(golds)} claims ({', '.join(names)}), L2 {l2:g}")
    fitted = head.pick(feats)
    stats: dict[str, Any] = {"labels": list(labels), "l2": l2, "claims": len(golds), "tasks": {}}
    for name in names:
        idx = [i for i, t in enumerate(tasks) if t == name]
        g = [golds[i] for i in idx]
        row = {"claims": len(idx), "majority": round(100 * Counter(g).most_common(1)[0][1] / len(g), 2),
               "accuracy_train": _accuracy([fitted[i] for i in idx], g)}
        for k, preds in held.items():
            row[f"accuracy_held_out_l2_{k:g}"] = _accuracy([preds[i] for i in idx], g)
        stats["tasks"][name] = row
    return head, stats


def _gold(record: Mapping[str, Any]) -> str | None:
    for out in record.get("output") or ():
        if isinstance(out, Mapping) and str(out.get("answer") or "").strip():
            return str(out["answer"]).strip()
    return None


def _accuracy(preds: Sequence[str], golds: Sequence[str]) -> float:
    return round(100 * sum(p == g for p, g in zip(preds, golds)) / max(1, len(golds)), 2)
