"""Hybrid retrieval: fuse the rankings of several retrievers (e.g. BM25 + dense, or + generative) per query.

Two fusion methods, over the hits each member returns at ``depth`` (or ``k``, if larger):

* ``rrf`` (reciprocal rank fusion): ``score(d) = Σ_r w_r / (rrf_k + rank_r(d))``, a member that did not
  return ``d`` adding nothing.
* ``weighted``: ``score(d) = Σ_r w_r · norm_r(score_r(d))``, with each member's scores normalised per
  query (``minmax``: to [0, 1], all-equal scores → 1; ``zscore``: (s − mean) / std, std 0 → 0) and a
  member that did not return ``d`` contributing 0.  With ``zscore`` a hit below its member's mean
  counts negatively, so it ranks below one that member did not return at all.

Ties are broken by ascending unit id.  Weights default to 1 for every member.

Members: ``retrievers`` when given; else the members ``weights`` names; else those of the weights fitted by
``genret tune`` and saved in the index (``_weights``, unless ``tuned="off"``); else every retriever
the index supports (BM25, dense, and the generative one where the index has an FM-index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._contract import Hit, Retriever

# A member's weight when none is given: 1, but the generative retriever's 0.25.  Fitted on the train splits of the
# three mini-KILT tasks (`genret tune`, docs/src/results.md), the generative member's share was 0.1-0.2 of the total on
# every task; at equal weights it lowered scifact's dev R-Precision by 5 / 9 points (page / passage).
# The query memory's: 0 — it joins a hybrid by fitted or explicit weights only, and the default fusion that fitted
# weights are shrunk toward is the hybrid without it (at the equal weight of 1 as that target, climate_fever's
# cross-validation chose it for a held-out fold where 37 of 73 claims had a training claim near enough, and dev fell
# from 51.9 / 34.8 to 47.5 / 32.6: runs/adapt12).
DEFAULT_MEMBER_WEIGHTS: dict[str, float] = {"generative": 0.25, "memory": 0.0}
# Members whose scores are calibrated — in [0, 1], the same score meaning the same for every query — and are fused as
# they are, not normalised per query (weighted fusion; RRF reads ranks only): the query memory, whose score is the
# similarity of the nearest training question, so that a query with no close one gets little from it.  Never default
# members: they join a hybrid by fitted or explicit weights only.
CALIBRATED_MEMBERS = frozenset({"memory"})


def default_weight(name: str) -> float:
    """The weight of member ``name`` when none is given."""
    return DEFAULT_MEMBER_WEIGHTS.get(name, 1.0)


class HybridConfig(BaseModel):
    """Settings of the hybrid retriever: which members, how to fuse, how deep each member searches."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    retrievers: list[str] | None = Field(None, min_length=1, description="member retrievers, by registry name "
                                         "(None: see the module doc — every retriever the index supports)")
    # weighted min-max fusion beat the best single retriever on every mini-KILT task and level; RRF did not
    method: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = Field(60, ge=0, description="RRF rank offset")
    weights: dict[str, float] | None = Field(None, description="weight per member (default 1 each, generative 0.25)")
    normalize: Literal["minmax", "zscore"] = Field("minmax", description="score normalisation (weighted)")
    depth: int = Field(100, ge=1, description="hits fetched per member before fusion")
    tuned: str = Field("auto", min_length=1,
                       description="weights fitted by `genret tune`: 'auto' (the index's hybrid-weights.json when "
                                   "present), 'off', or a file path; used unless weights (or a different method, "
                                   "normalisation or member set) are given explicitly")

    @model_validator(mode="after")
    def _check(self) -> HybridConfig:
        names = self.retrievers if self.retrievers is not None else list(self.weights or ())
        if len(set(names)) != len(names):
            raise ValueError(f"hybrid retrievers repeat a name: {names}")
        if "hybrid" in names:
            raise ValueError("a hybrid retriever cannot be its own member")
        if self.weights is not None:  # with no members named, only the values (members: HybridRetriever's)
            _check_weights(self.weights, names if self.retrievers is not None else None)
        return self

    def weight(self, name: str) -> float:
        """The weight of member ``name`` (``default_weight`` when not given)."""
        return default_weight(name) if self.weights is None else float(self.weights.get(name, default_weight(name)))


def _check_weights(weights: Mapping[str, float], members: Sequence[str] | None) -> None:
    bad = {n: w for n, w in weights.items() if not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"weights must be finite and ≥ 0: {bad}")
    if members is None:
        return
    unknown = sorted(set(weights) - set(members))
    if unknown:
        raise ValueError(f"weights name {unknown}, which are not hybrid members {list(members)}")
    if all(weights.get(n, default_weight(n)) == 0 for n in members):
        raise ValueError("at least one hybrid member needs a weight above 0")


def member_contributions(hits: Sequence[Hit], method: str, normalize: str, rrf_k: int, *,
                         calibrated: bool = False) -> dict[int, float]:
    """``{unit id: unweighted contribution}`` of one member's hit list (best first) for one query; the fused
    score is ``Σ_r w_r · contribution_r`` (a unit listed twice counts once, at its best rank).  ``calibrated``
    (a member of ``CALIBRATED_MEMBERS``): weighted fusion takes its scores as they are."""
    first: dict[int, int] = {}
    for pos, hit in enumerate(hits):
        first.setdefault(hit.unit_id, pos)
    if method == "rrf":
        return {uid: 1.0 / (rrf_k + pos + 1) for uid, pos in first.items()}
    positions = sorted(first.values())
    if calibrated:
        return {hits[p].unit_id: float(hits[p].score) for p in positions}
    norm = _normalized([hits[p].score for p in positions], normalize)
    return {hits[p].unit_id: v for p, v in zip(positions, norm)}


