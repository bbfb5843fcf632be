"""Fit the hybrid retriever's fusion on a dev file (``genret tune``): weights chosen by cross-validation
(``_fusion_cv``: the fit shrunk toward the default weights, never below the best member alone on held-out
records), or, with ``folds=0``, the grid's best on all records.

Each member runs once over the dev records at ``depth`` (its hit lists are kept: the generative one is slow);
then every candidate fusion is scored from those lists with the project's KILT metric (``score``, ``LEVELS``):
weighted min-max (the default method), and optionally z-score and RRF, each over a grid on the weight simplex
(step ``step``) plus the default weights (all members: 1 each, generative 0.25; and BM25 + dense alone).  The
simplex corners are the members alone, so on the dev data the grid's best is at least as good as the best
member and the defaults (on new data it need not be: cross-validation estimates that).  The objective is
``metric`` averaged over ``levels``; ties go to the BM25 + dense default, then the default weights, then fewer
members (a member weighed 0 is not even loaded), weighted min-max, and the weights nearest equal.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genret.core import ConfigError, GenretError, InputError, sha256_file
from genret.indexing import Index
from genret.retrieval import Hit, RetrievalConfig, Retriever, base_retrievers, default_members, load_retriever
from genret.retrieval.hybrid import (
    CALIBRATED_MEMBERS,
    DevInfo,
    IndexInfo,
    Objective,
    TunedFusion,
    fuse,
    fused_hits,
    member_contributions,
    weights_path,
    write_tuned,
)

from ._fusion_cv import cross_validate, held_out_procedures
from ._kilt_io import read_kilt
from ._retrieval_metrics import ids_list, rprecision_of_ids
from ._runner import LEVELS, search_records
from ._score import score

SCHEMES = {"minmax": ("weighted", "minmax"), "zscore": ("weighted", "zscore"), "rrf": ("rrf", "minmax")}
OLD_DEFAULT = ("bm25", "dense")


def simplex(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1 (not all 0)."""
    parts = round(1 / step)
    if parts < 1 or abs(parts * step - 1) > 1e-9:
        raise ConfigError(f"the grid step must divide 1 (e.g. 0.1, 0.25), got {step}")
    out = []
    for cut in itertools.combinations(range(parts + n - 1), n - 1):  # stars and bars
        counts = [b - a - 1 for a, b in zip((-1, *cut), (*cut, parts + n - 1))]
        out.append(tuple(round(c / parts, 10) for c in counts))
    return out


def run_members(index: Index, names: Sequence[str], gold: list[dict], depth: int, config: RetrievalConfig,
                task_name: str | None, progress: bool) -> dict[str, list[list[Hit]]]:
    """Each member's hit lists (``depth`` deep) for every record, members loaded and closed one at a time."""
    out: dict[str, list[list[Hit]]] = {}
    for name in names:
        r: Retriever = load_retriever(index, name, config)
        try:
            batch = getattr(getattr(config, name, None), "batch_size", None) or 64
            results = search_records(r, gold, depth, batch_size=batch,
                                     task_name=task_name, progress=progress)
        finally:
            closer = getattr(r, "close", None)
            if callable(closer):
                closer()
        out[name] = results
    return out


def _metric_ks(metric: str) -> tuple[int]:
    """The cut-off ``score`` needs for ``metric`` (checked: a rank metric without text)."""
    name, _, k = metric.partition("@")
    if not (metric == "Rprec" or (name in ("recall", "precision", "success_rate") and k.isdigit() and int(k) > 1)):
        raise ConfigError(f"unknown metric {metric!r}; use Rprec, recall@K, precision@K or success_rate@K (K ≥ 2)")
    return (int(k),) if k else (1,)


