"""Cross-validated fusion (``eval._fusion_cv``): folds, shrinkage, the procedure that held out best, the fallback
to a member alone, and ``genret tune``'s file and table with it."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from genret.core import ConfigError
from genret.eval import tune_fusion
from genret.eval._fusion_cv import SHRINK, cross_validate, fold_rows, shrunk
from genret.eval._fusion_tune import SCHEMES, Fusions, Scorer
from genret.retrieval import Hit, Provenance, RetrievalConfig


def _hit(uid: int, score: float, rank: int) -> Hit:
    page = f"p{uid // 2}"
    return Hit(uid, score, rank, Provenance(page, page, uid % 2 + 1, uid % 2 + 1, 0, 1), None)


def _members(n: int, units: int, skill: dict[str, float], seed: int):
    """Gold of ``n`` records and, per member, ranked lists that put the gold unit first with probability
    ``skill[member]`` (else a random order)."""
    rng = random.Random(seed)
    golds = [rng.randrange(units) for _ in range(n)]
    gold = [{"id": str(i), "input": "q", "output": [{"provenance": [
        {"wikipedia_id": f"p{g // 2}", "start_paragraph_id": g % 2 + 1}]}]} for i, g in enumerate(golds)]
    hits = {}
    for name, p in skill.items():
        lists = []
        for g in golds:
            order = rng.sample(range(units), units)
            if rng.random() < p:
                order.remove(g)
                order.insert(0, g)
            lists.append([_hit(u, 1.0 - 0.05 * r + rng.random() * 0.01, r + 1) for r, u in enumerate(order)])
        hits[name] = lists
    return gold, hits


def test_folds_cover_the_records_once_and_shrinking_moves_toward_the_default():
    parts = fold_rows(23, 5, seed=3)
    assert sorted(i for p in parts for i in p) == list(range(23))
    assert {len(p) for p in parts} <= {4, 5}
    assert fold_rows(23, 5, seed=3) == parts and fold_rows(23, 5, seed=4) != parts
    assert shrunk((1.0, 0.0), (1.0, 1.0), 0.0) == (1.0, 0.0)
    assert shrunk((1.0, 0.0), (1.0, 1.0), 0.5) == (0.75, 0.25)
    assert shrunk((3.0, 1.0), (1.0, 1.0), 1.0) == (0.5, 0.5)


@pytest.mark.parametrize("skill,seed", [({"bm25": 0.6, "dense": 0.6}, 0), ({"bm25": 0.9, "dense": 0.05}, 1),
                                        ({"bm25": 0.3, "dense": 0.5, "generative": 0.4}, 2)])
def test_the_procedure_that_held_out_best_is_chosen_and_applied(skill, seed):
    gold, hits = _members(40, 12, skill, seed)
    names = list(skill)
    scorer = Scorer(gold, hits, "Rprec", ["page", "passage"])
    fusions = Fusions(names, hits, scorer, depth=12, rrf_k=60)
    cv = cross_validate(fusions, 0.25, ["minmax", "rrf"], folds=4, seed=7)
    labels = {"default weights", *(f"fitted, shrink {a:g}" for a in SHRINK if a < 1), *(f"{n} alone" for n in names)}
    assert set(cv.held_out) == labels and cv.folds == 4 and len(cv.fold_fits) == 4
    best = max(m["objective"] for m in cv.held_out.values())
    assert cv.held_out[cv.chosen]["objective"] == pytest.approx(best)
    # never below the best member alone on held-out records
    assert cv.held_out[cv.chosen]["objective"] >= max(cv.held_out[f"{n} alone"]["objective"] for n in names)
    # held-out metrics are size-weighted means over the folds: the default's equal its score on all records
    default, _ = fusions.defaults()
    assert cv.held_out["default weights"]["objective"] == pytest.approx(
        fusions.evaluate("minmax", default)["objective"])
    if cv.chosen == "default weights":
        assert cv.weights == default
    elif cv.chosen.endswith(" alone"):
        assert sorted(cv.weights) == [0.0] * (len(names) - 1) + [1.0]
    else:
        assert cv.alpha is not None and 0 <= cv.alpha < 1 and sum(cv.weights) == pytest.approx(1.0)


def test_a_member_far_better_than_the_rest_is_never_diluted_below_itself():
    gold, hits = _members(40, 12, {"bm25": 0.95, "dense": 0.0}, seed=5)
    fusions = Fusions(["bm25", "dense"], hits, Scorer(gold, hits, "Rprec", ["page"]), depth=12, rrf_k=60)
    cv = cross_validate(fusions, 0.1, ["minmax"], folds=5, seed=1)
    assert cv.held_out[cv.chosen]["objective"] >= cv.held_out["bm25 alone"]["objective"]
    assert cv.held_out["default weights"]["objective"] < cv.held_out["bm25 alone"]["objective"]
    assert cv.chosen != "default weights"


def _complementary(n: int, units: int, seed: int):
    """Gold of ``n`` records and two members that each rank the gold unit first on about half of them and second on
    the rest (the other distractors in random orders): either alone is right half the time, fused nearly always."""
    rng = random.Random(seed)
    golds = [rng.randrange(units) for _ in range(n)]
    gold = [{"id": str(i), "input": "q", "output": [{"provenance": [
        {"wikipedia_id": f"p{g // 2}", "start_paragraph_id": g % 2 + 1}]}]} for i, g in enumerate(golds)]
    hits: dict[str, list] = {"bm25": [], "dense": []}
    for g in golds:
        first = rng.choice(list(hits))
        for name, lists in hits.items():
            order = [u for u in rng.sample(range(units), units) if u != g]
            order.insert(0 if name == first else 1, g)
            lists.append([_hit(u, 1.0 - 0.05 * r, r + 1) for r, u in enumerate(order)])
    return gold, hits


def test_after_training_a_fusion_must_beat_the_best_member_alone_beyond_noise():
    """``simplest_within_noise``: the fusion only where its held-out gain over the best member alone, record by
    record, is a standard error or more with a sign test's p of 5 % or less; else that member alone."""
    gold, hits = _complementary(40, 12, seed=4)
    fusions = Fusions(["bm25", "dense"], hits, Scorer(gold, hits, "Rprec", ["page", "passage"]), depth=12, rrf_k=60)
    cv = cross_validate(fusions, 0.25, ["minmax"], folds=4, seed=7, simplest_within_noise=True)
    over = cv.over_member
    assert not cv.chosen.endswith(" alone") and over["kept"] and over["fusion"] == cv.chosen
    member = f"{over['member']} alone"
    assert cv.held_out[member]["objective"] == max(cv.held_out[f"{n} alone"]["objective"] for n in ("bm25", "dense"))
    # the paired gain is the held-out difference, in points
    assert over["mean"] == pytest.approx(100 * (cv.held_out[cv.chosen]["objective"] - cv.held_out[member]["objective"]),
                                         abs=0.01)
    assert over["mean"] >= over["se"] > 0 and over["p"] <= 0.05 and over["better"] > over["worse"]
    assert cv.record(["bm25", "dense"])["over_member"] == over
    # members of equal skill: the fusion that held out best is no better than one of them beyond noise
    gold, hits = _members(40, 12, {"bm25": 0.6, "dense": 0.6}, seed=0)
    fusions = Fusions(["bm25", "dense"], hits, Scorer(gold, hits, "Rprec", ["page", "passage"]), depth=12, rrf_k=60)
    plain = cross_validate(fusions, 0.25, ["minmax", "rrf"], folds=4, seed=7)
    cv = cross_validate(fusions, 0.25, ["minmax", "rrf"], folds=4, seed=7, simplest_within_noise=True)
    assert not plain.chosen.endswith(" alone") and not plain.over_member
    assert cv.over_member["fusion"] == plain.chosen and not cv.over_member["kept"]
    assert cv.chosen == f"{cv.over_member['member']} alone" and cv.alpha is None
    assert sorted(cv.weights) == [0.0, 1.0] and "over_member" in cv.record(["bm25", "dense"])


