"""``train_retriever``: fine-tune the generative retriever's LM (and learned prompt vectors) on identifier pairs.

Where the pairs come from (``_train_data``, ``_train_pseudo``), mixed under task prompts (UGR):
- supervised, from KILT task files (``tasks``): the query → short spans of the gold unit that start on a query
  word, and the gold page's title;
- self-supervised, from the corpus alone (``corpus_pairs``, CorpusBrain-style): sentence → title, lead → title,
  sentence → span of another sentence;
- pseudo-labelled, from the corpus alone (``pseudo_labels`` = ``bm25`` or ``dense``, ``pseudo_queries``):
  keyword pseudo-queries cut from random units, labelled by the index's own retriever (its top hit is the gold
  unit), then turned into span/title targets like supervised records.  With ``corpus_pairs`` this trains on
  a user's corpus without any labels.
Targets are short by default (2–5 tokens): the part of a target that carries the query → passage decision is
its first tokens (which query-anchored n-gram to start), and the cross-entropy is a mean over target tokens, so
SEAL's 10-word spans spend most of each pair's gradient on memorising the passage's continuation, at the same
prompt cost.  ``min_len`` / ``max_len`` set other lengths.

Optimisation (``_train_loop``, on ``accelerate``): AdamW, warmup + linear/cosine decay, gradient accumulation,
bf16/fp16 autocast, several GPUs through ``accelerate launch``; optional frozen embeddings / lowest layers;
a second, LTRGR-style stage with a rank loss (``rank_loss``; ``_rank_loss``) against BM25 hard negatives.
Checkpoints every epoch (resumable), an optional dev evaluation after each epoch, a progress bar.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genret.core import ConfigError, GenretError
from genret.indexing import FMParams, Index

from .._checkpoint import VECTORS_FILE, load_prompt_vectors, load_state
from .._prompts import DEFAULT_PROMPTS
from ._pairs import Pair, corpus_pairs, mix, supervised_pairs, unit_pairs
from ._pseudo import Labelled, add_negatives, label_retriever, pseudo_labels, record_labels

log = logging.getLogger("genret")


class TrainTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    file: Path


class TrainConfig(BaseModel):
    """Settings of ``genret train retriever``."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="LM to start from (default: the index tokenizer's model); a "
                              "checkpoint directory also brings its prompt vectors (e.g. stage 2 from stage 1)")
    tasks: list[TrainTask] = Field(default_factory=list, description="KILT-format training files, by task")
    corpus_pairs: int = Field(0, ge=0, description="self-supervised pairs from the corpus")
    pseudo_labels: Literal["none", "bm25", "dense"] = Field(
        "none", description="label pseudo-queries from the corpus with the index's own retriever")
    pseudo_queries: int = Field(0, ge=0, description="pseudo-queries to label (0: as many as corpus_pairs)")
    pseudo_task: str = Field("generic", description="task prompt the pseudo-labelled pairs train")
    epochs: int = Field(1, ge=0, description="epochs of the generation stage")
    max_steps: int | None = Field(None, ge=1, description="at most this many updates per stage")
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer update")
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = 0.0
    schedule: Literal["linear", "cosine", "constant_with_warmup", "constant"] = "linear"
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="warmup share of each stage's updates")
    warmup_steps: int | None = Field(None, ge=0, description="warmup updates (overrides warmup_ratio)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="autocast precision (weights and checkpoints stay float32); auto: bf16 where the CPU or "
        "GPU multiplies bf16 natively (genret.core.resolve_dtype), else no")
    freeze_embeddings: bool = Field(False, description="freeze the input (and tied output) embeddings")
    freeze_layers: int = Field(0, ge=0, description="freeze the lowest N layers of each layer stack")
    prompt_kind: Literal["discrete", "continuous", "hybrid"] = "discrete"
    n_vectors: int = Field(8, ge=1)
    prompt_lr: float = Field(3e-3, gt=0)
    train_lm: bool = Field(True, description="False: learn only the prompt vectors (prompt tuning)")
    spans_per_record: int = Field(3, ge=1)
    min_len: int = Field(2, ge=1, description="shortest body-span target, in tokens")
    max_len: int = Field(5, ge=1, description="longest body-span target, in tokens")
    max_records: int | None = Field(None, ge=1, description="use at most this many records per task file")
    rank_loss: bool = Field(False, description="add the LTRGR-style rank stage after the generation epochs")
    rank_epochs: int = Field(1, ge=1, description="epochs of the rank stage")
    rank_margin: float = Field(1.0, ge=0, description="margin between gold and negative unit scores")
    rank_negatives: int = Field(3, ge=1, description="hard negatives per query (BM25 hits that are not gold)")
    rank_spans: int = Field(3, ge=1, description="spans sampled per unit for its score")
    rank_weight: float = Field(1.0, gt=0, description="weight of the rank loss")
    rank_gen_weight: float = Field(1.0, ge=0, description="weight of the generation loss in the rank stage")
    device: str = "auto"
    seed: int = 13
    save_every: int = Field(0, ge=0, description="also checkpoint every N updates (0: only at epoch ends)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} > max_len {self.max_len}")
        if self.epochs == 0 and not self.rank_loss:
            raise ValueError("epochs must be at least 1 (0 only with rank_loss: the rank stage alone)")
        return self


