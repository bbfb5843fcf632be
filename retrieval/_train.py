"""``train_retriever``: fine-tune the generative retriever's LM (and learned prompt vectors) on identifier pairs.

Supervised pairs from KILT task files, self-supervised pairs from the corpus, mixed under task prompts
(``_train_data``).  Teacher forcing with cross-entropy on the target tokens only; AdamW; checkpoints
every epoch (resumable: model, prompts, prompt vectors, optimizer, step); an optional dev evaluation
after each epoch; a progress bar with the running loss.  CPU or GPU (``device``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from indexing import ConfigError, GenretError, Index
from indexing._progress import progress_bar

from ._prompts import DEFAULT_PROMPTS, PromptSpec, prompt_text
from ._train_data import Pair, corpus_pairs, mix, supervised_pairs
from ._train_io import load_prompt_vectors, load_state, restore_optimizer, save_checkpoint

log = logging.getLogger("genret")


class TrainTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    file: Path


class TrainConfig(BaseModel):
    """Settings of ``genret train retriever``."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="LM to start from (default: the index tokenizer's model)")
    tasks: list[TrainTask] = Field(default_factory=list, description="KILT-format training files, by task")
    corpus_pairs: int = Field(0, ge=0, description="self-supervised pairs from the corpus")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = 0.0
    prompt_kind: Literal["discrete", "continuous", "hybrid"] = "discrete"
    n_vectors: int = Field(8, ge=1)
    prompt_lr: float = Field(3e-3, gt=0)
    train_lm: bool = Field(True, description="False: learn only the prompt vectors (prompt tuning)")
    spans_per_record: int = Field(3, ge=1)
    min_len: int = Field(3, ge=1)
    max_len: int = Field(10, ge=1)
    max_records: int | None = Field(None, ge=1, description="use at most this many records per task file")
    device: str = "auto"
    seed: int = 13
    save_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: only at epoch ends)")


def build_pairs(config: TrainConfig, index: Index, encoder, fm, rng: random.Random,
                read_records: Callable[[Path], list[dict]]) -> tuple[list[Pair], dict]:
    """All training pairs, with targets that occur in the index; and counts by source."""
    sources: dict[str, list[Pair]] = {}
    for task in config.tasks:
        records = read_records(task.file)[: config.max_records]
        sources[task.name] = list(supervised_pairs(records, index.store, encoder, task=task.name, rng=rng,
                                                   spans_per_record=config.spans_per_record,
                                                   min_len=config.min_len, max_len=config.max_len))
    if config.corpus_pairs:
        sources["corpus"] = corpus_pairs(index.store, encoder, rng=rng, n=config.corpus_pairs,
                                         min_len=config.min_len, max_len=config.max_len)
    stats = {}
    for name in list(sources):
        kept = [p for p in sources[name] if fm.count(p.target) > 0]
        stats[name] = {"pairs": len(kept), "dropped_not_in_index": len(sources[name]) - len(kept)}
        sources[name] = kept
    pairs = mix(sources, rng)
    if not pairs:
        raise GenretError("no training pairs: give task files (--task NAME=FILE) or --corpus-pairs N")
    return pairs, stats


class _Batcher:
    """Turns pairs into padded tensors for teacher forcing (causal or seq2seq)."""

    def __init__(self, lm, prompts: dict[str, PromptSpec], vectors: dict) -> None:
        self.lm, self.prompts, self.vectors = lm, prompts, vectors

    def spec(self, task: str) -> PromptSpec:
        return self.prompts.get(task, self.prompts["generic"])

    def loss(self, batch: list[Pair]):
        import torch

        lm, tok = self.lm, self.lm.tokenizer
        embed = lm.model.get_input_embeddings()
        rows, labels = [], []
        for p in batch:
            prompt = tok(prompt_text(self.spec(p.task), p.query, p.kind))["input_ids"][-256:]
            rows.append((p.task, prompt, list(p.target)))
        pad = tok.pad_token_id
        seqs, lab_rows, prefix_lens = [], [], []
        for task, prompt, target in rows:
            n_pre = self.vectors[task].shape[0] if task in self.vectors else 0
            prefix_lens.append(n_pre)
            if lm.seq2seq:
                seqs.append(prompt)
                lab_rows.append(target)
            else:
                seqs.append(prompt + target)
                lab_rows.append([-100] * (n_pre + len(prompt)) + target)
        width = max(len(s) + n for s, n in zip(seqs, prefix_lens))
        dev = lm.device
        embs, masks = [], []
        for (task, _, _), s, n in zip(rows, seqs, prefix_lens):
            e = embed(torch.tensor(s, device=dev))
            if n:
                e = torch.cat([self.vectors[task].to(dev, e.dtype), e], 0)
            fill = width - e.shape[0]
            embs.append(torch.cat([e, embed(torch.full((fill,), pad, device=dev))], 0))
            masks.append(torch.tensor([1] * e.shape[0] + [0] * fill, device=dev))
        inputs, mask = torch.stack(embs), torch.stack(masks)
        if lm.seq2seq:
            lw = max(len(x) for x in lab_rows)
            labels = torch.tensor([x + [-100] * (lw - len(x)) for x in lab_rows], device=dev)
            return lm.model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in lab_rows], device=dev)
        return lm.model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss


