"""``genret adapt INDEX TRAIN.jsonl``: adapt an index to a task in one step (``genret.eval.adapt``): fine-tune the
dense encoder within a budget, fit the hybrid's fusion by cross-validation, train a cross-encoder reranker, blend
it or the sentence reranker in where it helps, report a held-out fold before and after.

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import add_output_flags

DESCRIPTION = (
    "Adapt an index to a task from a KILT training file, within a wall-clock budget: a held-out fold is cut "
    "off (--holdout of the records, at most --max-held-out); every retriever runs over it before; the dense "
    "encoder is fine-tuned on the rest (BM25 hard negatives) for what the budget leaves once re-encoding the "
    "index is set aside, and kept in the index (dense-adapted); the training questions are embedded with it and "
    "kept with their gold passages (memory-adapted: the hybrid's memory member, scoring the gold passages of a "
    "query's nearest training questions; the held-out fold searches a memory of the rest); the hybrid's fusion "
    "is fitted on the held-out "
    "fold by cross-validation and saved (hybrid-weights.json), a fusion kept over the best member alone only "
    "where it beats it by the rule below (else that member alone); a cross-encoder is trained on the rest "
    "(hard negatives from BM25 and dense) where the budget gives it enough steps; it and the sentence "
    "reranker (a passage's best sentence under the adapted encoder, no training) are each blended into the "
    "hybrid's held-out ranking (each record fused with weights fitted without it) with a weight and a depth "
    "(its first 20 or 40 hits) cross-validated on the held-out fold, and the better is kept "
    "(rerank-adapted) only where its blend lifts the fold by at least one standard error of its per-record "
    "gain and lifts more of the records it changes than it lowers beyond chance (one-sided sign test, p <= "
    "0.05). search, "
    "eval, serve and rag then use them without further flags (the hybrid, with its fitted fusion, is now the "
    "index's default retriever; --retriever hybrid --untrained compares with the index as built). The table "
    "gives each retriever's R-Precision on the held-out fold before and after; the hybrid's and the reranked "
    "row's 'after' are cross-validated estimates (each record scored with settings fitted without it), and "
    "each trained row's gain, record by record, with its standard error (on a fold of a few dozen records, "
    "a gain within two of them is noise). The "
    "generative retriever, span reader and label head are not trained here (genret train retriever / reader / "
    "labels). A second run with the same inputs does nothing unless --force.")


def _cmd_adapt(a: argparse.Namespace) -> int:
    from genret.core import ConfigError
    from genret.eval import KEEP_RULE, adapt, gain_text, previous_adaptation

    if a.budget_minutes <= 0 or not 0 < a.holdout < 1 or a.max_held_out < 2 or \
            any(e is not None and not 0 < e <= 100 for e in (a.epochs, a.rerank_epochs)):
        raise ConfigError("--budget-minutes must be > 0, --holdout between 0 and 1, --max-held-out ≥ 2, --epochs "
                          "and --rerank-epochs in (0, 100]")
    say = (lambda msg: None) if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = adapt(a.index, a.train, task=a.task, budget_minutes=a.budget_minutes, holdout=a.holdout,
                   max_held_out=a.max_held_out, max_records=a.max_records, device=a.device, dtype=a.dtype,
                   seed=a.seed, force=a.force, progress=not a.quiet, say=say,
                   dense_train={"epochs": a.epochs} if a.epochs is not None else None, rerank=not a.no_rerank,
                   rerank_train={"epochs": a.rerank_epochs} if a.rerank_epochs is not None else None,
                   memory=not a.no_memory)
    if report is None:
        done = previous_adaptation(a.index) or {}
        print(f"{a.index} is already adapted with these inputs (adapt.json); --force adapts again",
              file=sys.stderr)
        if a.json:
            print(json.dumps(done.get("report", {}), indent=1))
        return 0
    if a.json:
        from dataclasses import asdict

        print(json.dumps(asdict(report), indent=1))
        return 0
    print(report.table())
    if report.fusion:
        weights = " ".join(f"{m}={w:.3g}" for m, w in report.fusion["weights"].items())
        print(f"fusion: {report.fusion['chosen']} -> {report.fusion['method']} {weights} ({report.fusion['file']})")
        if over := report.fusion.get("over_member"):
            print(f"fusion: {over['fusion']} over {over['member']} alone, a record: {gain_text(over)} -> "
                  + ("the fusion kept" if over["kept"] else f"{over['member']} alone (a fusion needs {KEEP_RULE})"))
    if report.dense:
        d = report.dense
        stopped = " (stopped by the budget)" if d.get("budget_stopped") else ""
        print(f"dense: {d.get('steps')} steps on {d.get('rows')} rows ({d.get('precision')}), loss "
              f"{d.get('loss_first')} -> {d.get('loss_last')}{stopped}")
    if report.memory:
        m = report.memory
        print(f"memory: {m['questions']} training questions ({m['encoder']}'s encoder); "
              f"{m['held_out_with_hits']} of {report.held_out_records} held-out records had a neighbour above "
              "its floor")
    if report.rerank:
        r = report.rerank
        if r.get("steps") is not None:
            stopped = (f" (stopped by the budget; learning rate decayed to step {r['budget_schedule_steps']})"
                       if r.get("budget_schedule_steps") else " (stopped by the budget)" if r.get("budget_stopped")
                       else "")
            print(f"cross-encoder: {r.get('steps')} steps on {r.get('rows')} rows ({r.get('precision')}), loss "
                  f"{r.get('loss_first')} -> {r.get('loss_last')}{stopped}")
        tried = ", ".join(f"{name} {c['blended']['objective']:.1f} (weight {c['weight']:g}, depth {c['depth']}"
                          + (f"; a record: {gain_text(c['gain'])}" if c.get("gain") else "") + ")"
                          for name, c in r.get("candidates", {}).items())
        kept = (f"kept {r.get('model')}: weight {r['weight']:g} over {r['over']}'s first {r['depth']}" if r["kept"]
                else "none kept")
        print(f"rerank: {r['over']} alone {r['held_out_first']['objective']:.1f}, blended: {tried}; {kept}")
    threads = f" ({report.threads} CPU threads)" if report.threads else ""
    print(f"minutes{threads}: " + ", ".join(f"{k} {v:g}" for k, v in report.minutes.items()))
    for part, why in report.skipped.items():
        print(f"not adapted: {part}: {why}")
    return 0


def register(sub) -> None:
    """Add ``adapt`` to the top-level commands."""
    p = sub.add_parser("adapt", help="adapt an index to a task in one step: fine-tune dense, fit the fusion, "
                       "report before / after", description=DESCRIPTION)
    p.add_argument("index", help="an index directory (the adapted parts are written there)")
    p.add_argument("train", help="KILT-format training records with gold provenance")
    p.add_argument("--task", default=None, help="the task's prompt for the generative member (e.g. squad, scifact)")
    p.add_argument("--budget-minutes", type=float, default=20.0, help="wall-clock budget for the whole run "
                   "(default 20; of what is left after evaluation and re-encoding, 60%% trains the dense encoder and "
                   "the rest the reranker)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of the records held out for the report and "
                   "the fusion (default 0.2)")
    p.add_argument("--max-held-out", type=int, default=1000, help="held-out records at most (default 1000)")
    p.add_argument("--max-records", type=int, default=None, help="the first N training records only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="training autocast and encoding precision (auto: bfloat16 where native)")
    p.add_argument("--epochs", type=float, default=None, help="dense training epochs at most (the budget may stop "
                   "it sooner; default: 3 up to 1,000 training queries, else 1)")
    p.add_argument("--no-rerank", action="store_true", help="no reranking stage (neither a cross-encoder trained "
                   "nor the sentence reranker fitted)")
    p.add_argument("--no-memory", action="store_true", help="keep no query memory (the training questions as a "
                   "hybrid member)")
    p.add_argument("--rerank-epochs", type=float, default=None, help="cross-encoder training epochs at most "
                   "(default: 3 up to 1,000 training queries, else 1)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--force", action="store_true", help="adapt again when the index holds this adaptation")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_output_flags(p, logs_info=True)
    p.set_defaults(func=_cmd_adapt)
