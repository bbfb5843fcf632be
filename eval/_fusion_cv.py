"""Fusion weights that transfer: the fit of ``genret tune`` cross-validated, shrunk toward the default weights,
and never below the best member alone on held-out records.

Weights fitted on a few hundred records and chosen from a grid of hundreds of fusions overfit: on mini-KILT, weights
fitted on train lowered dev on all three tasks.  So the *procedure* is what gets chosen, by ``folds``-fold
cross-validation: the records are cut into folds (a seeded shuffle); for each fold the grid is searched on the
other folds, the winner is shrunk toward the default weights by each ``alpha`` in ``SHRINK`` (shares
``(1 - alpha) * fitted + alpha * default``; alpha 1 is the untuned default) and scored on the fold left out.  The
members alone are scored the same way.  The procedure with the best held-out objective wins (ties: more shrinkage,
then the default, then a member alone); it is then applied to every record — the grid's best on all of them, shrunk
by the chosen alpha — or, when a member alone held out better than every fusion, that member is the result.

With ``simplest_within_noise`` (``adapt`` and ``train dense --fusion``: a member has just been trained on the task,
and the default weights were set for the members as shipped), the fusion must also earn its place over the best
member alone by the rule a second stage meets (``_keep_rule``: a held-out gain of one standard error, record by
record, and a sign test), or that member alone is the result: on a fold of a few dozen records the two are a draw,
and a member alone answers in a fraction of the time (the generative member decodes with an LM).  Mini-KILT,
climate_fever (runs/adapt18): on its 73 held-out claims the default fusion scored 53.4 against 52.1 for the adapted
dense encoder alone, a gain of about one claim, and on dev the dense encoder alone is ahead, 51.4 / 36.5 against
47.5 / 33.1; on scifact (81 claims: 71.3 against 56.2) and squad (1,000 questions: 91.0 against 86.6) the fusion
is far ahead.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._keep_rule import beyond_noise, paired_gain

SHRINK = (0.0, 0.25, 0.5, 0.75, 1.0)


def fold_rows(n: int, folds: int, seed: int) -> list[list[int]]:
    """``folds`` near-equal, disjoint lists of record indexes covering ``range(n)`` (a seeded shuffle)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[f::folds]) for f in range(folds)]


def shrunk(weights: Sequence[float], default: Sequence[float], alpha: float) -> tuple[float, ...]:
    """Weight shares ``(1 - alpha) * weights + alpha * default`` (each normalised to sum 1 first)."""
    a, b = sum(weights), sum(default)
    return tuple(round((1 - alpha) * w / a + alpha * d / b, 10) for w, d in zip(weights, default))


def label_of(alpha: float) -> str:
    """The label of the fitted-and-shrunk procedure with ``alpha`` (alpha 1 is the default weights)."""
    return "default weights" if alpha == 1 else f"fitted, shrink {alpha:g}"


def alpha_of(label: str) -> float | None:
    """``label_of``'s inverse: a fitted procedure's shrinkage (1 for the default weights); None for a member
    alone."""
    if label.endswith(" alone"):
        return None
    return 1.0 if label == "default weights" else float(label.rsplit(" ", 1)[1])


def procedure(label: str, fit: tuple[Sequence[float], str], names: Sequence[str],
              default: Sequence[float]) -> tuple[tuple[float, ...], str]:
    """The ``(weights, scheme)`` a procedure ``label`` gives where the grid's fit is ``fit`` (weights, scheme): a
    member alone and the default weights whatever the fit; a fitted procedure is the fit shrunk by its alpha."""
    alpha = alpha_of(label)
    if alpha is None:
        member = label.removesuffix(" alone")
        return tuple(1.0 if m == member else 0.0 for m in names), "minmax"
    if alpha == 1:
        return tuple(default), "minmax"
    return shrunk(fit[0], default, alpha), fit[1]


@dataclass
class CrossValidation:
    """What ``cross_validate`` found: the held-out metrics of every procedure (label -> {level..., objective}),
    the chosen label, and the ``(weights, scheme)`` it gives on all records."""

    folds: int
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)
    chosen: str = ""
    alpha: float | None = None
    weights: tuple[float, ...] = ()
    scheme: str = "minmax"
    fold_fits: list[tuple[tuple[float, ...], str]] = field(default_factory=list)
    seed: int = 0
    over_member: dict = field(default_factory=dict)  # with simplest_within_noise: the best fusion's paired gain

    def record(self, names: Sequence[str]) -> dict:
        """What a tuned-fusion file records of it (``search["cross_validation"]``; ``held_out_procedures`` reads
        it back)."""
        return {"folds": self.folds, "seed": self.seed, "chosen": self.chosen, "shrink": self.alpha,
                "fold_fits": [{"scheme": s, "weights": dict(zip(names, w))} for w, s in self.fold_fits],
                **({"over_member": self.over_member} if self.over_member else {})}