class Scorer:
    """The objective of ranked unit-id lists over the dev records (KILT metrics at the chosen levels)."""

    def __init__(self, gold: list[dict], hits: dict[str, list[list[Hit]]], metric: str, levels: Sequence[str]):
        self.gold, self.metric, self.levels = gold, metric, tuple(levels)
        self.ks = _metric_ks(metric)
        self.prov: dict[int, dict] = {}
        for lists in hits.values():
            for result in lists:
                for h in result:
                    if h.unit_id not in self.prov:
                        p = h.provenance
                        self.prov[h.unit_id] = {"wikipedia_id": p.wikipedia_id, "title": p.title,
                                                "start_paragraph_id": p.start_paragraph_id,
                                                "end_paragraph_id": p.end_paragraph_id}
        # R-Precision, the metric of every fit, is read straight from the ranked ids (the same KILT ids and the
        # same formula as ``score``, a tenth of the time: a fusion grid scores hundreds of thousands of rankings)
        self._ids: dict[str, tuple[dict[int, str | None], list[list[list[str]]]]] = {}
        if metric == "Rprec":
            for level in self.levels:
                keys = LEVELS[level]
                units = {u: next(iter(ids_list({"output": [{"provenance": [p]}]}, keys)[0]), None)
                         for u, p in self.prov.items()}
                self._ids[level] = (units, [ids_list(rec, keys) for rec in gold])

    def __call__(self, orders: list[list[int]], rows: Sequence[int] | None = None) -> dict[str, float]:
        """Metrics of whole ranked lists (``depth`` long: page level drops repeated pages, so a shorter cut
        could change page-level R-Precision), as ``genret eval -k DEPTH`` computes them; ``orders[i]`` ranks
        record ``rows[i]`` (default: every record, in order)."""
        if self._ids:
            return self._rprecision(orders, range(len(self.gold)) if rows is None else rows)
        gold = self.gold if rows is None else [self.gold[i] for i in rows]
        preds = [{"id": rec["id"], "output": [{"provenance": [self.prov[u] for u in order]}]}
                 for rec, order in zip(gold, orders)]
        out = {}
        for level in self.levels:
            metrics = score(preds, gold, ks=self.ks, rank_keys=LEVELS[level], downstream=False)["retrieval"]
            out[level] = metrics[self.metric]
        out["objective"] = sum(out[lv] for lv in self.levels) / len(self.levels)
        return out

    def per_record(self, orders: list[list[int]], rows: Sequence[int] | None = None) -> list[float]:
        """Each record's objective (its metric averaged over the levels), in ``rows`` order: what ``__call__``
        averages, for paired comparisons of two rankings of the same records."""
        rows = range(len(self.gold)) if rows is None else rows
        if not self._ids:
            return [self([order], [row])["objective"] for order, row in zip(orders, rows)]
        values = self._values(orders, rows)
        return [sum(v) / len(self.levels) for v in zip(*(values[lv] for lv in self.levels))]

    def _rprecision(self, orders: list[list[int]], rows: Sequence[int]) -> dict[str, float]:
        """``__call__`` for R-Precision: summed in record order and divided as ``score`` does (equal results)."""
        values = self._values(orders, rows)
        out: dict[str, float] = {}
        for level in self.levels:
            total = 0.0
            for v in values[level]:  # added one by one as ``score`` does (``sum`` may compensate, Python ≥ 3.12)
                total += v
            out[level] = total / len(orders) if orders else 0.0
        out["objective"] = sum(out[lv] for lv in self.levels) / len(self.levels)
        return out

    def _values(self, orders: list[list[int]], rows: Sequence[int]) -> dict[str, list[float]]:
        """Each record's R-Precision per level, read from the ranked ids: the page-level dedup of ``score`` stops
        once the longest gold output's worth of distinct ids is read."""
        out: dict[str, list[float]] = {}
        for level in self.levels:
            units, gold_ids = self._ids[level]
            values = out[level] = []
            for order, row in zip(orders, rows):
                wanted = gold_ids[row]
                need = max((len(ids) for ids in wanted), default=0)
                seen: dict[str, None] = {}
                for u in order:
                    if len(seen) >= need:
                        break
                    key = units[u]
                    if key is not None:
                        seen[key] = None
                try:
                    values.append(rprecision_of_ids(list(seen), wanted))
                except ValueError as exc:
                    raise InputError(f"gold id {self.gold[row].get('id')!r}: {exc}", field="output") from exc
        return out


