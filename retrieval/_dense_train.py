"""Fine-tuning the index's dense encoder on a task: the training half of ``genret train dense``.

The recipe is the one dense retrievers are trained with (DPR; sentence-transformers' MS MARCO models): a query,
a gold passage and a hard negative — a passage BM25 (or the untrained encoder) ranks high for the query that is
not gold — under the multiple-negatives ranking loss (every other passage of the batch is a negative too).
Training runs in sentence-transformers' ``SentenceTransformerTrainer`` (a library loop: accelerate, mixed
precision, schedules), in bfloat16 autocast where the hardware multiplies it natively (``genret.core.resolve_dtype``),
within an optional wall-clock budget.  Measured on mini-KILT (bench/README.md, "Adapted dense"): one epoch over
climate_fever's 363 training claims took about a minute on 2 cores and lifted dev passage R-Precision by ~7 points.

``mine_triplets`` makes the training rows; ``fine_tune_dense`` trains and saves a model folder, which
``genret.indexing.write_adapted_dense`` puts into the index.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from genret.core import model_load_lock, resolve_device, resolve_dtype, resolve_model_path
from genret.indexing import Index, unit_text

log = logging.getLogger("genret")


class TrainRunConfig(BaseModel):
    """What every training run here shares: sequence length, time budget, device, precision, seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_seq_length: int = Field(256, ge=16)
    max_minutes: float | None = Field(None, gt=0, description="stop training this many minutes after the start "
                                      "(mining hard negatives and loading the model included)")
    budget_schedule: bool = Field(False, description="with max_minutes: the learning rate decays to 0 at the step "
                                  "the budget is expected to stop at (re-estimated each step), not at the end of the "
                                  "planned epochs, which a budget may never reach")
    device: str = "auto"
    dtype: str = Field("auto", description="auto: bfloat16 autocast where native, else float32")
    seed: int = 0


