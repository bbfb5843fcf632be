"""``train_demos``: train the UDR demonstration retriever (one bi-encoder for all tasks) with LM feedback.

Per round, for every training query (x, y) of every task (up to ``max_queries`` a task, sampled once):

1. candidates: ``candidates`` examples of the task's pool, never the query itself (same id or same input).
   Round 1: BM25 top-m.  Later rounds: a ``mined_share`` of them from the current bi-encoder (dense
   top-m over the pool re-encoded after the previous round), the rest from BM25 (union, deduplicated);
   a random fill when both run short.
2. LM feedback: ``generator.loglik(prompt, y)`` where ``prompt`` is ``build_prompt(task, x, demos=[c])`` —
   the RAG pipeline's prompt with the candidate as its only demonstration and no passages.  Scores are
   cached across rounds.
3. loss: list-wise cross-entropy between ``softmax(feedback / feedback_temperature)`` (target) and
   ``softmax(sim / temperature)`` over the query's candidates, plus ``in_batch_weight`` × InfoNCE with the
   best-feedback candidate as positive and the other queries' candidates in the batch as negatives (the
   query's own example and copies of the positive masked out).  Query side: the task instruction + x;
   pool side: the bare input (as indexed).  AdamW, plain torch loop, gradients clipped at 1.

The output directory is itself a demos directory: ``encoder/`` (sentence-transformers save), one pool per
trained task re-indexed with that encoder, and ``train.json`` (config, per-round losses, feedback stats,
minutes); built in a staged sibling and renamed into place when complete.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genret.core import ConfigError, GenretError, InputError, progress_bar, staged_dir, write_json_atomic

from .._contract import Demo
from ..rag import Generator, GeneratorConfig, build_prompt, load_generator, resolve_answer_task
from ._pool import ENCODER_DIR, DemoPool, PoolStats, check_task_name, read_pool, write_pool_dir
from ._sources import BM25DemoSource

log = logging.getLogger("genret")


class DemoTrainConfig(BaseModel):
    """Settings of ``genret train demos``."""

    model_config = ConfigDict(extra="forbid")
    candidates: int = Field(8, ge=2, description="candidates scored a query (m)")
    rounds: int = Field(2, ge=1, description="mining rounds (the first mines with BM25)")
    epochs: int = Field(1, ge=1, description="epochs a round")
    batch_size: int = Field(8, ge=1, description="queries a step")
    lr: float = Field(2e-5, gt=0)
    temperature: float = Field(0.05, gt=0, description="temperature of the bi-encoder similarities")
    feedback_temperature: float = Field(1.0, gt=0, description="temperature of the LM log-likelihood targets")
    in_batch_weight: float = Field(1.0, ge=0, description="weight of the in-batch negatives loss")
    max_queries: int | None = Field(1000, ge=1, description="training queries a task (sampled once)")
    mined_share: float = Field(0.5, ge=0, le=1, description="rounds ≥ 2: share of candidates from the encoder")
    model: str | None = Field(None, description="encoder to start from (default: the pools' encoder)")
    max_seq_length: int = Field(128, ge=8, description="encoder input tokens")
    skip_bad: bool = Field(False, description="skip malformed training lines")
    seed: int = 13
    device: str = "auto"


@dataclass(slots=True)
class _Query:
    task: str
    id: str
    input: str
    output: str
    exclude: set[int]  # pool rows never used as its candidates
    rows: list[int] | None = None  # this round's candidates
    feedback: list[float] | None = None


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _queries(task: str, path: Path, pool: DemoPool, config: DemoTrainConfig, rng: random.Random) -> list[_Query]:
    stats = PoolStats()
    records = read_pool(path, skip_bad=config.skip_bad, stats=stats)
    if config.max_queries is not None and len(records) > config.max_queries:
        records = [records[i] for i in sorted(rng.sample(range(len(records)), config.max_queries))]
    if not records:
        raise InputError("no training queries with an answer", path=str(path))
    by_input: dict[str, set[int]] = {}
    for row, text in enumerate(pool.inputs):
        by_input.setdefault(_norm(text), set()).add(row)
    out = []
    for r in records:
        exclude = set(by_input.get(_norm(r["input"]), ()))
        if r["id"] in pool.row:
            exclude.add(pool.row[r["id"]])
        out.append(_Query(task, r["id"], r["input"], r["output"], exclude))
    return out


def _fill(ranked: list[list[int]], quotas: list[int], m: int, exclude: set[int], n: int, rng: random.Random,
          ) -> list[int]:
    """Up to ``m`` distinct rows: ``quotas[i]`` from ``ranked[i]`` in turn, then any ranked row, then random."""
    chosen: list[int] = []

    def take(rows, limit):
        for r in rows:
            if len(chosen) >= limit:
                return
            if r not in exclude and r not in chosen:
                chosen.append(r)

    for rows, quota in zip(ranked, quotas):
        take(rows, min(m, len(chosen) + quota))
    for rows in ranked:
        take(rows, m)
    if len(chosen) < m:
        rest = [r for r in range(n) if r not in exclude and r not in chosen]
        take(rng.sample(rest, min(len(rest), m - len(chosen))), m)
    return chosen


def _top_rows(q_emb: np.ndarray, pool_emb: np.ndarray, k: int, chunk: int = 256) -> list[list[int]]:
    """Per query the ``k`` pool rows of highest inner product, best first (queries in chunks: bounded memory)."""
    out = []
    for start in range(0, len(q_emb), chunk):
        sims = q_emb[start:start + chunk] @ pool_emb.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(
            np.arange(sims.shape[1]), (len(sims), 1))
        for row, cand in zip(sims, top):
            out.append([int(c) for c in cand[np.argsort(-row[cand], kind="stable")]])
    return out


def _mine(queries: list[_Query], pools: dict[str, DemoPool], bm25: BM25DemoSource, model, pool_emb: dict,
          config: DemoTrainConfig, round_no: int, rng: random.Random) -> None:
    m = config.candidates
    for task, pool in pools.items():
        qs = [q for q in queries if q.task == task]
        want = min(len(pool), m + max(len(q.exclude) for q in qs))
        lexical = [[pool.row[d.id] for d in row]
                   for row in bm25.batch_search([q.input for q in qs], want, task=task)]
        dense = [[] for _ in qs]
        if round_no > 0:
            q_emb = model.encode([pool.instruction + q.input for q in qs], batch_size=64, convert_to_numpy=True,
                                 normalize_embeddings=True)
            dense = _top_rows(q_emb, pool_emb[task], want)
        n_dense = round(m * config.mined_share) if round_no > 0 else 0
        for q, lex, den in zip(qs, lexical, dense):
            q.rows = _fill([den, lex], [n_dense, m - n_dense], m, q.exclude, len(pool), rng)


def feedback_prompt(generator: Generator, task: str, query: str, output: str, demo: Demo) -> list[dict]:
    """The prompt the gold ``output`` is scored under: the RAG prompt of ``task`` for ``query`` with ``demo``
    as its only demonstration and no passages, budgeted so that prompt and output fit the generator."""
    spec = resolve_answer_task(task)[1]
    budget = max(32, generator.config.max_input_tokens - generator.count_tokens(output))
    return build_prompt(spec, query, demos=[demo], count_tokens=generator.count_tokens, budget=budget)[0]


def lm_feedback(generator: Generator, task: str, query: str, output: str, candidates: list[Demo]) -> list[float]:
    """log p(output | prompt with each candidate as the demonstration), one score a candidate."""
    return generator.loglik([feedback_prompt(generator, task, query, output, c) for c in candidates],
                            [output] * len(candidates))


def _feedback(queries: list[_Query], pools: dict[str, DemoPool], generator: Generator, cache: dict,
              progress: bool, desc: str) -> int:
    """Fill ``q.feedback`` (``lm_feedback`` of its candidates) for every query; returns pairs newly scored."""
    todo: list[tuple[tuple[str, str, int], list, str]] = []
    for q in queries:
        for row in q.rows:
            key = (q.task, q.id, row)
            if key not in cache:
                prompt = feedback_prompt(generator, q.task, q.input, q.output, pools[q.task].demo(row, 0.0))
                todo.append((key, prompt, q.output))
    chunk = max(1, generator.config.batch_size) * 4
    with progress_bar(len(todo), desc, progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            scores = generator.loglik([p for _, p, _ in part], [t for _, _, t in part])
            for (key, _, _), s in zip(part, scores):
                cache[key] = float(s)
            bar.update(len(part))
    for q in queries:
        q.feedback = [cache[(q.task, q.id, r)] for r in q.rows]
    return len(todo)


def _feedback_stats(queries: list[_Query], new_pairs: int) -> dict:
    fb = [np.asarray(q.feedback) for q in queries if q.feedback]
    return {"queries": len(queries), "pairs": sum(len(f) for f in fb), "pairs_scored": new_pairs,
            "mean_loglik": float(np.mean(np.concatenate(fb))),
            "mean_spread": float(np.mean([f.max() - f.min() for f in fb])),
            "mean_std": float(np.mean([f.std() for f in fb])),
            "best_is_first_candidate": float(np.mean([int(np.argmax(f) == 0) for f in fb]))}


def _embed(model, texts: list[str]):
    import torch.nn.functional as F

    prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers ≥ 5.2 / older
    feats = prepare(texts)
    feats = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in feats.items()}
    return F.normalize(model(feats)["sentence_embedding"], dim=-1)


def _batch_loss(model, batch: list[_Query], pools: dict[str, DemoPool], config: DemoTrainConfig):
    import torch

    q_vec = _embed(model, [pools[q.task].instruction + q.input for q in batch])
    texts, owner, keys = [], [], []
    for i, q in enumerate(batch):
        for row in q.rows:
            texts.append(pools[q.task].inputs[row])
            owner.append(i)
            keys.append((q.task, row))
    c_vec = _embed(model, texts)
    sim = q_vec @ c_vec.T / config.temperature  # B × N
    owner_t = torch.tensor(owner, device=sim.device)
    list_losses, nce_losses = [], []
    for i, q in enumerate(batch):
        own = (owner_t == i).nonzero().squeeze(1)
        fb = torch.tensor(q.feedback, dtype=sim.dtype, device=sim.device)
        target = torch.softmax(fb / config.feedback_temperature, 0)
        list_losses.append(-(target * torch.log_softmax(sim[i, own], 0)).sum())
        if config.in_batch_weight > 0 and len(batch) > 1:
            pos = int(own[int(torch.argmax(fb))])
            self_keys = {keys[pos]} | {(q.task, r) for r in q.exclude}
            keep = [j == pos or (owner[j] != i and keys[j] not in self_keys) for j in range(len(keys))]
            logits = sim[i, torch.tensor(keep, device=sim.device)]
            pos_at = sum(keep[:pos])
            nce_losses.append(torch.logsumexp(logits, 0) - logits[pos_at])
    list_loss = torch.stack(list_losses).mean()
    nce = torch.stack(nce_losses).mean() if nce_losses else torch.zeros((), device=sim.device)
    return list_loss + config.in_batch_weight * nce, float(list_loss.detach()), float(nce.detach())


def _train_round(model, optimizer, queries: list[_Query], pools, config: DemoTrainConfig, round_no: int,
                 progress: bool) -> list[dict]:
    import torch

    usable = [q for q in queries if len(q.rows) >= 2]
    steps = math.ceil(len(usable) / config.batch_size)
    history = []
    model.train()
    with progress_bar(steps * config.epochs, f"training round {round_no + 1}", progress) as bar:
        for epoch in range(config.epochs):
            order = list(range(len(usable)))
            random.Random(config.seed * 1000 + round_no * 100 + epoch).shuffle(order)
            totals, lists, nces = [], [], []
            for b in range(steps):
                batch = [usable[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
                loss, list_loss, nce = _batch_loss(model, batch, pools, config)
                if not torch.isfinite(loss):
                    raise GenretError(f"non-finite loss in round {round_no + 1} (try a lower lr or temperature)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                totals.append(float(loss.detach()))
                lists.append(list_loss)
                nces.append(nce)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(totals[-20:]):.3f}")
            history.append({"epoch": epoch + 1, "steps": steps, "loss": float(np.mean(totals)),
                            "list_loss": float(np.mean(lists)), "in_batch_loss": float(np.mean(nces))})
    model.eval()
    return history


def train_demos(demos_dir: str | Path, tasks: dict[str, str | Path], generator: Generator | GeneratorConfig,
                out_dir: str | Path, config: DemoTrainConfig | None = None, *, progress: bool = True,
                force: bool = False) -> dict:
    """Train one bi-encoder on the pools of ``tasks`` (name → training file, KILT or ``{id?, input, output}``)
    in ``demos_dir`` with the feedback of ``generator`` (or of the one a ``GeneratorConfig`` loads, once the
    pools and training files are checked); write a demos directory to ``out_dir``.

    Returns the summary also written to ``out_dir/train.json``.  ``out_dir`` is replaced only with ``force``.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from genret.core import model_load_lock, resolve_device, resolve_model_path

    config = config or DemoTrainConfig()
    demos_dir, out = Path(demos_dir), Path(out_dir)
    if not tasks:
        raise ConfigError("no training tasks: give --task NAME=TRAIN.jsonl")
    for name in tasks:
        check_task_name(name)
    if out.exists() and not force:
        raise GenretError(f"{out} already exists; pass force=True to replace it", flags={"force=True": "--force"})
    if out.resolve() == demos_dir.resolve():
        raise ConfigError("the output directory must differ from the demos directory it trains on")
    t0 = time.perf_counter()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    bm25 = BM25DemoSource(demos_dir)
    try:
        pools = {name: bm25.pool(name) for name in tasks}
        specs = {p.encoder_spec for p in pools.values()}
        if config.model is None and len(specs) > 1:
            raise ConfigError(f"the pools were built with different encoders {sorted(specs)}: choose one with model")
        base = config.model or specs.pop()
        queries = [q for name, path in tasks.items() for q in _queries(name, Path(path), pools[name], config, rng)]
        device = resolve_device(config.device)
        if isinstance(generator, GeneratorConfig):
            generator = load_generator(generator)
        with model_load_lock():  # one model load at a time in the process
            model = SentenceTransformer(resolve_model_path(base), device=device)
        model.max_seq_length = config.max_seq_length
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, foreach=True)
        cache: dict = {}
        pool_emb: dict[str, np.ndarray] = {}
        rounds = []
        for r in range(config.rounds):
            _mine(queries, pools, bm25, model, pool_emb, config, r, rng)
            if not any(len(q.rows) >= 2 for q in queries):
                raise GenretError("no training query has 2 candidates: the pools are too small (3+ examples each)")
            new = _feedback(queries, pools, generator, cache, progress, f"LM feedback round {r + 1}")
            stats = _feedback_stats(queries, new)
            history = _train_round(model, optimizer, queries, pools, config, r, progress)
            rounds.append({"round": r + 1, "mined_with": "bm25" if r == 0 else "encoder+bm25",
                           "feedback": stats, "epochs": history, "loss": history[-1]["loss"]})
            log.info("demo training round %d: loss %.4f, feedback %s", r + 1, history[-1]["loss"], stats)
            if r + 1 < config.rounds:  # re-encode the pools with the new encoder, for mining
                pool_emb = {t: model.encode(p.inputs, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
                            for t, p in pools.items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        with staged_dir(out, "training") as tmp:
            model.save(str(tmp / ENCODER_DIR))
            for name, pool in pools.items():
                (tmp / name).mkdir()
                m = pool.manifest
                examples = [{"id": i, "input": x, "output": y} for i, x, y in zip(pool.ids, pool.inputs, pool.outputs)]
                write_pool_dir(examples, name, tmp / name, model=ENCODER_DIR, encoder_local=True,
                               load_from=str(tmp / ENCODER_DIR), index_model=str(out.resolve() / ENCODER_DIR),
                               instruction=m.instruction, source=m.source, source_sha256=m.source_sha256,
                               device=config.device, progress=progress,
                               stats=PoolStats(no_answer=m.skipped_no_answer, bad=m.skipped_bad))
            summary = {"config": config.model_dump(mode="json"), "base_encoder": base, "device": device,
                       "generator": getattr(generator.config, "model", None),
                       "tasks": {n: {"train_file": str(Path(p).resolve()), "queries": sum(q.task == n for q in queries),
                                     "pool": len(pools[n])} for n, p in tasks.items()},
                       "rounds": rounds, "minutes": round((time.perf_counter() - t0) / 60, 3)}
            write_json_atomic(tmp / "train.json", summary)
    finally:
        bm25.close()
    return {**summary, "out": str(out)}