def test_tune_records_the_cross_validation(tiny_index, data_dir, tmp_path, tiny_lm_dir):
    pytest.importorskip("pyserini")
    config = RetrievalConfig(dense={"device": "cpu"})
    doc, path = tune_fusion(tiny_index, data_dir / "questions.jsonl", members=["bm25", "dense"], config=config,
                            depth=10, progress=False, out=tmp_path / "w.json", folds=5)
    cv = doc.search["cross_validation"]
    assert cv["folds"] == 2  # 5 records: folds of at least two
    assert cv["chosen"] in {label.removeprefix("held out: ") for label in doc.results if label.startswith("held")}
    assert len(cv["fold_fits"]) == 2 and set(cv["fold_fits"][0]["weights"]) == {"bm25", "dense"}
    with pytest.raises(ConfigError, match="folds"):
        tune_fusion(tiny_index, data_dir / "questions.jsonl", members=["bm25", "dense"], config=config,
                    progress=False, out=tmp_path / "x.json", folds=1)


@pytest.mark.parametrize("skill,seed", [({"bm25": 0.6, "dense": 0.6}, 0),
                                        ({"bm25": 0.3, "dense": 0.5, "generative": 0.4}, 2),
                                        ({"bm25": 0.5, "dense": 0.45, "generative": 0.4}, 6)])
