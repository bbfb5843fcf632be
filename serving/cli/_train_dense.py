"""``genret train dense INDEX TRAIN.jsonl``: fine-tune the index's dense encoder on a task's training file, put it
into the index (``dense-adapted``, used by search, eval, serve and rag by default; ``--untrained`` for the base one)
and report a held-out fold of the training file before and after.

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ._common import checked_config


def _rprec(index, held_file: str, adapted: bool) -> dict[str, float]:
    """Dense R-Precision (percent, per level) on the held-out records, with the adapted or the base encoder."""
    from genret.eval import evaluate
    from genret.retrieval import DenseSearchConfig, RetrievalConfig

    config = RetrievalConfig(dense=DenseSearchConfig(adapted=adapted))
    report = evaluate(index, held_file, "dense", 100, ks=(1, 5, 10, 20, 100), config=config, progress=False)
    return {level: round(100 * m["Rprec"], 1) for level, m in report["levels"].items()}


def cmd_train_dense(a: argparse.Namespace) -> int:
    from genret.core import InputError, sha256_file
    from genret.eval import held_out_split, read_kilt, write_kilt
    from genret.indexing import ADAPTED_DENSE, Index, write_adapted_dense
    from genret.retrieval import DenseTrainConfig, fine_tune_dense, pairs_from_kilt
    from genret.retrieval.hybrid import weights_path

    records = read_kilt(a.train)[:a.max_records]
    if not records:
        raise InputError(f"{a.train}: no records")
    config = checked_config(DenseTrainConfig, "train dense", epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                            negatives=a.negatives, max_minutes=a.max_minutes, device=a.device, dtype=a.dtype,
                            seed=a.seed)
    recipe = {"train": str(Path(a.train).resolve()), "train_sha256": sha256_file(Path(a.train)), "task": a.task,
              "records": len(records), "holdout": a.holdout,
              "config": config.model_dump(exclude={"device", "max_minutes"})}
    with Index(a.index) as index:
        done = index.component(ADAPTED_DENSE).params.get("trained", {}) if index.has(ADAPTED_DENSE) else None
        if done is not None and {k: done.get(k) for k in recipe} == recipe and not a.force:
            print(f"{a.index} already holds a dense encoder trained this way on {a.train}; --force trains again",
                  file=sys.stderr)
            return 0
        train, held = held_out_split(records, a.holdout, a.seed)
        with tempfile.TemporaryDirectory(prefix="genret-train-dense-") as scratch:
            held_file = str(Path(scratch) / "held-out.jsonl")
            if held:
                write_kilt(held_file, held)
            before = _rprec(index, held_file, False) if held else {}
            stats = fine_tune_dense(index, pairs_from_kilt(train), Path(scratch) / "model", config,
                                    progress=not a.quiet)
            index.close()  # the manifest changes under it
            write_adapted_dense(a.index, Path(scratch) / "model", trained={**recipe, **stats}, device=a.device,
                                dtype=a.dtype, progress=not a.quiet)
            with Index(a.index) as adapted:
                after = _rprec(adapted, held_file, True) if held else {}
                fusion = _fit_fusion(a, adapted, held_file) if held and a.fusion else None
    summary = {"index": a.index, "component": ADAPTED_DENSE, "train_records": len(train),
               "held_out_records": len(held), **stats, "held_out_rprec": {"before": before, "after": after}}
    if fusion is not None:
        summary["fusion"] = fusion
    elif weights_path(a.index).is_file():
        print(f"note: {weights_path(a.index)} was fitted before this encoder was trained; refit it "
              "(`genret tune`, or `genret train dense … --fusion --force`)", file=sys.stderr)
    print(json.dumps(summary, indent=1))
    if held:
        print(f"held-out R-Precision ({len(held)} of {len(records)} records), dense before → after: " + ", ".join(
            f"{lv} {before[lv]:.1f} → {after[lv]:.1f}" for lv in before), file=sys.stderr)
    return 0


def _fit_fusion(a: argparse.Namespace, index, held_file: str) -> dict | None:
    """With ``--fusion``: the hybrid's fusion fitted on the held-out fold (records the adapted encoder never saw),
    saved as the index's ``hybrid-weights.json`` (``genret tune``'s file; the old one was fitted for the base
    encoder); its table on stderr.  None when the index has fewer than two retrievers."""
    from genret.eval import tune_fusion
    from genret.retrieval import RetrievalConfig, base_retrievers

    from ._tune import format_table

    if len(base_retrievers(index)) < 2:
        print("--fusion: the index has one retriever; no hybrid to fit", file=sys.stderr)
        return None
    config = RetrievalConfig(dense={"device": a.device, "adapted": True}, hybrid={"tuned": "off"})
    doc, path = tune_fusion(index, held_file, config=config, task_name=a.task, progress=not a.quiet,
                            simplest_within_noise=True)
    print(format_table(doc), file=sys.stderr)
    return {"file": str(path), "method": doc.method, "weights": doc.weights, "results": doc.results}


def dense_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="an index with a dense component")
    p.add_argument("train", help="KILT-format training records (their provenance gives the gold passages)")
    p.add_argument("--task", default=None, help="the task's name (recorded with the model)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of the records held out to report R-Precision "
                   "before and after (0: train on all)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32, help="queries a step (in-batch negatives)")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--negatives", choices=("bm25", "dense", "none"), default="bm25",
                   help="hard negatives from BM25's (or the untrained encoder's) top hits; none: in-batch only")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--max-records", type=int, default=None, help="the first N records only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="training autocast and re-encoding precision (auto: bfloat16 where native)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--fusion", action="store_true", help="then fit the hybrid's fusion on the held-out records "
                   "(`genret tune`'s grid; never below the best member there, and a fusion kept over the best "
                   "member alone only where it beats it beyond noise, as in `genret adapt`) and save it in the index")
    p.add_argument("--force", action="store_true", help="train again when the index already holds this training")
