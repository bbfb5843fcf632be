"""Whether ``genret adapt``'s held-out fold and the dev split agree on the sentence reranker: its blend's gain over an
adapted index's fitted hybrid, on the fold ``adapt`` held out and on dev, with the same first stage for both.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/rerank_fold.py --index runs/adapt21/squad \\
        [--task squad] [--dev-records N] [--splits 8]

The index must have been adapted (``adapt.json``: the training file, its hold-out share, cap and seed, from which
the fold is cut again exactly as ``adapt`` cut it; ``hybrid-weights.json``: the fitted fusion).  For the fold and for
dev alike, the fused members run over the records — the query memory with the training part's questions only, as
``adapt`` searched the fold (dev then sees the same memory, not the index's larger one) — and are fused with the
index's fitted weights; the sentence reranker (the index's adapted dense encoder, a passage's best sentence) scores
each record's first 40 hits.  Printed per split:

- fixed blends (weight 0.3 and 0.5 at depth 40): page / passage R-Precision before and after, records whose passage
  went up and down, and the objective's paired gain (mean ± standard error, points);
- ``fit_blend`` as ``adapt`` runs it (depths 20 and 40, weights 0–1, five folds) over ``--splits`` shuffles of the
  records: each split's held-out gain and whether it clears the keep rule (``eval/_keep_rule.py``).

Over single members (``--members bm25,dense``: each alone as the first stage) the same comparison says whether the
records, rather than the fused first stage, differ.  It measures the data and the rule, not speed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 40


def _gold(record: dict) -> set[tuple[str, int]]:
    return {(str(p["wikipedia_id"]), p.get("start_paragraph_id")) for o in record.get("output", [])
            for p in o.get("provenance") or []}


def main() -> None:
    from genret.eval import held_out_split
    from genret.eval._adapt_rerank import fit_blend
    from genret.eval._fusion_tune import Fusions, Scorer, run_members
    from genret.eval._keep_rule import beyond_noise
    from genret.eval._kilt_io import read_kilt
    from genret.eval._runner import search_records
    from genret.indexing import Index
    from genret.retrieval import (
        MemoryRetriever,
        RerankConfig,
        RetrievalConfig,
        load_reranker,
        memory_encoder,
        memory_from_kilt,
        reranker_texts,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--task", default="squad")
    ap.add_argument("--dev", type=Path, help="default: ../shared/minikilt/TASK/dev.jsonl")
    ap.add_argument("--dev-records", type=int, help="the dev split's first N records (default: all)")
    ap.add_argument("--splits", type=int, default=8, help="shuffles of the records fit_blend's folds are cut from")
    ap.add_argument("--members", help="comma-separated: each member alone as the first stage, instead of the fusion")
    a = ap.parse_args()

    recipe = json.loads((a.index / "adapt.json").read_text())["recipe"]
    fusion = json.loads((a.index / "hybrid-weights.json").read_text())
    weights = fusion["weights"]
    members = [m for m, w in weights.items() if w and m != "memory"]
    scheme = "rrf" if fusion["method"] == "rrf" else fusion["normalize"]  # eval._fusion_tune.SCHEMES' names
    train, fold = held_out_split(read_kilt(recipe["train"]), recipe["holdout"], recipe["seed"],
                                 recipe.get("max_held_out", 1000))
    dev = read_kilt(a.dev or ROOT.parent / "shared" / "minikilt" / a.task / "dev.jsonl")[:a.dev_records]
    print(f"{a.index}: fold {len(fold)} records (training part {len(train)}), dev {len(dev)}; fusion {weights}")
    cfg = RetrievalConfig(hybrid={"tuned": "off"}, rerank={"adapted": False})
    with Index(a.index) as index:
        units = {u.unit_id: u for batch in index.store.iter_units() for u in batch}
        encoder = memory_encoder(index)
        part = memory_from_kilt(index, train, encoder)
        reranker = load_reranker(RerankConfig(model="sentences"), index)
        for name, records in (("fold", fold), ("dev", dev)):
            hits = run_members(index, members, records, 100, cfg, a.task, False)
            if weights.get("memory"):
                hits["memory"] = search_records(MemoryRetriever(index, memory=part, encoder=encoder), records, 100,
                                                task_name=a.task, progress=False)
            scorer = Scorer(records, hits, "Rprec", ("page", "passage"))
            if a.members:
                firsts = {m: hits[m] for m in a.members.split(",")}
            else:
                fused = Fusions(list(hits), hits, scorer, 100, fusion.get("rrf_k", 60))
                w = tuple(weights.get(m, 0.0) for m in hits)
                firsts = {"hybrid": [fused.ranked(scheme, w, i) for i in range(len(records))]}
            golds = [_gold(r) for r in records]
            for label, first in firsts.items():
                scores = [reranker.scores(r["input"], reranker_texts(index, h[:DEPTH], reranker))
                          for r, h in zip(records, first)]
                _fixed(name, label, golds, first, scores, units)
                fits = [fit_blend(scorer, first, scores, (20, DEPTH), seed=s) for s in range(a.splits)]
                print(f"  {name} {label}: fit_blend over {a.splits} splits: " + "; ".join(
                    f"{f.gain['mean']:+.2f} ({f.gain['better']}/{f.gain['worse']}"
                    f"{', kept' if beyond_noise(f.gain) else ''})" for f in fits) +
                    f"; standard error {fits[0].gain['se']:.2f}", flush=True)


def _fixed(name, label, golds, first, scores, units) -> None:
    """Fixed blends at depth DEPTH: page / passage top-1 correctness (R-Precision for one gold) and the paired gain."""
    import numpy as np

    from genret.eval._keep_rule import gain_text, paired_gain

    def top(order_scores, hits, weight):
        f = np.array([h.score for h in hits[:DEPTH]])
        d = np.array(order_scores[:len(f)])

        def mm(x):
            return (x - x.min()) / (np.ptp(x) or 1.0)

        return hits[int(np.argmax((1 - weight) * mm(f) + weight * mm(d)))] if weight else hits[0]

    def correct(hit, gold):
        u = units[hit.unit_id]
        return (any(u.page_id == p for p, _ in gold),
                any(u.page_id == p and u.start_paragraph <= par <= u.end_paragraph for p, par in gold))

    base = np.array([correct(top(s, h, 0.0), g) for s, h, g in zip(scores, first, golds)], float)
    for weight in (0.3, 0.5):
        after = np.array([correct(top(s, h, weight), g) for s, h, g in zip(scores, first, golds)], float)
        moved = after[:, 1] - base[:, 1]
        gain = paired_gain(after.mean(1).tolist(), base.mean(1).tolist())
        print(f"  {name} {label} weight {weight}: {100 * base[:, 0].mean():.1f} / {100 * base[:, 1].mean():.1f} → "
              f"{100 * after[:, 0].mean():.1f} / {100 * after[:, 1].mean():.1f}; passage up {int((moved > 0).sum())}, "
              f"down {int((moved < 0).sum())}; objective {gain_text(gain)}", flush=True)


if __name__ == "__main__":
    main()