def test_held_out_rankings_score_as_the_chosen_procedures_estimate(skill, seed):
    """``Fusions.held_out`` ranks each record with the chosen procedure fitted without its fold: scored, those
    rankings give the cross-validated estimate, not the (higher) in-sample figure of the final weights."""
    gold, hits = _members(40, 12, skill, seed)
    names = list(skill)
    scorer = Scorer(gold, hits, "Rprec", ["page", "passage"])
    fusions = Fusions(names, hits, scorer, depth=12, rrf_k=60)
    cv = cross_validate(fusions, 0.25, ["minmax", "rrf"], folds=4, seed=7)
    method, normalize = SCHEMES[cv.scheme]
    doc = SimpleNamespace(search={"cross_validation": cv.record(names)}, method=method, normalize=normalize,
                          weights=dict(zip(names, cv.weights)))
    ranked = fusions.held_out(doc)
    assert [len(r) for r in ranked] == [12] * 40
    assert all([h.rank for h in r] == list(range(1, 13)) and
               all(a.score >= b.score for a, b in zip(r, r[1:])) for r in ranked)
    held = scorer([[h.unit_id for h in r] for r in ranked])
    assert held == pytest.approx(cv.held_out[cv.chosen])
    if seed == 6:  # folds fitted apart from each other: the held-out figure is below the in-sample one
        assert cv.chosen == "fitted, shrink 0" and len(set(cv.fold_fits)) > 1
        assert held["objective"] < fusions.evaluate(cv.scheme, cv.weights)["objective"]
    # without cross-validation: the final weights on every record, the in-sample figure
    doc.search = {"cross_validation": {"folds": 0}}
    in_sample = scorer([[h.unit_id for h in r] for r in fusions.held_out(doc)])
    assert in_sample == pytest.approx(fusions.evaluate(cv.scheme, cv.weights))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_the_grid_fusion_and_its_scorer_equal_the_hybrid_fusion_scored_by_kilt(scheme):
    """``Fusions.evaluate`` (array fusion, R-Precision read from the ids) ranks and scores as the hybrid retriever's
    ``fuse``/``fused_order`` scored by ``score`` — ties, zero weights, a calibrated member, records with two gold
    outputs of different lengths and a shallow depth included."""
    from genret.eval import score
    from genret.eval._runner import LEVELS
    from genret.retrieval.hybrid import CALIBRATED_MEMBERS, fuse, fused_order, member_contributions

    gold, hits = _members(30, 14, {"bm25": 0.5, "dense": 0.4, "memory": 0.3}, seed=11)
    rng = random.Random(3)
    for rec in gold[::3]:  # a second gold output, two pages long
        rec["output"].append({"provenance": [{"wikipedia_id": f"p{rng.randrange(7)}", "start_paragraph_id": 1},
                                             {"wikipedia_id": f"p{rng.randrange(7)}", "start_paragraph_id": 2}]})
    for lists in hits.values():  # members return different units, some with tied scores
        for i, result in enumerate(lists):
            cut = result[:rng.randrange(3, len(result) + 1)]
            lists[i] = [Hit(h.unit_id, round(h.score, 1), h.rank, h.provenance) for h in cut]
    names = list(hits)
    scorer = Scorer(gold, hits, "Rprec", ["page", "passage"])
    fusions = Fusions(names, hits, scorer, depth=5, rrf_k=60)
    method, normalize = SCHEMES[scheme]
    for weights in [(1.0, 1.0, 1.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0), (0.3, 0.6, 0.1), (0.25, 0.25, 0.5)]:
        rows = sorted(rng.sample(range(len(gold)), 17))
        got = fusions.evaluate(scheme, weights, rows)
        orders = []
        for i in rows:
            pairs = [(w, member_contributions(hits[n][i], method, normalize, 60, calibrated=n in CALIBRATED_MEMBERS))
                     for n, w in zip(names, weights) if w]
            orders.append(fused_order(fuse(pairs), 5))
        preds = [{"id": gold[i]["id"], "output": [{"provenance": [scorer.prov[u] for u in order]}]}
                 for i, order in zip(rows, orders)]
        want = {level: score(preds, [gold[i] for i in rows], ks=(1,), rank_keys=LEVELS[level],
                             downstream=False)["retrieval"]["Rprec"] for level in ("page", "passage")}
        assert {k: got[k] for k in want} == want  # equal, not approximately
        assert got["objective"] == (want["page"] + want["passage"]) / 2
