"""The training loop, on Hugging Face ``accelerate``: one code path for CPU, one GPU, several GPUs
(``accelerate launch -m genret train retriever …``) and mixed precision (bf16/fp16 autocast; weights stay
float32, so checkpoints load anywhere).

Two stages, each with its own warmup + decay schedule (``transformers.get_scheduler``), sharing the AdamW
state: ``generate`` (teacher-forced cross-entropy on the identifier pairs) for ``epochs`` epochs, then, with
``rank_loss``, ``rank`` (LTRGR: the margin loss of ``_rank_loss`` between a gold unit's and hard negatives'
span scores, plus ``rank_gen_weight`` × the generation loss) for ``rank_epochs`` epochs.  Gradient
accumulation comes from ``accelerate``; a step is one optimizer update.  Checkpoints after every epoch (and
every ``save_every`` updates) hold model, prompts, prompt vectors, optimizer and the step counters; resuming
restarts at the saved update, the schedule fast-forwarded to it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genret.core import progress_bar, resolve_device, resolve_dtype

from .._checkpoint import restore_optimizer, save_checkpoint
from .._prompts import PromptSpec, prompt_text
from ._pairs import Pair
from ._pseudo import Labelled
from ._rank_loss import UnitTokens, margin_loss, rank_batch

log = logging.getLogger("genret")


def make_accelerator(config, find_unused: bool):
    """An ``Accelerator`` for ``config`` (a fresh state per call in a single process, so that several trainings
    with other settings can run in one process); mixed precision the machine cannot run falls back to float32
    with a warning."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    device = resolve_device(config.device)
    single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    if single and device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    kwargs = dict(cpu=device == "cpu", gradient_accumulation_steps=config.gradient_accumulation_steps,
                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    mixed = config.mixed_precision
    if mixed == "auto":
        mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(
            resolve_dtype("auto", device, role="training", training=True), "no")
    for attempt in (mixed, "no"):
        if single:
            AcceleratorState._reset_state(reset_partial_state=True)
        try:
            acc = Accelerator(mixed_precision=attempt, **kwargs)
        except (ValueError, RuntimeError) as exc:
            if attempt == "no":
                raise
            log.warning("mixed precision %r is not available on %s (%s): training in float32", mixed, device, exc)
            continue
        return acc
    raise AssertionError("unreachable")


@dataclass
class Run:
    """Everything one training run holds."""

    config: object
    accelerator: object
    module: object  # the prepared TrainModule
    lm: object  # LoadedLM (its model is the module's unwrapped LM)
    prompts: dict[str, PromptSpec]
    optimizer: object
    pairs: list[Pair]
    rank_examples: list[Labelled]
    units: UnitTokens | None
    out: Path
    stats: dict
    history: list = field(default_factory=list)
    step: int = 0
    _prompt_ids: dict = field(default_factory=dict)

    def row(self, p: Pair):
        key = (p.task, p.query, p.kind)
        if key not in self._prompt_ids:
            spec = self.prompts.get(p.task, self.prompts["generic"])
            self._prompt_ids[key] = self.lm.tokenizer(prompt_text(spec, p.query, p.kind))["input_ids"][-256:]
        return p.task, self._prompt_ids[key], list(p.target)

    def vectors(self) -> dict:
        return {t: v.detach() for t, v in self.accelerator.unwrap_model(self.module).vectors().items()}

    def save(self, epoch: int, stage: str, stage_step: int) -> None:
        if self.accelerator.is_main_process:
            state = {"step": self.step, "epoch": epoch, "stage": stage, "stage_step": stage_step,
                     "history": self.history, "sources": self.stats, "config": self.config.model_dump(mode="json")}
            save_checkpoint(self.out, self.lm, self.prompts, self.vectors(), state, self.optimizer)
        self.accelerator.wait_for_everyone()


def _schedule(run: Run, total: int, done: int):
    """A fresh warmup + decay schedule over ``total`` updates, fast-forwarded by ``done``."""
    from transformers import get_scheduler

    cfg = run.config
    opt = run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer
    for g in opt.param_groups:
        g["lr"] = g["base_lr"]
        g.pop("initial_lr", None)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total)
    sched = get_scheduler(cfg.schedule, opt, num_warmup_steps=min(warmup, total), num_training_steps=max(total, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(done):
            sched.step()
    return sched


def _micro_batches(n_items: int, size: int, accum: int, procs: int) -> tuple[int, int]:
    """(micro-batches in one epoch, updates per epoch and process)."""
    n_micro = max(1, math.ceil(n_items / size))
    return n_micro, math.ceil(math.ceil(n_micro / procs) / accum)


def run_stage(run: Run, stage: str, first_epoch: int, n_epochs: int, *, start_epoch: int, stage_step: int,
              on_epoch_end: Callable | None, progress: bool, t0: float) -> None:
    """Epochs ``first_epoch .. first_epoch + n_epochs - 1`` (global numbering) of ``stage``, from ``start_epoch``
    and ``stage_step`` updates already done in this stage (resume)."""

    cfg, acc = run.config, run.accelerator
    rank = stage == "rank"
    items = run.rank_examples if rank else run.pairs
    size = max(1, cfg.batch_size // (1 + cfg.rank_negatives)) if rank else cfg.batch_size
    accum, procs = cfg.gradient_accumulation_steps, acc.num_processes
    n_micro, per_epoch = _micro_batches(len(items), size, accum, procs)
    total = min(cfg.max_steps or 10**12, per_epoch * n_epochs)
    sched = _schedule(run, total, stage_step)
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    rng = random.Random(cfg.seed + 7919 * (run.step + 1))
    gen_weight = cfg.rank_gen_weight if rank else 1.0
    with progress_bar(total, f"training ({stage})", progress and acc.is_main_process) as bar:
        bar.update(stage_step)
        for epoch in range(max(start_epoch, first_epoch), first_epoch + n_epochs):
            order = list(range(len(items)))
            random.Random(cfg.seed + epoch).shuffle(order)
            gen_order = list(range(len(run.pairs)))
            random.Random(cfg.seed + 31 * epoch).shuffle(gen_order)
            logs: dict[str, list[float]] = {"loss": [], "gen_loss": [], "rank_loss": [], "rank_accuracy": []}
            for u in range(max(0, stage_step - (epoch - first_epoch) * per_epoch), per_epoch):
                if stage_step >= total:
                    break
                for a in range(accum):
                    j = (u * accum + a) * procs + acc.process_index
                    m = j % n_micro
                    batch = [items[i] for i in order[m * size:(m + 1) * size]]
                    if not rank:
                        gen = batch
                    elif gen_weight > 0:  # the rank stage keeps the generation loss on a cycle of the pairs
                        gen = [run.pairs[gen_order[(j * cfg.batch_size + k) % len(run.pairs)]]
                               for k in range(cfg.batch_size)]
                    else:
                        gen = []
                    rb = rank_batch(batch, run.units, rng, spans=cfg.rank_spans, min_len=cfg.min_len,
                                    max_len=cfg.max_len) if rank else None
                    logs["loss"].append(_micro_step(run, gen, rb, gen_weight, params, sched, logs))
                run.step += 1
                stage_step += 1
                bar.update(1)
                recent = logs["loss"][-20 * accum:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
                if cfg.save_every and run.step % cfg.save_every == 0:
                    run.save(epoch, stage, stage_step)
            _end_epoch(run, stage, epoch, stage_step, sched, logs, on_epoch_end, t0)
            if stage_step >= total:
                break


def _micro_step(run: Run, gen: list, rb, gen_weight: float, params: list, sched, logs: dict) -> float:
    """One micro-batch: the generation loss over ``gen`` and the rank loss over ``rb`` (a rank batch or None),
    backward, and the optimizer and schedule steps when the accumulation is complete; returns the loss."""
    import torch

    cfg, acc = run.config, run.accelerator
    rows = [run.row(p) for p in gen] + ([run.row(p) for p in rb.pairs] if rb else [])
    with acc.accumulate(run.module):
        lp, mask = run.module(rows)
        loss = torch.zeros((), device=lp.device)
        if gen:
            g_lp, g_m = lp[:len(gen)], mask[:len(gen)]
            g_loss = -(g_lp * g_m).sum() / g_m.sum()
            loss = loss + gen_weight * g_loss
            logs["gen_loss"].append(float(g_loss.detach()))
        if rb and rb.groups:
            r_lp, r_m = lp[len(gen):], mask[len(gen):]
            span = (r_lp * r_m).sum(1) / r_m.sum(1).clamp(min=1)
            r_loss, r_acc = margin_loss(span, rb.groups, cfg.rank_margin)
            loss = loss + cfg.rank_weight * r_loss
            logs["rank_loss"].append(float(r_loss.detach()))
            logs["rank_accuracy"].append(r_acc)
        acc.backward(loss)
        if acc.sync_gradients:
            acc.clip_grad_norm_(params, 1.0)
        run.optimizer.step()
        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
            sched.step()
        run.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _end_epoch(run: Run, stage: str, epoch: int, stage_step: int, sched, logs: dict, on_epoch_end: Callable | None,
               t0: float) -> None:
    """The epoch's record (mean losses, learning rate, minutes, the dev callback's results), logged, kept in the
    history, and a checkpoint."""
    acc = run.accelerator
    record = {"epoch": epoch + 1, "stage": stage, "step": run.step,
              "mean_loss": _mean(acc, logs["loss"]), "lr": sched.get_last_lr()[0],
              "minutes": round((time.perf_counter() - t0) / 60, 2)}
    if stage == "rank":
        record.update({k: _mean(acc, logs[k]) for k in ("rank_loss", "rank_accuracy", "gen_loss")})
    if on_epoch_end is not None and acc.is_main_process:
        run.lm.model.eval()
        record["dev"] = on_epoch_end(run.lm, run.prompts, run.vectors(), epoch + 1)
        run.lm.model.train()
    run.history.append(record)
    log.info("epoch %d: %s", epoch + 1, record)
    run.save(epoch + 1, stage, stage_step)


def _mean(acc, values: list[float]) -> float | None:
    """The mean over all processes (None when nothing was logged)."""
    import torch

    local = torch.tensor([sum(values), len(values)], dtype=torch.float64, device=acc.device)
    tot = acc.reduce(local, "sum") if acc.num_processes > 1 else local
    return float(tot[0] / tot[1]) if tot[1] else None


def restore(run: Run, state: dict) -> None:
    restore_optimizer(run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer,
                      run.out, state["optimizer_param_groups"])
