"""Training a cross-encoder reranker on a task: the training half of ``genret train rerank`` and of ``genret adapt``.

The model starts from the index's dense encoder as built (the packaged MiniLM by default: a BERT whose pooled
output gets a fresh one-logit head) and reads query and passage together.  Each training row is a query, one of
its gold passages and ``negatives`` hard negatives — non-gold passages the index's own first stages (BM25's and
the dense encoder's first hits, interleaved) rank high, the mistakes a reranker is there to mend — under
sentence-transformers' cross-encoder ``MultipleNegativesRankingLoss`` (the positive against the hard negatives and
``in_batch_negatives`` other queries' passages).  Training runs in ``CrossEncoderTrainer`` (the library's loop),
in bfloat16 autocast where the CPU multiplies it natively, within an optional wall-clock budget.

Trained on a few hundred claims (mini-KILT scifact: 400), such a model ranks worse than the first stage alone but
knows what it misses: ``genret adapt`` blends the two (``RerankedRetriever``'s ``weight``) and keeps the blend only
where it lifts its held-out fold.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path

from pydantic import Field

from genret.core import (
    DEFAULT_DENSE_MODEL,
    InputError,
    model_load_lock,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
from genret.indexing import Index, unit_text

from ._dense_train import DensePair, TrainRunConfig, gold_units, quiet_bars, run_trainer


class RerankTrainConfig(TrainRunConfig):
    """How ``fine_tune_reranker`` trains (defaults: the mini-KILT runs')."""

    base_model: str | None = Field(None, description="the model to start from (None: the index's dense encoder "
                                   "as built, else the packaged MiniLM)")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2, description="queries a step")
    # 2e-4, not 5e-5: a budget gives a CPU run a few dozen steps, and the new head learns in them only at the higher
    # rate (mini-KILT scifact, 64 steps: loss 1.94 → 0.70 against 1.95 → 1.27, held-out fold blended 70.7 against
    # 70.1; `genret train rerank runs/adapt6/scifact … --epochs 2 --lr 2e-4 | 5e-5`)
    lr: float = Field(2e-4, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    # on: a budget stops a CPU run about halfway through its planned epochs, at a rate still half its peak, where
    # the model is wherever the last high-rate steps left it (mini-KILT scifact, same rows, seed and settings: 50
    # steps gave a held-out blend of 71.9, 54 steps 64.5; with the schedule fitted to the budget, 52 steps 65.4 and
    # a final loss of 0.82 against 0.99; `genret train rerank runs/adapt7/scifact … --epochs 3 --max-minutes 8.4
    # [--no-budget-schedule]`, two copies side by side)
    budget_schedule: bool = True
    negatives: int = Field(3, ge=1, description="hard negatives a training row carries")
    # at least 1: the library's loss cannot sample 0, and 0 used to reach it as None, which means every other
    # passage in the batch (16 queries: 60 more pairs a query, a step's memory beyond 24 GiB on mini-KILT scifact)
    in_batch_negatives: int = Field(3, ge=1, description="other queries' passages each query is also ranked "
                                    "against")
    negative_depth: int = Field(15, ge=1, description="hard negatives drawn from the first N non-gold hits")
    positives_per_query: int = Field(2, ge=1, description="gold passages a query is paired with, at most")
    max_queries: int | None = Field(None, ge=1, description="train on at most this many queries (a seeded sample)")


def _first_stages(index: Index):
    from ._bm25 import BM25Retriever
    from ._dense import DenseRetriever, DenseSearchConfig

    out = []
    if index.has("bm25"):
        out.append(BM25Retriever(index))
    if index.has("dense"):
        out.append(DenseRetriever(index, DenseSearchConfig()))
    if not out:
        from genret.core import NotFoundError

        raise NotFoundError(f"index {index.path} has neither BM25 nor dense to draw hard negatives from")
    return out


def mine_rerank_rows(index: Index, pairs: Sequence[DensePair], config: RerankTrainConfig,
                     chunk: int = 256) -> list[dict[str, str]]:
    """Training rows ``{"query", "positive", "negative_1", …}`` (see the module doc); queries whose first stages
    offer fewer than ``negatives`` non-gold hits are skipped."""
    kept = gold_units(index, pairs, "train rerank")
    rng = random.Random(config.seed)
    if config.max_queries is not None and len(kept) > config.max_queries:
        kept = rng.sample(kept, config.max_queries)
    sources = _first_stages(index)
    plan: list[tuple[str, int, list[int]]] = []
    try:
        for start in range(0, len(kept), chunk):
            part = kept[start:start + chunk]
            k = config.negative_depth + max(len(gold) for _, gold in part)
            runs = [s.batch_search([q for q, _ in part], k=k) for s in sources]
            for i, (query, gold) in enumerate(part):
                ranked = [h.unit_id for hits in zip_longest(*(run[i] for run in runs)) for h in hits if h is not None]
                pool = [u for u in dict.fromkeys(ranked) if u not in gold][:config.negative_depth]
                if len(pool) < config.negatives:
                    continue
                for g in gold[:config.positives_per_query]:
                    plan.append((query, g, rng.sample(pool, config.negatives)))
    finally:
        for s in sources:
            s.close()
    with_title = bool(index.component("dense").params.get("with_title", True)) if index.has("dense") else True
    ids = sorted({i for _, g, negs in plan for i in (g, *negs)})
    texts = {u.unit_id: unit_text(u.title, u.text, with_title)
             for start in range(0, len(ids), 10_000) for u in index.store.get(ids[start:start + 10_000])}
    return [{"query": q, "positive": texts[g], **{f"negative_{j}": texts[n] for j, n in enumerate(negs, 1)}}
            for q, g, negs in plan]


def fine_tune_reranker(index: Index, pairs: Sequence[DensePair], out: str | Path,
                       config: RerankTrainConfig | None = None, *, progress: bool = True) -> dict:
    """Train a cross-encoder on ``pairs`` over ``index`` and save it to ``out`` (a sentence-transformers
    ``CrossEncoder`` folder).  Returns what happened: rows, queries, steps, the loss at the start and the end,
    seconds, the precision trained in, and whether the time budget stopped it."""
    config = config or RerankTrainConfig()
    t0 = time.perf_counter()
    rows = mine_rerank_rows(index, pairs, config)
    if len(rows) < 2:
        raise InputError(f"{len(rows)} reranker training row(s) with a gold passage in the index: nothing to "
                         "train on")
    mined = time.perf_counter() - t0
    base = config.base_model or (index.component("dense").model if index.has("dense") else None)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device, role="reranker training", fallback="float32")
    with quiet_bars(progress):
        with model_load_lock():
            from sentence_transformers.cross_encoder import CrossEncoder

            model = CrossEncoder(resolve_model_path(base or DEFAULT_DENSE_MODEL), num_labels=1,
                                 max_length=config.max_seq_length, device=device)
        deadline = None if config.max_minutes is None else t0 + 60 * config.max_minutes
        stats = _train(model, rows, config, device, dtype, progress, deadline)
        model.save_pretrained(str(out))
    return {"rows": len(rows), "queries": len({r["query"] for r in rows}), "mining_seconds": round(mined, 1),
            **stats, "precision": dtype, "base_model": base or DEFAULT_DENSE_MODEL,
            "seconds": round(time.perf_counter() - t0, 1)}


def _train(model, rows: list[dict[str, str]], config: RerankTrainConfig, device: str, dtype: str,
           progress: bool, deadline: float | None) -> dict:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    data = Dataset.from_list(rows).shuffle(seed=config.seed)
    loss = MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)
    with tempfile.TemporaryDirectory(prefix="genret-rerank-train-") as scratch:
        args = CrossEncoderTrainingArguments(
            output_dir=scratch, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr, warmup_steps=config.warmup_ratio, bf16=dtype == "bfloat16",
            fp16=dtype == "float16", use_cpu=device == "cpu", logging_steps=1, save_strategy="no", report_to=[],
            seed=config.seed, disable_tqdm=not progress, dataloader_num_workers=0)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss)
        return run_trainer(trainer, deadline, progress, config.budget_schedule)
