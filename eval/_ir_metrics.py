"""IR metrics through ``ir-measures`` (nDCG@10, MRR@10, MAP, R@k), per-query values, and paired significance tests.

The measures are ir-measures' own (pytrec_eval underneath, so ``trec_eval``'s definitions): ``nDCG@10`` with graded
relevance, ``RR@10`` (reciprocal rank of the first relevant document in the top 10; its mean is MRR@10), ``AP``
(average precision over the whole run; its mean is MAP) and ``R@k`` (the share of relevant documents in the top k).
The mean runs over every judged query that was asked; a query with no hits counts 0 (``trec_eval -c``), and
documents are ordered by score, ties by document id, as ``trec_eval`` orders them.  A run file genret writes
(``--trec-run``) and the qrels, scored by ``ir_measures`` or ``trec_eval``, give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._kilt_io import align, id_key
from ._retrieval_metrics import checked_retrieval_scores
from ._trec import Qrels, Run

__all__ = ["SIGNIFICANCE_TESTS", "ir_measure_names", "ir_scores", "kilt_per_query", "paired_p"]

SIGNIFICANCE_TESTS = ("t-test", "permutation", "none")


def _measures(ks: Iterable[int]) -> list:
    from ir_measures import AP, RR, R, nDCG

    out = [nDCG @ 10, RR @ 10, AP]
    return out + [R @ k for k in sorted(set(ks)) if k > 1]


def ir_measure_names(ks: Iterable[int]) -> list[str]:
    """The names the IR metrics are reported under (ir-measures' own: ``nDCG@10``, ``RR@10``, ``AP``, ``R@k``)."""
    return [str(m) for m in _measures(ks)]


def ir_scores(qrels: Qrels, run: Run, ks: Iterable[int], *,
              per_query: bool = False) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``({measure: mean}, {measure: {query id: value}})`` for ``run`` against ``qrels`` (the second empty unless
    ``per_query``); both empty when nothing is judged."""
    import ir_measures

    if not any(qrels.values()):
        return {}, {}
    measures = _measures(ks)
    hits = {qid: dict(docs) for qid, docs in run.items() if docs}
    if not hits:  # nothing retrieved for any query: every judged query scores 0
        zeros = {qid: 0.0 for qid in qrels}
        return ({str(m): 0.0 for m in measures}, {str(m): dict(zeros) for m in measures} if per_query else {})
    means = {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels, hits).items()}
    means = {name: means[name] for name in map(str, measures)}
    values: dict[str, dict[str, float]] = {}
    if per_query:
        for metric in ir_measures.iter_calc(measures, qrels, hits):
            values.setdefault(str(metric.measure), {})[metric.query_id] = float(metric.value)
    return means, values


def kilt_per_query(guesses: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]], ks: Sequence[int],
                   keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """KILT's retrieval metrics of every record alone: ``{metric: {record id: value}}`` (their mean is the mean)."""
    values: dict[str, dict[str, float]] = {}
    for guess, gold_rec in align(guesses, gold):
        qid = id_key(gold_rec["id"])
        for name, value in checked_retrieval_scores([(guess, gold_rec)], sorted(set(ks)), tuple(keys),
                                                    False).items():
            values.setdefault(name, {})[qid] = float(value)
    return values


def paired_p(a: Sequence[float], b: Sequence[float], test: str = "t-test", *, rounds: int = 10_000,
             seed: int = 0) -> float:
    """Two-sided p-value that paired per-query values ``a`` and ``b`` have the same mean.

    ``t-test``: Student's paired t-test (``scipy.stats.ttest_rel``).  ``permutation``: the paired randomisation
    test (each query's difference keeps or flips its sign; exact over all sign patterns up to ``rounds`` of them,
    else ``rounds`` random ones with a fixed ``seed``).  Identical values give 1.0.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError("paired values need equal lengths")
    if test not in SIGNIFICANCE_TESTS or test == "none":
        raise ValueError(f"unknown test {test!r}; use t-test or permutation")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) < 2 or not diff.any():
        return 1.0
    if test == "t-test":
        from scipy.stats import ttest_rel

        p = float(ttest_rel(a, b).pvalue)
        return 1.0 if math.isnan(p) else p
    observed = abs(diff.mean()) - 1e-12
    n = len(diff)
    if 2 ** n <= rounds:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs((signs * diff).mean(axis=1)) >= observed))
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(rounds, n))
    return float((1 + np.sum(np.abs((signs * diff).mean(axis=1)) >= observed)) / (rounds + 1))
