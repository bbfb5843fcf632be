"""The blend weight ``genret adapt`` fits for its reranker (``_adapt_rerank.fit_blend``): chosen by
cross-validation over a grid, scored on records the weight was not chosen on, and no better than the first stage
where the reranker knows nothing (hand-made hit lists over KILT provenance, scored by the real KILT metrics)."""

from __future__ import annotations

import random

from genret.eval._adapt_rerank import fit_blend
from genret.eval._fusion_tune import Scorer
from genret.retrieval import Hit, Provenance


def _case(n: int, seed: int = 0):
    """``n`` records, each with 10 hits over its own page's 10 paragraphs; gold is paragraph 1, which the first
    stage ranks third."""
    rng = random.Random(seed)
    records, hits = [], []
    for i in range(n):
        page = f"p{i}"
        records.append({"id": str(i), "input": f"q{i}", "output": [{"provenance": [
            {"wikipedia_id": page, "title": page, "start_paragraph_id": 1, "end_paragraph_id": 1}]}]})
        order = [2, 3, 1, *rng.sample(range(4, 11), 7)]
        hits.append([Hit(unit_id=100 * i + par, score=10.0 - r, rank=r + 1,
                         provenance=Provenance(page, page, par, par, 0, 10)) for r, par in enumerate(order)])
    return records, hits


def test_a_reranker_that_finds_gold_is_blended_in_and_one_that_does_not_is_not():
    records, hits = _case(20)
    scorer = Scorer(records, {"first": hits}, "Rprec", ("page", "passage"))
    knows = [[1.0 if h.provenance.start_paragraph_id == 1 else 0.0 for h in hs] for hs in hits]
    depth, weight, blended, first, gain = fit_blend(scorer, hits, knows, (10,))
    assert first["passage"] == 0.0 and blended["passage"] == 1.0 and weight > 0 and depth == 10
    # every record's passage R-Precision went 0 -> 1 (its objective +0.5): a paired gain of 50 points, no spread
    assert gain == {"mean": 50.0, "se": 0.0, "better": 20, "worse": 0, "p": round(0.5 ** 20, 4)}
    noise = [[random.Random(j).random() for _ in hs] for j, hs in enumerate(hits)]
    inverse = [[-(10.0 - r) for r in range(len(hs))] for hs in hits]  # the first stage's order reversed
    depth, weight, blended, first, gain = fit_blend(scorer, hits, inverse, (2, 10))
    assert weight == 0.0 and blended == first and depth == 2 and gain["better"] == gain["worse"] == 0
    _, weight, blended, _, _ = fit_blend(scorer, hits, noise, (2,))  # below the depth nothing moves
    assert blended["page"] == 1.0


def test_the_depth_is_chosen_with_the_weight_and_ties_go_to_the_shallower():
    records, hits = _case(20)
    scorer = Scorer(records, {"first": hits}, "Rprec", ("page", "passage"))
    knows = [[1.0 if h.provenance.start_paragraph_id == 1 else 0.0 for h in hs] for hs in hits]
    # gold is the first stage's third hit: a depth of 2 cannot reach it, 3 and 10 both can
    depth, weight, blended, first, _ = fit_blend(scorer, hits, knows, (2, 3, 10))
    assert depth == 3 and weight > 0 and blended["passage"] == 1.0 and first["passage"] == 0.0
    depth, weight, blended, _, _ = fit_blend(scorer, hits, knows, (2,))
    assert weight == 0.0 and depth == 2 and blended["passage"] == 0.0


def test_the_paired_gain_is_the_mean_difference_with_its_standard_error():
    from genret.eval._keep_rule import paired_gain

    gain = paired_gain([1.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.5])  # differences +0.5, 0, +0.5, -0.5
    assert gain["better"] == 2 and gain["worse"] == 1
    assert gain["mean"] == 12.5  # points
    assert gain["se"] == round(100 * (((0.375 ** 2 + 0.125 ** 2 + 0.375 ** 2 + 0.625 ** 2) / 3) ** 0.5) / 2, 2)
    assert gain["p"] == 0.5  # the sign test: 2 or more of 3 changed records up, by chance alone
    assert paired_gain([], []) == {"mean": 0.0, "se": 0.0, "better": 0, "worse": 0, "p": 1.0}


def test_a_second_stage_is_kept_only_at_a_gain_of_one_standard_error_and_a_sign_test():
    """``clears``: a blend above the first stage by less than the noise of its per-record gain stays out (mini-KILT
    climate_fever: +2.05 ± 2.83 points on 73 claims, kept before the rule, lowered dev by 4 points), and so does one
    that clears a standard error on a handful of changed records (+4.11 ± 2.34, 5 claims better and 1 worse: p =
    0.11; kept, it lowered dev by 1.6); one that clears both, or lifts every record alike (no spread), is kept."""
    from genret.eval._adapt_rerank import BlendFit, clears
    from genret.eval._keep_rule import KEEP_P, KEEP_SE, sign_test

    first = {"page": 0.63, "passage": 0.438, "objective": 0.534}
    blended = {"page": 0.644, "passage": 0.466, "objective": 0.555}

    def fit(mean: float, se: float, better: int = 34, worse: int = 18, weight: float = 0.4,
            after: dict = blended) -> BlendFit:
        return BlendFit(20, weight, after, first, {"mean": mean, "se": se, "better": better, "worse": worse,
                                                   "p": sign_test(better, worse)})

    assert KEEP_SE == 1.0 and KEEP_P == 0.05
    assert not clears(fit(2.05, 2.83, 5, 3))  # within its noise
    assert clears(fit(2.05, 2.05)) and clears(fit(0.8, 0.47))  # at one standard error, and above (squad: 34 / 18)
    assert sign_test(5, 1) == 0.1094 and not clears(fit(4.11, 2.34, 5, 1))  # a standard error, on six records
    assert clears(fit(4.11, 2.34, 5, 0)) and not clears(fit(4.11, 2.34, 4, 0))  # 1/32 and 1/16: five, all up
    assert not clears(fit(2.05, 1.0, weight=0.0))  # weight 0 is the first stage itself
    assert not clears(fit(-1.0, 0.5, after=first)) and not clears(fit(0.0, 0.0, after=first))
    records, hits = _case(20)
    scorer = Scorer(records, {"first": hits}, "Rprec", ("page", "passage"))
    knows = [[1.0 if h.provenance.start_paragraph_id == 1 else 0.0 for h in hs] for hs in hits]
    assert clears(fit_blend(scorer, hits, knows, (10,)))  # +50 points on every record, no spread
    inverse = [[-(10.0 - r) for r in range(len(hs))] for hs in hits]
    assert not clears(fit_blend(scorer, hits, inverse, (10,)))