def tune_fusion(index: Index | str | Path, dev: str | Path, *, members: Sequence[str] | None = None,
                config: RetrievalConfig | None = None, task_name: str | None = None,
                levels: Sequence[str] = ("page", "passage"), metric: str = "Rprec", max_records: int | None = None,
                depth: int | None = None, step: float = 0.1, methods: Sequence[str] = ("minmax", "zscore", "rrf"),
                out: str | Path | None = None, progress: bool = True, folds: int = 5, seed: int = 13,
                hits: dict[str, list[list[Hit]]] | None = None,
                simplest_within_noise: bool = False) -> tuple[TunedFusion, Path]:
    """Fit the fusion of ``members`` (default: every retriever the index supports) on the KILT file ``dev`` and
    write it (default ``INDEX/hybrid-weights.json``); returns the written document and its path.  ``folds`` ≥ 2:
    the fit is cross-validated, shrunk toward the default weights and falls back to a member alone where that
    held out better (``_fusion_cv``; fewer folds when the file is small, none below 4 records); 0: the grid's best
    on all records, as before.  ``hits``: the members' hit lists for the records of ``dev`` (``depth`` deep, as
    ``run_members`` returns them), to reuse instead of searching again.  ``simplest_within_noise``: the fusion
    only where it beats the best member alone beyond noise (``_fusion_cv``; for a member just trained on the
    task)."""
    unknown = [lv for lv in levels if lv not in LEVELS] + [m for m in methods if m not in SCHEMES]
    if unknown or not levels or not methods:
        raise ConfigError(f"unknown level/method {unknown}; levels: {sorted(LEVELS)}, methods: {sorted(SCHEMES)}")
    _metric_ks(metric)
    if folds < 0 or folds == 1:
        raise ConfigError(f"folds: 0 (fit on every record) or 2 or more for cross-validation, got {folds}")
    config = config or RetrievalConfig()
    depth = depth or config.hybrid.depth
    opened = index if isinstance(index, Index) else Index(index)
    try:
        # the query memory only when named: tuned on the questions it holds, it would look perfect
        names = list(members) if members else default_members(opened)
        have = base_retrievers(opened)
        if len(set(names)) != len(names) or any(n not in have for n in names) or len(names) < 2:
            raise ConfigError(f"tuning needs two or more distinct members the index supports ({have}), got {names}")
        gold = read_kilt(dev)[:max_records]
        if not gold:
            raise GenretError(f"{dev} holds no records")
        t0 = time.perf_counter()
        if hits is None:
            hits = run_members(opened, names, gold, depth, config, task_name, progress)
        elif any(len(hits.get(n, ())) != len(gold) for n in names):
            raise ConfigError(f"tune_fusion: hits must hold one list a record of {dev} for each of {names}")
        seconds = time.perf_counter() - t0
        index_info = IndexInfo(corpus_sha256=opened.manifest.corpus.sha256, units=len(opened.store))
    finally:
        if not isinstance(index, Index):
            opened.close()
    scorer = Scorer(gold, hits, metric, levels)
    results = {f"{n} alone": scorer([[h.unit_id for h in r] for r in hits[n]]) for n in names}
    fusions = Fusions(names, hits, scorer, depth, config.hybrid.rrf_k)
    (weights, scheme), tried = fusions.search(step, methods, results)
    folds = min(folds, len(gold) // 2) if folds >= 2 else 0
    cv_info: dict[str, Any] = {"folds": 0}
    if folds >= 2:
        cv = cross_validate(fusions, step, methods, folds, seed, simplest_within_noise)
        weights, scheme = cv.weights, cv.scheme
        results.update({f"held out: {label}": m for label, m in cv.held_out.items()})
        cv_info = cv.record(names)
    method, normalize = SCHEMES[scheme]
    results["fused (chosen)"] = best_metrics = fusions.evaluate(scheme, weights)
    doc = TunedFusion(
        genret_version=_version(), created=datetime.now(UTC).isoformat(timespec="seconds"), members=names,
        method=method, normalize=normalize, rrf_k=config.hybrid.rrf_k, depth=depth,
        weights=dict(zip(names, weights)), objective=Objective(metric=metric, levels=list(levels)),
        dev=DevInfo(file=str(Path(dev).resolve()), sha256=sha256_file(Path(dev)), records=len(gold), task=task_name),
        index=index_info, member_settings={n: _settings(config, n) for n in names}, results=results,
        search={"step": step, "methods": list(methods), "candidates": tried, "member_seconds": round(seconds, 3),
                "objective": best_metrics["objective"], "cross_validation": cv_info})
    path = write_tuned(out or weights_path(index if isinstance(index, Index) else Path(index)), doc)
    return doc, path


class Fusions:
    """Fused rankings of the kept hit lists for any (scheme, weights); each member's per-record contributions
    (normalised scores or reciprocal ranks) are computed once per scheme."""

    def __init__(self, names: Sequence[str], hits: dict[str, list[list[Hit]]], scorer: Scorer, depth: int,
                 rrf_k: int) -> None:
        self.names, self.hits, self.scorer, self.depth, self.rrf_k = list(names), hits, scorer, depth, rrf_k
        self._contrib: dict[str, dict[str, list[dict[int, float]]]] = {}
        self._arrays: dict[str, tuple[Any, Any, Any]] = {}

    def contributions(self, scheme: str) -> dict[str, list[dict[int, float]]]:
        if scheme not in self._contrib:
            method, normalize = SCHEMES[scheme]
            self._contrib[scheme] = {n: [member_contributions(r, method, normalize, self.rrf_k,
                                                             calibrated=n in CALIBRATED_MEMBERS)
                                        for r in self.hits[n]]
                                     for n in self.names}
        return self._contrib[scheme]

    def evaluate(self, scheme: str, weights: Sequence[float], rows: Sequence[int] | None = None) -> dict[str, float]:
        """The metrics of fusing with ``weights`` (one per member, in member order; 0 leaves a member out), over
        the records ``rows`` (default: all)."""
        rows = range(len(self.scorer.gold)) if rows is None else rows
        return self.scorer(self.orders(scheme, weights, rows), rows)

    def orders(self, scheme: str, weights: Sequence[float], rows: Sequence[int]) -> list[list[int]]:
        """The fused rankings (unit ids, ``depth`` deep) of the records ``rows`` with ``weights``: those of the
        hybrid retriever (``fuse``, ``fused_order``), computed for all rows at once."""
        import numpy as np

        uids, values, present = self.arrays(scheme)
        picked = np.asarray(rows, dtype=np.intp)
        fused = np.zeros((len(picked), uids.shape[1]))
        kept = np.zeros(fused.shape, dtype=bool)
        for k, w in enumerate(weights):
            if w:  # member by member, as ``fuse`` adds them (an absent unit adds w · 0, which changes no sum)
                fused += float(w) * values[k][picked]
                kept |= present[k][picked]
        fused[~kept] = -np.inf
        # best first, ties by ascending unit id (the columns' order), as ``fused_order``
        order = np.argsort(-fused, axis=1, kind="stable")[:, :self.depth]
        counts = np.minimum(kept.sum(axis=1), self.depth)
        ranked = np.take_along_axis(uids[picked], order, axis=1)
        return [ranked[i, :c].tolist() for i, c in enumerate(counts.tolist())]

    def arrays(self, scheme: str) -> tuple[Any, Any, Any]:
        """``scheme``'s contributions as arrays: every record's units (ascending ids, padded with -1; records ×
        width), each member's contribution to each (members × records × width, 0 where absent) and whether it
        returned it — so that a fusion of all records is a few array operations."""
        import numpy as np

        if scheme not in self._arrays:
            contrib = self.contributions(scheme)
            n = len(self.scorer.gold)
            units = [sorted(set().union(*(contrib[m][i] for m in self.names))) for i in range(n)]
            width = max((len(u) for u in units), default=0)
            uids = np.full((n, width), -1, dtype=np.int64)
            values = np.zeros((len(self.names), n, width))
            present = np.zeros(values.shape, dtype=bool)
            for i, ids in enumerate(units):
                uids[i, :len(ids)] = ids
                column = {u: j for j, u in enumerate(ids)}
                for k, name in enumerate(self.names):
                    for u, c in contrib[name][i].items():
                        values[k, i, column[u]] = c
                        present[k, i, column[u]] = True
            self._arrays[scheme] = (uids, values, present)
        return self._arrays[scheme]

    def ranked(self, scheme: str, weights: Sequence[float], row: int) -> list[Hit]:
        """Record ``row``'s fused hit list (``depth`` deep) as the hybrid retriever returns it with ``weights``
        (``fused_hits``: fused scores, provenance and text from the first member that returned a unit)."""
        contrib = self.contributions(scheme)
        used = [(n, w) for n, w in zip(self.names, weights) if w]
        return fused_hits({n: self.hits[n][row] for n, _ in used}, fuse([(w, contrib[n][row]) for n, w in used]),
                          self.depth)

    def held_out(self, doc: TunedFusion) -> list[list[Hit]]:
        """Every record's fused hit list as ``doc`` (``tune_fusion``'s over these records and members) estimated
        it held out: with the chosen procedure fitted on the folds without the record
        (``_fusion_cv.held_out_procedures``), so that their metrics are the ``held out: CHOSEN`` result.  Without
        cross-validation (``folds`` 0): ``doc``'s weights on every record, an in-sample ranking."""
        n = len(self.scorer.gold)
        cv_info = doc.search.get("cross_validation", {})
        if cv_info.get("folds"):
            procedures = held_out_procedures(cv_info, self.names, self.defaults()[0], n)
        else:
            scheme = next(s for s, v in SCHEMES.items() if v == (doc.method, doc.normalize))
            procedures = [(list(range(n)), tuple(float(doc.weights[m]) for m in self.names), scheme)]
        out: list[list[Hit]] = [[] for _ in range(n)]
        for rows, weights, scheme in procedures:
            for r in rows:
                out[r] = self.ranked(scheme, weights, r)
        return out

    def defaults(self) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
        """``(the default weights: 1 each, generative 0.25; BM25 + dense alone, when there are more members)``."""
        from genret.retrieval import DEFAULT_MEMBER_WEIGHTS

        equal = tuple(DEFAULT_MEMBER_WEIGHTS.get(m, 1.0) for m in self.names)
        has_old = all(m in self.names for m in OLD_DEFAULT) and len(self.names) > len(OLD_DEFAULT)
        return equal, (tuple(1.0 if m in OLD_DEFAULT else 0.0 for m in self.names) if has_old else None)

    def candidates(self, step: float, methods: Sequence[str]) -> list[tuple[tuple[float, ...], str]]:
        """The defaults, then every grid point of the simplex for each scheme in ``methods``."""
        equal, old = self.defaults()
        return [(equal, "minmax")] + ([(old, "minmax")] if old else []) + \
            [(w, s) for s in methods for w in simplex(len(self.names), step)]

    def pick(self, candidates: Sequence[tuple[tuple[float, ...], str]], values: Sequence[float]) -> int:
        """The index of the best candidate by its objective ``values``; ties go to the BM25 + dense default, then
        the default weights, fewer members, weighted min-max, and the weights nearest equal."""
        equal, old = self.defaults()
        n, order = len(self.names), {s: i for i, s in enumerate(SCHEMES)}

        def key(j: int) -> tuple:
            w, s = candidates[j]
            shares = [x / sum(w) for x in w]
            pref = 0 if old and s == "minmax" and _same(shares, old) else \
                1 if s == "minmax" and _same(shares, equal) else 2
            return (-round(values[j], 12), pref, sum(1 for x in w if x), order[s], sum(abs(x - 1 / n) for x in shares))

        return min(range(len(candidates)), key=key)

    def search(self, step: float, methods: Sequence[str], results: dict) -> tuple[tuple[tuple[float, ...], str], int]:
        """The best ``(weights, scheme)`` over the grid and the default candidates on every record, and how many
        were tried (``results`` gains the defaults' metrics)."""
        equal, old = self.defaults()
        results["default weights"] = self.evaluate("minmax", equal)
        if old:
            results["default: bm25+dense"] = self.evaluate("minmax", old)
        candidates = self.candidates(step, methods)
        values = [self.evaluate(s, w)["objective"] for w, s in candidates]
        return candidates[self.pick(candidates, values)], len(candidates)


def _same(shares: Sequence[float], weights: Sequence[float]) -> bool:
    total = sum(weights)
    return all(abs(a - b / total) < 1e-9 for a, b in zip(shares, weights))


def _settings(config: RetrievalConfig, name: str) -> dict[str, Any]:
    section = getattr(config, name, None)
    return section.model_dump(mode="json", exclude={"prompts"}) if section is not None else {}


def _version() -> str:
    from genret import __version__

    return __version__