def cross_validate(fusions, step: float, methods: Sequence[str], folds: int, seed: int,
                   simplest_within_noise: bool = False) -> CrossValidation:
    """Choose a fusion procedure by cross-validation over ``fusions``' records (``eval._fusion_tune.Fusions``:
    ``names``, ``candidates``, ``pick``, ``evaluate`` and ``orders`` over a subset of records, its ``scorer``);
    see the module doc."""
    n = len(fusions.scorer.gold)
    parts = fold_rows(n, folds, seed)
    candidates = fusions.candidates(step, methods)
    # each candidate's metrics on each fold, once; a fold's fit reads the others' (size-weighted) objectives
    per_fold = [[fusions.evaluate(s, w, rows) for rows in parts] for w, s in candidates]
    sizes = [len(rows) for rows in parts]
    default, _ = fusions.defaults()
    levels = [k for k in per_fold[0][0] if k != "objective"] + ["objective"]
    procedures: dict[str, list[dict[str, float]]] = {}
    cv = CrossValidation(folds=folds, seed=seed)
    slot = {c: i for i, c in enumerate(candidates)}  # the default and the grid's corners are candidates already

    def on_fold(scheme: str, weights: tuple[float, ...], f: int) -> dict[str, float]:
        i = slot.get((weights, scheme))
        return per_fold[i][f] if i is not None else fusions.evaluate(scheme, weights, parts[f])

    for f in range(folds):
        totals = [sum(m[g]["objective"] * sizes[g] for g in range(folds) if g != f) for m in per_fold]
        w, s = candidates[fusions.pick(candidates, totals)]
        cv.fold_fits.append((w, s))
        for label in [label_of(alpha) for alpha in SHRINK] + [f"{name} alone" for name in fusions.names]:
            weights, scheme = procedure(label, (w, s), fusions.names, default)
            procedures.setdefault(label, []).append(on_fold(scheme, weights, f))
    for label, metrics in procedures.items():
        cv.held_out[label] = {lv: sum(m[lv] * k for m, k in zip(metrics, sizes)) / n for lv in levels}

    def rank(label: str) -> tuple:
        alpha = alpha_of(label)
        return (-round(cv.held_out[label]["objective"], 12), 1.0 if alpha is None else -alpha)

    cv.chosen = min(cv.held_out, key=rank)
    if simplest_within_noise and alpha_of(cv.chosen) is not None:
        names = list(fusions.names)
        member = min((f"{m} alone" for m in names), key=lambda label: (
            -round(cv.held_out[label]["objective"], 12), names.index(label.removesuffix(" alone"))))
        gain = paired_gain(_per_record(fusions, cv, parts, cv.chosen, default),
                           _per_record(fusions, cv, parts, member, default))
        cv.over_member = {"fusion": cv.chosen, "member": member.removesuffix(" alone"), **gain,
                          "kept": beyond_noise(gain)}
        if not cv.over_member["kept"]:
            cv.chosen = member
    cv.alpha = alpha_of(cv.chosen)
    fit = candidates[0]  # read only by a fitted procedure (alpha below 1)
    if cv.alpha is not None and cv.alpha < 1:
        everything = [sum(m[g]["objective"] * sizes[g] for g in range(folds)) for m in per_fold]
        fit = candidates[fusions.pick(candidates, everything)]
    cv.weights, cv.scheme = procedure(cv.chosen, fit, fusions.names, default)
    return cv


def _per_record(fusions, cv: CrossValidation, parts: list[list[int]], label: str,
                default: Sequence[float]) -> list[float]:
    """Each record's held-out objective under procedure ``label``: its fold ranked with the procedure fitted on the
    other folds (what ``held_out[label]`` averages)."""
    out = [0.0] * len(fusions.scorer.gold)
    for rows, fit in zip(parts, cv.fold_fits):
        weights, scheme = procedure(label, fit, fusions.names, default)
        for row, value in zip(rows, fusions.scorer.per_record(fusions.orders(scheme, weights, rows), rows)):
            out[row] = value
    return out


def held_out_procedures(cv_info: dict, names: Sequence[str], default: Sequence[float],
                        n: int) -> list[tuple[list[int], tuple[float, ...], str]]:
    """Per fold of a recorded cross-validation (``tune_fusion``'s ``search["cross_validation"]``, over ``n``
    records and members ``names``): ``(its rows, the (weights, scheme) the chosen procedure gives it)`` — fitted
    on the other folds, so that fusing each fold's records with its own weights ranks every record as the held-out
    estimate ``held out: CHOSEN`` scored it.  A fold fit is shrunk by the chosen alpha; a member alone and the
    default weights are the same on every fold."""
    parts = fold_rows(n, cv_info["folds"], cv_info["seed"])
    return [(rows, *procedure(cv_info["chosen"], (tuple(float(fit["weights"][m]) for m in names), fit["scheme"]),
                              names, default))
            for rows, fit in zip(parts, cv_info["fold_fits"])]
