"""The fusion fit's speed (``genret tune`` and ``genret adapt``'s cross-validated grid), the array path against the
reference path in the same run, on real member hits.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/fusion_fit.py [--index runs/indexes/squad] \\
        [--records 200] [--members bm25,dense,generative]

The members run once over the first ``--records`` records of the task's train split (mini-KILT squad by default;
their hits kept); then the cross-validated fit (step 0.1, weighted min-max / z-score / RRF, 5 folds) runs twice over
the same hits:

- ``reference``: every candidate fused record by record with the hybrid retriever's own ``fuse`` / ``fused_order``
  and scored with the official-KILT ``score`` (what the fit did before);
- ``arrays``: ``Fusions.evaluate`` as shipped (all records fused at once, R-Precision read from the ranked ids).

Printed: seconds of each and their ratio, and whether both chose the same procedure with identical held-out
metrics (they must: the script exits 1 otherwise).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINIKILT = ROOT.parent / "shared" / "minikilt"


def main() -> None:
    import torch

    from genret.eval import read_kilt, score
    from genret.eval._fusion_cv import cross_validate
    from genret.eval._fusion_tune import SCHEMES, Fusions, Scorer, run_members
    from genret.eval._runner import LEVELS
    from genret.indexing import Index
    from genret.retrieval import RetrievalConfig
    from genret.retrieval.hybrid import CALIBRATED_MEMBERS, fuse, fused_order, member_contributions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=ROOT / "runs" / "indexes" / "squad")
    ap.add_argument("--train", type=Path, default=MINIKILT / "squad" / "train.jsonl")
    ap.add_argument("--task", default="squad")
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--members", default="bm25,dense,generative")
    a = ap.parse_args()
    torch.set_num_threads(1)
    names = a.members.split(",")
    gold = read_kilt(a.train)[:a.records]
    t0 = time.perf_counter()
    with Index(a.index) as index:
        hits = run_members(index, names, gold, 100, RetrievalConfig(), a.task, progress=False)
    print(f"members {names} over {len(gold)} records: {time.perf_counter() - t0:.1f} s")

    class Reference(Fusions):
        """The fit as it was: per record, the hybrid's dict fusion, scored by ``score``."""

        def evaluate(self, scheme, weights, rows=None):
            method, normalize = SCHEMES[scheme]
            rows = range(len(gold)) if rows is None else rows
            out = {}
            for level in ("page", "passage"):
                preds = []
                for i in rows:
                    pairs = [(w, member_contributions(hits[n][i], method, normalize, self.rrf_k,
                                                      calibrated=n in CALIBRATED_MEMBERS))
                             for n, w in zip(self.names, weights) if w]
                    preds.append({"id": gold[i]["id"], "output": [{"provenance": [
                        self.scorer.prov[u] for u in fused_order(fuse(pairs), self.depth)]}]})
                out[level] = score(preds, [gold[i] for i in rows], ks=(1,), rank_keys=LEVELS[level],
                                   downstream=False)["retrieval"]["Rprec"]
            out["objective"] = (out["page"] + out["passage"]) / 2
            return out

    scorer = Scorer(gold, hits, "Rprec", ("page", "passage"))
    results = {}
    for label, cls in (("reference", Reference), ("arrays", Fusions)):
        fusions = cls(names, hits, scorer, 100, 60)
        t0 = time.perf_counter()
        cv = cross_validate(fusions, 0.1, ("minmax", "zscore", "rrf"), 5, 13)
        results[label] = (time.perf_counter() - t0, cv)
    (ref_s, ref), (arr_s, arr) = results["reference"], results["arrays"]
    same = ref.chosen == arr.chosen and ref.weights == arr.weights and ref.held_out == arr.held_out
    print(f"| path | seconds | chosen |\n|---|---|---|\n| reference | {ref_s:.1f} | {ref.chosen} |\n"
          f"| arrays | {arr_s:.1f} | {arr.chosen} |")
    print(f"arrays / reference: {arr_s / ref_s:.3f} ({ref_s / arr_s:.1f}× faster); same choice and held-out "
          f"metrics: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
