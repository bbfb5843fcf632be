"""``genret train rerank INDEX TRAIN.jsonl``: train a cross-encoder reranker on a task's training file, fit how
much of it to blend into a retriever on a held-out fold, and keep it in the index (``rerank-adapted``) where the
blend lifts that fold by at least one standard error and a sign test (p ≤ 0.05) — ``genret adapt``'s reranking
stage on its own (``genret.eval.adapt_reranker``).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ._common import checked_config


def cmd_train_rerank(a: argparse.Namespace) -> int:
    from genret.core import ConfigError, InputError, sha256_file
    from genret.eval import KEEP_RULE, adapt_reranker, gain_text, held_out_split, read_kilt
    from genret.indexing import Index
    from genret.retrieval import RerankTrainConfig, RetrievalConfig, available_retrievers

    records = read_kilt(a.train)[:a.max_records]
    if len(records) < 10:
        raise InputError(f"{a.train}: {len(records)} records; training a reranker needs at least 10 (a held-out "
                         "fold to fit its blend on, and queries to train on)")
    if not 0 < a.holdout < 1:
        raise ConfigError(f"--holdout must be between 0 and 1, got {a.holdout}")
    config = checked_config(RerankTrainConfig, "train rerank", epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                            negatives=a.negatives, max_minutes=a.max_minutes, device=a.device, dtype=a.dtype,
                            seed=a.seed, budget_schedule=a.budget_schedule)
    with Index(a.index) as index:
        offered = available_retrievers(index)
    # the hybrid where there is one (first where fitted weights make it the default, else last), else the last
    over = a.over or ("hybrid" if "hybrid" in offered else offered[-1] if offered else None)
    if over not in offered:
        raise ConfigError(f"--over {over!r}: the index offers {offered}")
    train, held = held_out_split(records, a.holdout, a.seed, a.max_held_out)
    if not held:
        raise InputError(f"--holdout {a.holdout} leaves no held-out record of {len(records)}")
    retrieval = RetrievalConfig(dense={"device": a.device, "dtype": a.dtype})
    say = (lambda msg: None) if a.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="genret-train-rerank-") as scratch:
        fit = adapt_reranker(a.index, train, held, over=over, config=retrieval, train_config=config,
                             scratch=Path(scratch), task=a.task, depth=a.depth, sentences=False,
                             progress=not a.quiet, say=say,
                             trained={"train": str(Path(a.train).resolve()), "train_sha256": sha256_file(a.train),
                                      "task": a.task})
    summary = {"index": a.index, "over": fit.over, "depth": fit.depth, "weight": fit.weight, "kept": fit.kept,
               "train_records": len(train), "held_out_records": len(held),
               "held_out_rprec": {"first stage": fit.first, "blended (cross-validated)": fit.blended},
               "held_out_gain": fit.gain,
               "training": fit.train, "minutes": fit.minutes}
    print(json.dumps(summary, indent=1))
    verdict = (f"kept: weight {fit.weight:g} over {over}'s first {fit.depth} hits, used by default" if fit.kept
               else f"not kept (it needs {KEEP_RULE}); nothing written")
    print(f"held-out R-Precision ({len(held)} records), {over} alone → blended: " + ", ".join(
        f"{lv} {fit.first[lv]:.1f} → {fit.blended[lv]:.1f}" for lv in ("page", "passage"))
        + f" (a record: {gain_text(fit.gain)}); {verdict}",
        file=sys.stderr)
    return 0


def rerank_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="an index with BM25 or dense (hard negatives come from their first hits)")
    p.add_argument("train", help="KILT-format training records (their provenance gives the gold passages)")
    p.add_argument("--task", default=None, help="the task's prompt for a generative first stage (recorded too)")
    p.add_argument("--over", default=None, help="the retriever whose hits it re-orders (default: the hybrid where "
                   "the index has one, else its only retriever)")
    p.add_argument("--depth", type=int, default=20, help="first-stage hits a query re-ordered (default 20)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of the records held out to fit the blend on")
    p.add_argument("--max-held-out", type=int, default=1000, help="held-out records at most (default 1000)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16, help="queries a step")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--negatives", type=int, default=3, help="hard negatives per training row")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--budget-schedule", action=argparse.BooleanOptionalAction, default=True,
                   help="with --max-minutes: the learning rate decays to 0 where the budget is expected to stop "
                   "training, not at the end of --epochs (default: on)")
    p.add_argument("--max-records", type=int, default=None, help="the first N records only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="training autocast and scoring precision (auto: bfloat16 where native)")
    p.add_argument("--seed", type=int, default=13)