def train_retriever(config: TrainConfig, index: Index, out: str | Path, *, resume: bool = False,
                    read_records: Callable[[Path], list[dict]], on_epoch_end: Callable | None = None,
                    progress: bool = True) -> dict:
    """Train and checkpoint into ``out``; returns a summary (steps, losses, minutes, dev results).

    ``read_records`` reads a KILT task file (``eval.read_kilt``); ``on_epoch_end(lm, prompts, vectors,
    epoch)`` may evaluate on dev and return a dict that is logged and stored in the trainer state.
    """
    import torch

    from indexing._fm_build import load_fm

    from ._lm import load_lm
    from ._unit_encoder import UnitEncoder

    out = Path(out)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    fm_comp = index.component("fm")
    fm = load_fm(index.path, fm_comp)
    encoder = UnitEncoder.from_component(index.path, fm_comp)
    state = load_state(out) if resume and out.exists() else None
    if resume and state is None:
        raise ConfigError(f"nothing to resume in {out}")
    spec = str(out) if state else (config.model or fm_comp.params["tokenizer"])
    lm = load_lm(spec, config.device)
    if lm.tokenizer.get_vocab() != encoder.tokenizer.get_vocab():
        raise ConfigError(f"model {spec!r} has another tokenizer than the index's FM-index")
    pairs, stats = build_pairs(config, index, encoder, fm, rng, read_records)
    prompts = dict(DEFAULT_PROMPTS)
    task_names = sorted({p.task for p in pairs} | {"generic"})
    vectors: dict = load_prompt_vectors(out) if state else {}
    hidden = lm.model.get_input_embeddings().weight.shape[1]
    if config.prompt_kind != "discrete":
        for t in task_names:
            base = prompts.get(t, prompts["generic"])
            prompts[t] = base.model_copy(update={"kind": config.prompt_kind, "n_vectors": config.n_vectors})
            if t not in vectors:
                with torch.no_grad():  # start near the mean token embedding
                    init = lm.model.get_input_embeddings().weight[:1000].mean(0, keepdim=True).float().cpu()
                    vectors[t] = init.repeat(config.n_vectors, 1) + 0.02 * torch.randn(config.n_vectors, hidden)
        vectors = {t: v.detach().to(lm.device).clone().requires_grad_(True) for t, v in vectors.items()}
    lm.model.train()
    groups = []
    if config.train_lm:
        groups.append({"params": [p for p in lm.model.parameters()], "lr": config.lr,
                       "weight_decay": config.weight_decay})
    else:
        for p in lm.model.parameters():
            p.requires_grad_(False)
    if vectors:
        groups.append({"params": list(vectors.values()), "lr": config.prompt_lr, "weight_decay": 0.0})
    if not groups:
        raise ConfigError("nothing to train: train_lm is off and the prompts are discrete")
    optimizer = torch.optim.AdamW(groups)
    step, start_epoch = 0, 0
    if state:
        step, start_epoch = state["step"], state["epoch"]
        restore_optimizer(optimizer, out, state["optimizer_param_groups"])
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
    batcher = _Batcher(lm, prompts, vectors)
    history = list(state.get("history", [])) if state else []
    t0 = time.perf_counter()
    with progress_bar(total, "training", progress) as bar:
        bar.update(step)
        for epoch in range(start_epoch, config.epochs):
            order = list(range(len(pairs)))
            random.Random(config.seed + epoch).shuffle(order)
            skip = step - epoch * steps_per_epoch if state and epoch == start_epoch else 0
            losses = []
            for b in range(max(skip, 0), steps_per_epoch):
                if step >= total:
                    break
                batch = [pairs[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
                loss = batcher.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                optimizer.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                if config.save_every and step % config.save_every == 0:
                    _save(out, lm, prompts, vectors, optimizer, step, epoch, history, stats, config)
            record = {"epoch": epoch + 1, "step": step, "mean_loss": sum(losses) / max(len(losses), 1),
                      "minutes": round((time.perf_counter() - t0) / 60, 2)}
            if on_epoch_end is not None:
                lm.model.eval()
                record["dev"] = on_epoch_end(lm, prompts, {t: v.detach() for t, v in vectors.items()}, epoch + 1)
                lm.model.train()
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, record)
            _save(out, lm, prompts, vectors, optimizer, step, epoch + 1, history, stats, config)
            if step >= total:
                break
    lm.model.eval()
    return {"steps": step, "pairs": len(pairs), "sources": stats, "history": history,
            "minutes": round((time.perf_counter() - t0) / 60, 2), "device": lm.device, "out": str(out)}


def _save(out, lm, prompts, vectors, optimizer, step, epoch, history, stats, config) -> None:
    state = {"step": step, "epoch": epoch, "history": history, "sources": stats,
             "config": config.model_dump(mode="json")}
    save_checkpoint(out, lm, prompts, vectors, state, optimizer)