def _pseudo_count(config: TrainConfig) -> int:
    return config.pseudo_queries or config.corpus_pairs or 100


def build_pairs(config: TrainConfig, index: Index, encoder, fm, rng: random.Random,
                read_records: Callable[[Path], list[dict]],
                pseudo: list[Labelled] | None = None) -> tuple[list[Pair], dict]:
    """All training pairs, with targets that occur in the index; and counts by source.

    ``pseudo``: pseudo-labelled queries (``_train_pseudo.pseudo_labels``) to turn into span/title pairs."""
    sources: dict[str, list[Pair]] = {}
    for task in config.tasks:
        records = read_records(task.file)[: config.max_records]
        sources[task.name] = list(supervised_pairs(records, index.store, encoder, task=task.name, rng=rng,
                                                   spans_per_record=config.spans_per_record,
                                                   min_len=config.min_len, max_len=config.max_len))
    if config.corpus_pairs:
        sources["corpus"] = corpus_pairs(index.store, encoder, rng=rng, n=config.corpus_pairs,
                                         min_len=config.min_len, max_len=config.max_len)
    if pseudo:
        golds = {u.unit_id: u for u in index.store.get(sorted({g for lab in pseudo for g in lab.gold}))}
        sources["pseudo"] = [p for lab in pseudo for g in lab.gold
                             for p in unit_pairs(lab.task, lab.query, golds[g], encoder, rng,
                                                 spans=config.spans_per_record, min_len=config.min_len,
                                                 max_len=config.max_len, title=True)]
    stats = {}
    for name in list(sources):
        kept = [p for p in sources[name] if fm.count(p.target) > 0]
        stats[name] = {"pairs": len(kept), "dropped_not_in_index": len(sources[name]) - len(kept)}
        sources[name] = kept
    pairs = mix(sources, rng)
    if not pairs:
        raise GenretError("no training pairs: give task files (--task NAME=FILE), --corpus-pairs N or "
                          "--pseudo-labels bm25|dense")
    return pairs, stats


def _rank_examples(config: TrainConfig, index: Index, read_records: Callable, labeller, pseudo: list,
                   rng: random.Random, stats: dict) -> list[Labelled]:
    """The rank stage's queries with hard negatives (none without ``rank_loss``): LTRGR's negatives are BM25's,
    else the labeller's, else random units."""
    if not config.rank_loss:
        return []
    miner = label_retriever(index, "bm25") if index.has("bm25") else labeller
    labels = [lab for t in config.tasks
              for lab in record_labels(read_records(t.file)[: config.max_records], index.store, t.name)]
    examples = add_negatives(labels + pseudo, index.store, miner, rng, config.rank_negatives)
    stats["rank"] = {"queries": len(examples), "negatives": getattr(miner, "name", "random")}
    if not examples:
        raise GenretError("rank loss: no query with a gold unit (give --task files or --pseudo-labels)")
    return examples


def _prompts_and_vectors(config: TrainConfig, lm, task_names: list[str], resumed: Path | None) -> tuple[dict, dict]:
    """The task prompts and their learned vectors (continuous / hybrid prompts): from the run being resumed, else
    the starting checkpoint, else new ones near the mean token embedding; none for discrete prompts."""
    import torch

    prompts = dict(DEFAULT_PROMPTS)
    if config.prompt_kind == "discrete":
        return prompts, {}
    vectors: dict = {}
    if resumed is not None:
        vectors = load_prompt_vectors(resumed)
    elif config.model and (Path(config.model) / VECTORS_FILE).is_file():
        vectors = load_prompt_vectors(config.model)
    hidden = lm.model.get_input_embeddings().weight.shape[1]
    for t in task_names:
        base = prompts.get(t, prompts["generic"])
        prompts[t] = base.model_copy(update={"kind": config.prompt_kind, "n_vectors": config.n_vectors})
        if t not in vectors:
            with torch.no_grad():  # start near the mean token embedding
                init = lm.model.get_input_embeddings().weight[:1000].mean(0, keepdim=True).float().cpu()
                vectors[t] = init.repeat(config.n_vectors, 1) + 0.02 * torch.randn(config.n_vectors, hidden)
    return prompts, vectors