def fuse(contributions: Sequence[tuple[float, Mapping[int, float]]]) -> dict[int, float]:
    """``{unit id: Σ w · contribution}`` over ``(weight, contributions)`` pairs, summed in the order given."""
    fused: dict[int, float] = {}
    for w, contrib in contributions:
        for uid, c in contrib.items():
            fused[uid] = fused.get(uid, 0.0) + w * c
    return fused


def fused_order(fused: Mapping[int, float], k: int) -> list[int]:
    """The best ``k`` unit ids by fused score, ties by ascending unit id."""
    return sorted(fused, key=lambda uid: (-fused[uid], uid))[:k]


def _normalized(scores: list[float], how: str) -> list[float]:
    """One member's scores for one query, normalised (see the module doc)."""
    if not scores:
        return []
    if how == "minmax":
        lo, hi = min(scores), max(scores)
        return [1.0] * len(scores) if hi == lo else [(s - lo) / (hi - lo) for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0] * len(scores) if std == 0 else [(s - mean) / std for s in scores]


class HybridRetriever(Retriever):
    """Fuses the hits of already-constructed member retrievers ``{name: retriever}`` (any ``Retriever``:
    BM25, dense, generative, …) per query, as ``config`` says (see the module doc).

    Contract: as ``Retriever``; each member's ``batch_search(queries, max(depth, k), task=task)`` is
    called once a batch (members in the order given; ``task`` is passed on), and the fused list is cut
    to ``k``.  A hit's score is the fused score; its provenance and text come from the first member
    (in member order) that returned the unit, its ``matched`` n-grams from the first that has any, its
    ``member_ranks`` from every member that returned it.
    Weights in ``config`` must name members.  Thread-safe when the members are.  ``owns_members=False``: the
    members belong to someone else (a server's snapshot that also serves them alone), and ``close`` leaves them open.
    """

    name = "hybrid"

    def __init__(self, retrievers: Mapping[str, Retriever], config: HybridConfig | None = None, *,
                 owns_members: bool = True) -> None:
        if not retrievers:
            raise ValueError("a hybrid retriever needs at least one member")
        config = config or HybridConfig(retrievers=list(retrievers))
        if config.retrievers is None:
            config = config.model_copy(update={"retrievers": list(retrievers)})
        self.config = config
        self.members: dict[str, Retriever] = dict(retrievers)
        self.owns_members = owns_members
        self.tuned_from: str | None = None  # the fitted-weights file the config came from (load_hybrid)
        if self.config.weights is not None:
            _check_weights(self.config.weights, list(self.members))
        self.weights = {n: self.config.weight(n) for n in self.members}
        self.granularities = tuple(sorted({g for r in self.members.values() for g in r.granularities}))

    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: str | None = None) -> list[list[Hit]]:
        """Fused hits; a ``granularity`` goes to the members that rank by it (the others rank as they do)."""
        self.check_search(k, granularity)
        if not queries:
            return []
        depth = max(self.config.depth, k)
        per_member = {}
        for name, r in self.members.items():
            if granularity is not None and granularity in r.granularities:
                per_member[name] = r.batch_search(queries, depth, task=task, granularity=granularity)
            else:
                per_member[name] = r.batch_search(queries, depth, task=task)
        return [self._fuse({name: results[i] for name, results in per_member.items()}, k)
                for i in range(len(queries))]

    def fused_scores(self, member_hits: Mapping[str, Sequence[Hit]]) -> dict[int, float]:
        """``{unit id: fused score}`` for one query's member hit lists (each best first)."""
        cfg = self.config
        return fuse([(self.weights[name], member_contributions(hits, cfg.method, cfg.normalize, cfg.rrf_k,
                                                                  calibrated=name in CALIBRATED_MEMBERS))
                     for name, hits in member_hits.items()])

    def _fuse(self, member_hits: Mapping[str, Sequence[Hit]], k: int) -> list[Hit]:
        return fused_hits(member_hits, self.fused_scores(member_hits), k)

    def close(self) -> None:
        """Close the members (e.g. BM25's Lucene searcher), when they are its own."""
        if self.owns_members:
            for member in self.members.values():
                member.close()


def fused_hits(member_hits: Mapping[str, Sequence[Hit]], fused: Mapping[int, float], k: int) -> list[Hit]:
    """The best ``k`` units of ``fused`` (``fuse``'s scores of these member hit lists) as hits: the fused score;
    provenance and text from the first member (in the order given) that returned the unit, ``matched`` n-grams from
    the first that has any, ``member_ranks`` from every member that returned it."""
    source: dict[int, Hit] = {}
    matched: dict[int, tuple[tuple[str, float], ...]] = {}
    ranks: dict[int, list[tuple[str, int]]] = {}
    for name, hits in member_hits.items():
        for hit in hits:
            source.setdefault(hit.unit_id, hit)
            ranks.setdefault(hit.unit_id, []).append((name, hit.rank))
            if hit.matched and hit.unit_id not in matched:
                matched[hit.unit_id] = hit.matched
    order = fused_order(fused, k)
    return [Hit(uid, fused[uid], rank, source[uid].provenance, source[uid].text, matched.get(uid, ()),
                tuple(ranks[uid])) for rank, uid in enumerate(order, start=1)]
