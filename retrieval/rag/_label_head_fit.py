"""Fitting the label head: ``fit_label_head`` on feature vectors and their gold labels, and
``fit_label_head_on_claims`` on training claims run through RAG pipelines (``genret train labels``).

Each claim goes through its RAG pipeline as an answer would (that task's retriever, passages and prompt); the
generator's hidden state at the prompt's end is the claim's feature vector (``RagPipeline.label_features``), and
``fit_label_head`` fits a multinomial logistic regression on them.  Claims of several tasks with the same label set
can train one head.  The L2 penalty is chosen among ``l2s`` by held-out accuracy (k-fold cross-validation over the
claims, ``held_out_predictions``); the figures per task — claims, the majority label's rate, held-out accuracy per
penalty, accuracy on the training claims — come back with the head.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from genret.core import GenretError, InputError, progress_bar

from ._label_head import LabelHead
from ._pipeline import RagPipeline
from ._prompt import resolve_answer_task


def fit_label_head(features: Sequence[Sequence[float]], golds: Sequence[str], labels: Sequence[str], *,
                   model: str, depth: tuple[float, float] = (0.6, 0.6), l2: float = 300.0, demos: int = 0,
                   fitted_on: str = "") -> LabelHead:
    """A head fitted on ``features`` (one vector per claim) and their gold labels (each one of ``labels``):
    multinomial logistic regression, L2 penalty ``l2`` on the weights over standardised features (L-BFGS, torch)."""
    import torch

    labels = tuple(labels)
    if len(labels) < 2:
        raise GenretError("a label head needs at least two labels")
    if len(features) != len(golds) or not features:
        raise GenretError(f"{len(features)} feature vectors for {len(golds)} gold labels")
    unknown = sorted({g for g in golds if g not in labels})
    if unknown:
        raise GenretError(f"gold labels {unknown} are not in the label set {list(labels)}")
    if len(set(golds)) < 2:
        raise GenretError(f"every training claim has the label {golds[0]!r}: nothing to tell apart")
    x = torch.tensor([list(map(float, f)) for f in features], dtype=torch.float64)
    y = torch.tensor([labels.index(g) for g in golds])
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    w = torch.zeros(len(labels), x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(labels), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        total = torch.nn.functional.cross_entropy(z @ w.T + b, y) + l2 * w.pow(2).sum() / (2 * len(y))
        total.backward()
        return total

    opt.step(loss)
    return LabelHead(model=model, depth=depth, labels=labels, demos=demos, mean=_rounded(mean), scale=_rounded(scale),
                     weights=[_rounded(r) for r in w.detach()], bias=_rounded(b.detach()), fitted_on=fitted_on)


def _rounded(t) -> list[float]:
    return [float(f"{v:.7g}") for v in t.tolist()]


def held_out_predictions(features: Sequence[Sequence[float]], golds: Sequence[str], labels: Sequence[str], *,
                         l2: float, folds: int = 5, seed: int = 0) -> list[str]:
    """Each claim's label by a head fitted on all folds but its own (folds drawn at random, ``seed``): what a fitted
    head does on claims it did not see.  Folds whose rest holds one label only predict that label."""
    order = list(range(len(golds)))
    random.Random(seed).shuffle(order)
    fold = {i: k % folds for k, i in enumerate(order)}
    out = [""] * len(golds)
    for k in range(folds):
        train = [i for i in range(len(golds)) if fold[i] != k]
        held = [i for i in range(len(golds)) if fold[i] == k]
        if not held:
            continue
        if len({golds[i] for i in train}) < 2:
            picked = [golds[train[0]] if train else labels[0]] * len(held)
        else:
            head = fit_label_head([features[i] for i in train], [golds[i] for i in train], labels, model="", l2=l2)
            picked = head.pick([features[i] for i in held])
        for i, p in zip(held, picked):
            out[i] = p
    return out


_BATCH = 8


def fit_label_head_on_claims(data: Sequence[tuple[RagPipeline, Sequence[Mapping[str, Any]], str]], *,
                              depth: tuple[float, float] = (0.6, 0.6),
                              l2s: Sequence[float] = (100.0, 300.0, 1000.0), folds: int = 5,
                              progress: bool = True) -> tuple[LabelHead, dict[str, Any]]:
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