def _optimizer(config: TrainConfig, lm, module, with_vectors: bool):
    """AdamW over the LM's trainable parameters and the prompt vectors, each group with its learning rate."""
    import torch

    groups = []
    lm_params = [p for p in lm.model.parameters() if p.requires_grad]
    if lm_params:
        groups.append({"params": lm_params, "lr": config.lr, "base_lr": config.lr,
                       "weight_decay": config.weight_decay})
    if with_vectors:
        groups.append({"params": list(module.prompt_vectors), "lr": config.prompt_lr, "base_lr": config.prompt_lr,
                       "weight_decay": 0.0})
    if not groups:
        raise ConfigError("nothing to train: the LM is off or frozen and the prompts are discrete")
    return torch.optim.AdamW(groups)


def train_retriever(config: TrainConfig, index: Index, out: str | Path, *, resume: bool = False,
                    read_records: Callable[[Path], list[dict]], on_epoch_end: Callable | None = None,
                    progress: bool = True) -> dict:
    """Train and checkpoint into ``out``; returns a summary (steps, losses, minutes, dev results).

    ``read_records`` reads a KILT task file (``eval.read_kilt``); ``on_epoch_end(lm, prompts, vectors,
    epoch)`` may evaluate on dev and return a dict that is logged and stored in the trainer state.
    Without task files, ``corpus_pairs`` and/or ``pseudo_labels`` train on the corpus alone.  Run it under
    ``accelerate launch`` to train on several GPUs (each process reads its share of every batch).
    """
    import torch

    from genret.indexing.fm import load_fm

    from ..._lm import load_lm
    from .._unit_tokens import UnitEncoder
    from ._loop import Run, make_accelerator, restore, run_stage
    from ._model import freeze, make_train_module
    from ._rank_loss import UnitTokens

    out = Path(out)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    fm_comp = index.component("fm")
    fm = load_fm(index.path, fm_comp)
    encoder = UnitEncoder.from_component(index.path, fm_comp)
    state = load_state(out) if resume and out.exists() else None
    if resume and state is None:
        raise ConfigError(f"nothing to resume in {out}")
    acc = make_accelerator(config, find_unused=config.prompt_kind != "discrete")
    spec = str(out) if state else (config.model or fm_comp.typed_params(FMParams).tokenizer)
    lm = load_lm(spec, str(acc.device), dtype="float32")  # float32 weights; autocast gives bf16/fp16 compute
    lm.device = str(acc.device)
    if lm.tokenizer.get_vocab() != encoder.tokenizer.get_vocab():
        raise ConfigError(f"model {spec!r} has another tokenizer than the index's FM-index")

    labeller = label_retriever(index, config.pseudo_labels)  # None for "none"
    pseudo = pseudo_labels(index.store, labeller, rng, _pseudo_count(config), task=config.pseudo_task,
                           negatives=config.rank_negatives) if labeller is not None else []
    pairs, stats = build_pairs(config, index, encoder, fm, rng, read_records, pseudo)
    rank_examples = _rank_examples(config, index, read_records, labeller, pseudo, rng, stats)
    task_names = sorted({p.task for p in pairs} | {e.task for e in rank_examples} | {"generic"})
    prompts, vectors = _prompts_and_vectors(config, lm, task_names, out if state else None)
    if config.train_lm:
        freeze(lm.model, embeddings=config.freeze_embeddings, layers=config.freeze_layers)
    else:
        lm.model.requires_grad_(False)
    module = make_train_module(lm.model, lm.seq2seq, lm.tokenizer.pad_token_id, vectors).to(acc.device)
    module, optimizer = acc.prepare(module, _optimizer(config, lm, module, bool(vectors)))
    module.train()
    run = Run(config, acc, module, lm, prompts, optimizer, pairs, rank_examples,
              UnitTokens(index.store, encoder) if rank_examples else None, out, stats,
              history=list(state.get("history", [])) if state else [], step=state["step"] if state else 0)
    start_epoch, stage, stage_step = 0, "generate", 0
    if state:
        restore(run, state)
        start_epoch = state["epoch"]
        stage, stage_step = state.get("stage", "generate"), state.get("stage_step", state["step"])
        if stage == "generate" and start_epoch >= config.epochs:  # stage 1 complete: the rank stage starts afresh
            stage, stage_step = "rank", 0
    t0 = time.perf_counter()
    if stage == "generate" and config.epochs:
        run_stage(run, "generate", 0, config.epochs, start_epoch=start_epoch, stage_step=stage_step,
                  on_epoch_end=on_epoch_end, progress=progress, t0=t0)
        start_epoch, stage_step = config.epochs, 0
    if config.rank_loss:
        run_stage(run, "rank", config.epochs, config.rank_epochs, start_epoch=start_epoch, stage_step=stage_step,
                  on_epoch_end=on_epoch_end, progress=progress, t0=t0)
    lm.model.eval()
    return {"steps": run.step, "pairs": len(pairs), "sources": stats, "history": run.history,
            "minutes": round((time.perf_counter() - t0) / 60, 2), "device": lm.device,
            "mixed_precision": acc.mixed_precision, "processes": acc.num_processes, "out": str(out)}