class DenseTrainConfig(TrainRunConfig):
    """How ``fine_tune_dense`` trains (defaults: what the mini-KILT runs used)."""

    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=2, description="queries a step; the other passages of the batch are negatives")
    lr: float = Field(3e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    negatives: Literal["bm25", "dense", "none"] = Field(
        "bm25", description="where hard negatives come from: BM25's or the untrained encoder's top hits; none: "
        "in-batch negatives only")
    negative_depth: int = Field(10, ge=1, description="a query's hard negative: one of its first N non-gold hits")
    positives_per_query: int = Field(3, ge=1, description="gold passages a query is paired with, at most")


@dataclass(frozen=True)
class DensePair:
    """A training query and its gold passages as ``(page id, paragraph)`` (KILT provenance)."""

    query: str
    gold: tuple[tuple[str, int], ...]


def pairs_from_kilt(records: Sequence[dict]) -> list[DensePair]:
    """One ``DensePair`` per KILT record: its input and the passages its outputs' provenance names (a record
    without paragraph-level provenance gets no gold passage, and ``mine_triplets`` skips it)."""
    return [DensePair(str(r["input"]), tuple(dict.fromkeys(
        (str(p["wikipedia_id"]), int(p["start_paragraph_id"]))
        for o in r.get("output", []) for p in o.get("provenance") or [] if p.get("start_paragraph_id") is not None)))
        for r in records]


def _negative_source(index: Index, which: str):
    from ._bm25 import BM25Retriever
    from ._dense import DenseRetriever, DenseSearchConfig

    if which == "bm25" and index.has("bm25"):
        return BM25Retriever(index)
    if which in ("bm25", "dense"):
        if which == "bm25":
            log.warning("train dense: the index has no BM25 component; hard negatives come from its dense encoder")
        return DenseRetriever(index, DenseSearchConfig(adapted=False))
    return None


def mine_triplets(index: Index, pairs: Sequence[DensePair], config: DenseTrainConfig) -> list[dict[str, str]]:
    """Training rows ``{"anchor", "positive", "negative"?}``: each query with up to ``positives_per_query`` of its
    gold units (every unit overlapping a gold paragraph) and one hard negative each.  Queries with no gold unit
    in the index are skipped (logged)."""
    kept = gold_units(index, pairs, "train dense")
    negatives = _hard_negatives(index, kept, config)
    rng = random.Random(config.seed)
    plan: list[tuple[str, int, int | None]] = []  # (query, positive, negative) unit ids
    for (query, gold), hard in zip(kept, negatives):
        for g in gold[:config.positives_per_query]:
            neg = None if hard is None else rng.choice(hard) if hard else rng.randrange(len(index.store))
            plan.append((query, g, neg))
    with_title = bool(index.component("dense").params.get("with_title", True))
    ids = sorted({i for _, g, n in plan for i in (g, n) if i is not None})
    texts = {u.unit_id: unit_text(u.title, u.text, with_title)
             for start in range(0, len(ids), 10_000) for u in index.store.get(ids[start:start + 10_000])}
    return [{"anchor": q, "positive": texts[g], **({} if n is None else {"negative": texts[n]})} for q, g, n in plan]


def gold_units(index: Index, pairs: Sequence[DensePair], what: str) -> list[tuple[str, list[int]]]:
    """``(query, its gold unit ids)`` for each pair with a gold unit in the index (every unit overlapping a gold
    paragraph); the others are skipped, with a warning naming ``what`` skips them."""
    by_paragraph: dict[tuple[str, int], list[int]] = {}
    for batch in index.store.iter_units(batch=4096):
        for u in batch:
            for par in range(u.start_paragraph, u.end_paragraph + 1):
                by_paragraph.setdefault((u.page_id, par), []).append(u.unit_id)
    queries = [(p.query, sorted({i for key in p.gold for i in by_paragraph.get(key, ())})) for p in pairs]
    kept = [(q, gold) for q, gold in queries if gold]
    if len(kept) < len(queries):
        log.warning("%s: %d of %d queries have no gold passage in the index (skipped)", what,
                    len(queries) - len(kept), len(queries))
    return kept


def _hard_negatives(index: Index, kept: list[tuple[str, list[int]]], config: DenseTrainConfig,
                    chunk: int = 256) -> list[list[int] | None]:
    """For each query, the first ``negative_depth`` non-gold units of the negatives' retriever (None for every
    query when negatives are in-batch only); queries are searched a batch at a time."""
    source = _negative_source(index, config.negatives)
    if source is None:
        return [None] * len(kept)
    out: list[list[int] | None] = []
    try:
        for start in range(0, len(kept), chunk):
            part = kept[start:start + chunk]
            k = config.negative_depth + max(len(gold) for _, gold in part)
            for (_, gold), hits in zip(part, source.batch_search([q for q, _ in part], k=k)):
                out.append([h.unit_id for h in hits if h.unit_id not in gold][:config.negative_depth])
    finally:
        source.close()
    return out


def fine_tune_dense(index: Index, pairs: Sequence[DensePair], out: str | Path,
                    config: DenseTrainConfig | None = None, *, progress: bool = True) -> dict:
    """Fine-tune the encoder of ``index``'s ``dense`` component on ``pairs`` and save it to ``out`` (a
    sentence-transformers folder).  Returns what happened: rows, steps, the loss at the start and the end,
    seconds, the precision trained in, and whether the time budget stopped it."""
    config = config or DenseTrainConfig()
    if not index.has("dense"):
        from genret.core import NotFoundError

        raise NotFoundError(f"index {index.path} has no dense component to fine-tune; build it with "
                            "`genret index … --dense`")
    t0 = time.perf_counter()
    rows = mine_triplets(index, pairs, config)
    if len(rows) < 2:
        from genret.core import InputError

        raise InputError(f"{len(rows)} training pair(s) with a gold passage in the index: nothing to train on")
    mined = time.perf_counter() - t0
    with quiet_bars(progress):
        with model_load_lock():
            from sentence_transformers import SentenceTransformer

            device = resolve_device(config.device)
            model = SentenceTransformer(resolve_model_path(index.component("dense").model), device=device)
        model.max_seq_length = config.max_seq_length
        dtype = resolve_dtype(config.dtype, device, role="dense training", fallback="float32")
        deadline = None if config.max_minutes is None else t0 + 60 * config.max_minutes
        stats = _train(model, rows, out, config, device, dtype, progress, deadline)
        model.save(str(out))  # its model card computes "widget examples" under a bar of its own
    return {"rows": len(rows), "queries": len(pairs), "mining_seconds": round(mined, 1), **stats,
            "precision": dtype, "seconds": round(time.perf_counter() - t0, 1)}


@contextmanager
def quiet_bars(progress: bool) -> Iterator[None]:
    """Without ``progress``, the libraries' own bars (weight loading, the model card's examples) stay quiet too:
    tqdm reads ``TQDM_DISABLE`` (set for the block only)."""
    before = os.environ.get("TQDM_DISABLE")
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def run_trainer(trainer, deadline: float | None, progress: bool, budget_schedule: bool = False) -> dict:
    """Train with a sentence-transformers trainer (a transformers ``Trainer``) until ``deadline`` (a
    ``time.perf_counter()`` value; one step at least), its progress a bar without the per-step losses on stdout
    (where results go); returns the steps, the loss at the start and the end (means of three logged steps), the
    last learning rate, whether the budget stopped it, the steps the schedule ended at, and the seconds.  With
    ``budget_schedule`` the linear schedule's end is moved, after each step, to the step the deadline is expected
    at (the steps so far at their mean time), where that comes before the planned end
    (``budget_schedule_steps``)."""
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # tqdm.write: each step's losses to stdout
            return

    class Budget(TrainerCallback):
        stopped = False
        total: int | None = None

        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            now = time.perf_counter()
            if deadline is not None and now > deadline:
                control.should_training_stop = Budget.stopped = True
            elif budget_schedule and deadline is not None and isinstance(lr_scheduler, LambdaLR):
                per_step = (now - start) / state.global_step
                total = min(state.max_steps, state.global_step + int((deadline - now) / per_step) + 1)
                if total < state.max_steps:
                    Budget.total = total
                    lr_scheduler.lr_lambdas = [linear_schedule(args.get_warmup_steps(state.max_steps), total)
                                               ] * len(lr_scheduler.lr_lambdas)

    trainer.add_callback(Budget())
    trainer.remove_callback(PrinterCallback)  # it prints each step's losses to stdout, where results go
    if progress:  # the bar without the losses (the log history keeps them)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(Bar())
    start = time.perf_counter()
    trainer.train()
    losses_seen = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rates = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    first, last = losses_seen[:3], losses_seen[-3:]
    return {"steps": trainer.state.global_step,
            "loss_first": round(sum(first) / len(first), 4) if first else None,
            "loss_last": round(sum(last) / len(last), 4) if last else None,
            "lr_last": float(f"{rates[-1]:.3g}") if rates else None,
            "budget_stopped": Budget.stopped, "budget_schedule_steps": Budget.total,
            "train_seconds": round(time.perf_counter() - start, 1)}


def linear_schedule(warmup: int, total: int):
    """The learning-rate factor at a step: up from 0 over ``warmup`` steps (at most half of ``total``), then down
    to 0 at step ``total`` (transformers' linear schedule, ``total`` moved)."""
    warmup = min(warmup, total // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _train(model, rows: list[dict[str, str]], out: str | Path, config: DenseTrainConfig, device: str, dtype: str,
           progress: bool, deadline: float | None) -> dict:
    import tempfile

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.training_args import BatchSamplers

    data = Dataset.from_list(rows).shuffle(seed=config.seed)
    with tempfile.TemporaryDirectory(prefix="genret-dense-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr, warmup_steps=config.warmup_ratio, bf16=dtype == "bfloat16",
            fp16=dtype == "float16", use_cpu=device == "cpu", batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_steps=1, save_strategy="no", report_to=[], seed=config.seed, disable_tqdm=not progress,
            dataloader_num_workers=0)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=losses.MultipleNegativesRankingLoss(model))
        return run_trainer(trainer, deadline, progress, config.budget_schedule)
