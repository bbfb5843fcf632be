"""``genret tune``: fit the hybrid retriever's fusion weights on a dev file and save them in the index.

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json

from ._common import add_output_flags
from ._flags import add_dtype_flag, add_generative_flags, check_task_flag, generative_section

DESCRIPTION = (
    "Fit the hybrid retriever's fusion on a KILT dev file and save it in the index (INDEX/hybrid-weights.json), "
    "where `genret search/eval/serve --retriever hybrid` then use it by default (explicit --hybrid-weights, or "
    "--hybrid-tuned off, win). Each member runs once over the dev records (the generative one is the slow "
    "part: limit it with --max-records); the fusions are then scored from those hit lists with the KILT "
    "metric: weighted min-max, z-score and RRF over a grid on the weight simplex, plus the default "
    "weights. Weights fitted on a few hundred records overfit, so the fit is cross-validated (--folds, default "
    "5): on each fold left out, the grid's best on the other folds, shrunk toward the default weights by 0, "
    "0.25, 0.5, 0.75 or 1, and each member alone are scored; the procedure that held out best is applied to "
    "all records (ties: more shrinkage; a member alone when it beat every fusion). --folds 0: the grid's best "
    "on all records (never worse there than a member alone or the defaults; ties go to the bm25+dense default, "
    "then to fewer members — a member weighed 0 is not loaded at all). A command of its own rather than an "
    "`eval` flag: it writes into the index and answers with weights, not an evaluation report — evaluate the "
    "result on held-out data with "
    "`genret eval INDEX TEST.jsonl --retriever hybrid`.")


def _cmd_tune(a: argparse.Namespace) -> int:
    from genret.eval import tune_fusion
    from genret.retrieval import RetrievalConfig

    check_task_flag(a)
    gen = generative_section(a)
    config = RetrievalConfig(dense={"device": a.device, "dtype": a.dtype, "ef_search": a.ef_search, "nprobe": a.nprobe},
                             generative=gen, hybrid={"rrf_k": a.rrf_k, "depth": a.depth, "tuned": "off"})
    members = [x.strip() for x in a.members.split(",") if x.strip()] if a.members else None
    levels = ["page", "passage"] if a.level == "both" else [a.level]
    doc, path = tune_fusion(a.index, a.dev, members=members, config=config, task_name=a.task, levels=levels,
                            metric=a.metric, max_records=a.max_records, depth=a.depth, step=a.step,
                            methods=[x.strip() for x in a.methods.split(",") if x.strip()], out=a.out,
                            progress=not a.quiet, folds=a.folds, seed=a.seed)
    if a.json:
        print(json.dumps(doc.model_dump(mode="json"), indent=1))
        return 0
    print(format_table(doc))
    weights = " ".join(f"{m}={w:g}" for m, w in doc.weights.items())
    how = doc.method if doc.method == "rrf" else f"{doc.method}/{doc.normalize}"
    print(f"chosen: {how} {weights} (depth {doc.depth}) -> {path}")
    return 0


def format_table(doc) -> str:
    """Member-alone, default and fused metrics (percent) of a fitted-weights document."""
    levels = doc.objective.levels
    width = max(24, *(len(label) for label in doc.results))
    what = doc.objective.metric + (f", mean of {' and '.join(levels)}" if len(levels) > 1 else f", {levels[0]}")
    lines = [f"tuned on {doc.dev.records} records of {doc.dev.file} ({what}; "
             f"{doc.search.get('candidates', '?')} fusions tried)",
             f"  {'':<{width}}" + "".join(f"{lv:>9}" for lv in levels) + (f"{'mean':>9}" if len(levels) > 1 else "")]
    for label, metrics in doc.results.items():
        cells = [metrics[lv] for lv in levels] + ([metrics["objective"]] if len(levels) > 1 else [])
        lines.append(f"  {label:<{width}}" + "".join(f"{v * 100:>9.1f}" for v in cells))
    cv = doc.search.get("cross_validation") or {}
    if cv.get("folds"):
        lines.append(f"  ({cv['folds']}-fold cross-validation: 'held out' rows score each record with the fusion "
                     f"fitted on the other folds; chosen: {cv['chosen']})")
    if over := cv.get("over_member"):
        from genret.eval import gain_text

        lines.append(f"  ({over['fusion']} over {over['member']} alone, record by record: {gain_text(over)}: "
                     + ("the fusion kept)" if over["kept"] else f"{over['member']} alone)"))
    return "\n".join(lines)


def register(sub) -> None:
    """Add ``tune`` to the top-level commands."""
    p = sub.add_parser("tune", help="fit the hybrid retriever's fusion weights on a dev file (saved in the "
                      "index, used by --retriever hybrid)", description=DESCRIPTION)
    p.add_argument("index", help="index directory (the fitted weights are written there unless --out)")
    p.add_argument("dev", help="KILT-format dev file with gold provenance")
    p.add_argument("--task", default=None, help="task prompt (generative; default: each record's meta.task)")
    p.add_argument("--members", default=None, metavar="NAMES",
                   help="retrievers to fuse, e.g. bm25,dense,generative (default: every one the index has)")
    p.add_argument("--level", choices=("page", "passage", "both"), default="both",
                   help="KILT level(s) of the objective (both: their mean)")
    p.add_argument("--metric", default="Rprec", help="Rprec, recall@K, precision@K or success_rate@K")
    p.add_argument("--max-records", type=int, default=None, help="use the first N dev records")
    p.add_argument("--depth", type=int, default=100, help="hits per member before fusion (saved with the weights)")
    p.add_argument("--step", type=float, default=0.1, help="grid step on the weight simplex")
    p.add_argument("--methods", default="minmax,zscore,rrf",
                   help="fusions tried: minmax and zscore (weighted, normalised scores), rrf")
    p.add_argument("--rrf-k", type=int, default=60, help="RRF rank offset")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: fit on every record)")
    p.add_argument("--seed", type=int, default=13, help="the fold shuffle's seed")
    p.add_argument("--out", default=None, help="write here instead of INDEX/hybrid-weights.json (use it with "
                   "--hybrid-tuned FILE)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_dtype_flag(p)
    add_generative_flags(p)
    p.add_argument("--ef-search", type=int, default=None, help="dense HNSW: query-time ef")
    p.add_argument("--nprobe", type=int, default=None, help="dense IVF: lists probed")
    p.add_argument("--json", action="store_true", help="print the saved document")
    add_output_flags(p)
    p.set_defaults(func=_cmd_tune)
