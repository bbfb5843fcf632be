"""``genret adapt``: adapt an index to a task in one step, within a wall-clock budget, and say what it gained.

From a KILT training file: a held-out fold is cut off (a seeded shuffle: ``holdout`` of the records, at most
``max_held_out``); every retriever the index has runs once over it, before (the base dense encoder, the default
hybrid); the dense encoder is fine-tuned on the rest (``retrieval.fine_tune_dense``: BM25 hard negatives) for the
time the budget leaves once re-encoding the index is set aside, and put into the index (``dense-adapted``); the
adapted dense retriever runs over the held-out fold; the training questions are kept in the index as its query
memory (``_adapt_memory``: ``memory-adapted``; the held-out fold searches one built without them), a hybrid member
from here on; the hybrid's fusion is fitted there by cross-validation
(``tune_fusion``: shrunk toward the default, never below a member alone held out, and a fusion kept over the best
member alone only beyond noise, by the rule a second stage meets: ``_keep_rule``) and saved as the index's
``hybrid-weights.json``; then a cross-encoder is trained on the rest with what the budget leaves, and it and the
sentence reranker (a passage's best sentence under the adapted encoder, no training) are each blended into the
hybrid's ranking (or the only retriever's) on the held-out fold, the better kept where it lifts that fold by at
least one standard error of its per-record gain and lifts more of the records it changes than it lowers beyond
chance (``_adapt_rerank``: ``rerank-adapted``). The report gives each
retriever's R-Precision on the held-out fold before and after, and the hybrid's: before, the default fusion;
after, the cross-validated estimate of the chosen one (each record scored with weights fitted without it) — not the
in-sample figure; likewise the reranked hybrid's; and each trained row's gain record by record, with its standard
error (``_adapt_report``).

What it does not train, and why: the generative retriever (``genret train retriever``: a checkpoint that lifted
squad passages by 10–14 points took 25–41 CPU-minutes alone, beyond a 20-minute budget for every part), the span
reader and the label head (``genret train reader`` / ``genret train labels``).

The budget: what is left once the runs before and the dense re-encoding are set aside goes ``1 - RERANK_SHARE``
to the dense encoder (``1 - RERANK_SHARE_SMALL`` on a training set of SMALL_TRAIN queries or fewer) and the rest
(with whatever dense training left unspent) to the reranker.

``ADAPT_FILE`` (``adapt.json`` in the index) records what was done — the training file's hash, the settings, the
corpus hash and the report — so that a second run with the same inputs does nothing unless ``force``.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from genret.core import InputError, read_versioned_json, sha256_file, write_json_atomic, write_lock
from genret.indexing import (
    ADAPTED_DENSE,
    SENTENCE_RERANK_MODEL,
    Index,
    drop_adapted_reranker,
    write_adapted_dense,
)
from genret.retrieval import (
    DenseTrainConfig,
    Hit,
    RerankTrainConfig,
    RetrievalConfig,
    default_members,
    fine_tune_dense,
    pairs_from_kilt,
)

from ._adapt_memory import adapt_memory
from ._adapt_report import REPORT_LEVELS, AdaptReport, hit_ids, percent
from ._adapt_rerank import adapt_reranker
from ._fusion_tune import Fusions, Scorer, run_members, tune_fusion
from ._keep_rule import KEEP_RULE, gain_text, paired_gain
from ._kilt_io import read_kilt, write_kilt

log = logging.getLogger("genret")

ADAPT_FILE = "adapt.json"
# held-out records at most: the reranking stage's keep-or-not rests on a difference of about one point, which 300
# records cannot resolve (mini-KILT squad, 300 held out: the sentence reranker's blend held out 0.3 below the hybrid
# and was dropped, while the same blend lifts dev passages by 2.6; 1,000 held out, two runs: kept, and dev passages
# 1.4 above the same index without it in each)
MAX_HELD_OUT = 1000
SMALL_TRAIN = 1000  # training queries up to which the dense encoder trains 3 epochs, not 1
# of the training minutes, for the cross-encoder (the rest for the dense encoder): on a small training set more,
# since its steps pay more there (mini-KILT scifact, 323 claims: the 33 steps a 0.4 share gave it lowered the
# held-out fold from 64.5 to 62.7; a 0.6 share's 50 steps lifted it from 62.7 to 71.9 and dev passages from 44.2
# to 50.6, while the dense encoder's 32 steps instead of 56 cost its own dev R-Prec a point), on a large one less
# (squad's 6,042 questions: the dense encoder's steps)
RERANK_SHARE = 0.4
RERANK_SHARE_SMALL = 0.6
# the depths the held-out fold chooses the reranking depth from, with the blend weight (ties: the shallower).  A
# deeper cut lets the reranker lift a page the first stage ranked low, at a search-time cost (mini-KILT scifact,
# runs/adapt7's cross-encoder over the hybrid, dev: depth 20 76.2 / 50.6 in 45 s, 40 78.2 / 51.1 in 59 s, 80
# 78.2 / 50.1 in 83 s)
RERANK_DEPTHS = (20, 40)
TRAIN_STATS = ("queries", "rows", "steps", "loss_first", "loss_last", "lr_last", "budget_stopped",
               "budget_schedule_steps", "precision", "train_seconds")
# a cross-encoder trains at about 1/20 of the rate the same model encodes units (pairs/s; mini-KILT, bf16 on 2
# cores: squad 2.7 pairs/s at 60 units/s, scifact 9.7 at 156).  It is trained only where its share of the budget
# gives it one pass over the training queries or FULL_RERANK_STEPS steps, whichever is fewer (and MIN_RERANK_STEPS at
# least); otherwise the dense encoder gets the time and the sentence reranker is the only candidate (20 minutes:
# scifact's 38 steps, two passes over 323 claims, lifted its held-out fold by 1.9 points; squad's 7 and 11 steps, a
# few hundred of 6,042 questions, did not lower its loss or beat the sentence reranker)
CE_RATE_RATIO = 20.0
# minutes set aside for the query memory and the fusion's cross-validated fit: FIT_MINUTES and FIT_MINUTES_PER_1000
# a thousand held-out records (mini-KILT, runs/adapt14: squad's 1,000 held out, four members, 5,342 training
# questions: 0.36 for the memory, 0.62 for the fit; scifact's 81 and climate_fever's 73: 0.13 and 0.08 in all)
FIT_MINUTES = 0.1
FIT_MINUTES_PER_1000 = 1.0
# the sentence reranker's scoring, per unit of the first stage's hits over the held-out fold (distinct units: its
# sentence cache serves the rest), in units of encoding one unit (mini-KILT squad, paragraphs of ~5 sentences: 1.67
# min for ~2,000 units at 34 units/s; scifact, abstracts cut into one or two sentences: 0.53 min for ~2,800 at 89)
SENTENCE_COST = 1.5
MIN_RERANK_STEPS = 15
FULL_RERANK_STEPS = 60


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "genret-adapt"
    format_version: int = 1
    recipe: dict[str, Any]
    report: dict[str, Any]


def held_out_split(records: Sequence[dict], fraction: float, seed: int,
                   max_held: int | None = None) -> tuple[list[dict], list[dict]]:
    """``(train, held out)``: a seeded shuffle of ``records``, ``fraction`` of them (at most ``max_held``) held
    out; none at ``fraction`` 0 or when that would leave no record on either side."""
    order = list(records)
    random.Random(seed).shuffle(order)
    n = int(round(len(order) * fraction))
    if max_held is not None:
        n = min(n, max_held)
    if fraction > 0 and (n < 1 or n >= len(order)):
        n = 0
    return order[n:], order[:n]


def _recipe(index: Index, train: Path, task: str | None, budget: float, holdout: float, seed: int,
            max_records: int | None) -> dict[str, Any]:
    return {"train": str(train.resolve()), "train_sha256": sha256_file(train), "task": task,
            "budget_minutes": budget, "holdout": holdout, "seed": seed, "max_records": max_records,
            "corpus_sha256": index.manifest.corpus.sha256, "units": len(index.store)}


def previous_adaptation(index_dir: str | Path) -> dict | None:
    """The record ``adapt`` left in the index (None when there is none)."""
    path = Path(index_dir) / ADAPT_FILE
    if not path.is_file():
        return None
    return read_versioned_json(path, _Record, tag_field="format", tag="genret-adapt", what="a genret adapt record",
                               version=1, fix=f"delete {path} and run `genret adapt` again").model_dump()


def adapt(index_dir: str | Path, train_file: str | Path, *, task: str | None = None, budget_minutes: float = 20.0,
          holdout: float = 0.2, max_held_out: int = MAX_HELD_OUT, max_records: int | None = None,
          device: str = "auto", dtype: str = "auto", seed: int = 13, force: bool = False, progress: bool = True,
          dense_train: dict[str, Any] | None = None, rerank: bool = True, rerank_train: dict[str, Any] | None = None,
          memory: bool = True, say: Callable[[str], None] = log.info) -> AdaptReport | None:
    """Adapt the index at ``index_dir`` to the task of ``train_file`` (see the module doc); returns the report, or
    None when the index already holds this adaptation (and not ``force``).  ``dense_train`` / ``rerank_train``:
    ``DenseTrainConfig`` / ``RerankTrainConfig`` fields to change (epochs, lr, batch size…; the budget sets
    ``max_minutes``); ``rerank`` False: no reranker is trained; ``memory`` False: no query memory is kept."""
    t_start = time.perf_counter()
    train_file = Path(train_file)
    records = read_kilt(train_file)[:max_records]
    if len(records) < 10:
        raise InputError(f"{train_file}: {len(records)} records; adapting needs at least 10 (a held-out fold and "
                         "pairs to train on)")
    with Index(index_dir) as index:
        recipe = {**_recipe(index, train_file, task, budget_minutes, holdout, seed, max_records),
                  "max_held_out": max_held_out,
                  "dense_train": dict(sorted((dense_train or {}).items())), "rerank": rerank, "memory": memory,
                  "rerank_train": dict(sorted((rerank_train or {}).items()))}
        done = previous_adaptation(index_dir)
        if done is not None and done["recipe"] == recipe and index.has(ADAPTED_DENSE) and not force:
            return None
        members = default_members(index)  # an earlier run's query memory is rebuilt, not a member before
    train, held = held_out_split(records, holdout, seed, max_held_out)
    if not held:
        raise InputError(f"--holdout {holdout} leaves no held-out record of {len(records)}: adapt reports on one")
    report = AdaptReport(index=str(index_dir), train_records=len(train), held_out_records=len(held),
                         threads=_threads())
    off = {"adapted": False, "device": device, "dtype": dtype}  # an earlier adaptation's reranker is not a first stage
    before_cfg = RetrievalConfig(dense={"device": device, "dtype": dtype, "adapted": False}, hybrid={"tuned": "off"},
                                 rerank=off)
    after_cfg = RetrievalConfig(dense={"device": device, "dtype": dtype, "adapted": True}, hybrid={"tuned": "off"},
                                rerank=off)
    negatives_from = any(m in members for m in ("bm25", "dense"))  # the cross-encoder's hard negatives come from them
    if rerank and not negatives_from:
        report.skipped["cross-encoder"] = "the index has neither BM25 nor dense to draw hard negatives from"
    train_ce = rerank and negatives_from
    first = None  # the reranking stage's first stage over the held-out fold (None: its only retriever, searched)
    with tempfile.TemporaryDirectory(prefix="genret-adapt-") as scratch:
        held_file = Path(scratch) / "held-out.jsonl"
        write_kilt(held_file, held)
        t0 = time.perf_counter()
        say(f"held out {len(held)} of {len(records)} records; running {', '.join(members)} over them (before)")
        with Index(index_dir) as index:
            hits = run_members(index, members, held, 100, before_cfg, task, progress)
        before_hits = dict(hits)  # the dense member's are replaced by the adapted encoder's below
        scorer = Scorer(held, hits, "Rprec", REPORT_LEVELS)
        report.before = {m: percent(scorer(hit_ids(hits[m]))) for m in members}
        if len(members) > 1:
            fusions = Fusions(members, hits, scorer, 100, before_cfg.hybrid.rrf_k)
            lists = fusions.orders("minmax", fusions.defaults()[0], range(len(held)))
            report.before["hybrid"] = percent(scorer(lists))
        else:
            lists = hit_ids(hits[members[0]])
        # the units a reranker would read over the held-out fold (the default hybrid's, a proxy for the fitted one's)
        report.estimates["rerank units"] = len({u for order in lists for u in order[:max(RERANK_DEPTHS)]})
        report.minutes["before"] = round((time.perf_counter() - t0) / 60, 2)
        if "dense" in members:
            # epochs: 3 for a small training set, 1 for a large one (mini-KILT dev, 20-minute budget: climate_fever's
            # 290 and scifact's 323 claims gained 2.8 / 3.4 and 3.0 / 4.2 dense R-Prec from 3 epochs over 1;
            # squad's 6,042 questions fill the budget within one); the budget may stop it sooner either way
            settings = {"device": device, "dtype": dtype, "seed": seed,
                        "epochs": 3.0 if len(train) <= SMALL_TRAIN else 1.0, **(dense_train or {})}
            hits["dense"] = _adapt_dense(index_dir, train, held, report, recipe, budget_minutes, t_start,
                                         Path(scratch), settings, task, after_cfg, progress, say,
                                         share=1.0 - _rerank_share(len(train)) if train_ce else 1.0,
                                         rerank_steps=_rerank_steps(len(train), rerank_train) if train_ce else None,
                                         rerank=rerank)
            train_ce = train_ce and "cross-encoder" not in report.skipped
            # a scorer of its own: the adapted encoder finds units none of the runs before did (and the base
            # encoder's, for the gain record by record)
            adapted = Scorer(held, {"before": before_hits["dense"], "dense": hits["dense"]}, "Rprec", REPORT_LEVELS)
            after_ids = hit_ids(hits["dense"])
            report.after["dense"] = percent(adapted(after_ids))
            report.gains["dense"] = paired_gain(adapted.per_record(after_ids),
                                                adapted.per_record(hit_ids(before_hits["dense"])))
        else:
            report.skipped["dense"] = "the index has no dense component"
        if "dense" in members and memory:
            hits["memory"], report.memory = adapt_memory(
                index_dir, train, held, device=device, dtype=dtype, task=task, progress=progress, say=say,
                trained={"train": recipe["train"], "train_sha256": recipe["train_sha256"], "task": task})
            report.after["memory"] = percent(Scorer(held, {"memory": hits["memory"]}, "Rprec", REPORT_LEVELS)(
                hit_ids(hits["memory"])))
            members = [*members, "memory"]
            report.minutes["memory"] = round(report.memory["seconds"] / 60, 2)
        elif memory:
            report.skipped["memory"] = "the index has no dense component (the memory embeds questions with its encoder)"
        if len(members) > 1:
            t0 = time.perf_counter()
            with Index(index_dir) as index:
                doc, path = tune_fusion(index, held_file, members=members, config=after_cfg, task_name=task,
                                        progress=False, hits=hits, simplest_within_noise=True)
            chosen = doc.search["cross_validation"].get("chosen")
            held_out = doc.results.get(f"held out: {chosen}", doc.results["fused (chosen)"])
            report.after["hybrid"] = percent(held_out)
            # the reranking stage's first stage: each record fused as the cross-validation ranked it held out; scored
            # against the default fusion before, record by record (a scorer that knows both runs' units)
            both = Scorer(held, before_hits | {f"adapted {m}": v for m, v in hits.items()}, "Rprec", REPORT_LEVELS)
            first = Fusions(members, hits, both, doc.depth, doc.rrf_k).held_out(doc)
            if "hybrid" in report.before:
                report.gains["hybrid"] = paired_gain(both.per_record(hit_ids(first)), both.per_record(lists))
            report.fusion = {"file": str(path), "chosen": chosen, "method": doc.method, "normalize": doc.normalize,
                             "weights": doc.weights, "in_sample": percent(doc.results["fused (chosen)"]),
                             **({"over_member": over} if (over := doc.search["cross_validation"].get("over_member"))
                                else {})}
            report.minutes["fusion"] = round((time.perf_counter() - t0) / 60, 2)
    if rerank and (train_ce or "dense" in members):
        _rerank_stage(index_dir, train, held, report, recipe, budget_minutes, t_start, members, device, dtype, seed,
                      (rerank_train or {}) if train_ce else None, task, after_cfg, progress, say, first)
    else:
        report.skipped.setdefault("rerank", "not asked for" if not rerank else
                                  "no candidate: no cross-encoder trained, and no dense encoder for the sentence "
                                  "reranker")
    if not report.rerank.get("kept") and drop_adapted_reranker(index_dir):
        report.skipped["rerank"] += ("; the index's earlier adapted reranker was removed (it was fitted over the "
                                     "earlier first stage)")
    report.skipped.setdefault("generative", "not trained by adapt: `genret train retriever` (25–41 CPU-minutes "
                              "for one squad checkpoint) does not fit a shared budget")
    report.minutes["total"] = round((time.perf_counter() - t_start) / 60, 2)
    with write_lock(Path(index_dir)):
        write_json_atomic(Path(index_dir) / ADAPT_FILE,
                          _Record(recipe=recipe, report=asdict(report)).model_dump(mode="json"))
    return report


def _rerank_stage(index_dir, train, held, report: AdaptReport, recipe: dict, budget: float, t_start: float,
                  members: list[str], device: str, dtype: str, seed: int, rerank_train: dict[str, Any] | None,
                  task: str | None, after_cfg: RetrievalConfig, progress: bool, say: Callable[[str], None],
                  first: list[list[Hit]] | None = None) -> None:
    """Train the cross-encoder (``rerank_train`` None: none) with what is left of the budget (less the time scoring
    the held-out fold takes), fit it and the sentence reranker over the first stage, and record the fit; the
    first stage is the hybrid, fused as just fitted — over the held-out fold, ``first``: each record ranked with
    the fusion fitted without it — or the only retriever."""
    over = "hybrid" if len(members) > 1 else members[0]
    spent = (time.perf_counter() - t_start) / 60
    scoring = _scoring_minutes(report, cross_encoder=rerank_train is not None)
    config = None
    if rerank_train is not None:
        minutes = max(budget - spent - scoring, 0.5)
        say(f"rerank: {minutes:.1f} min for training a cross-encoder, ~{scoring:.1f} min for fitting its blend and "
            f"the sentence reranker's over {over}")
        settings = {"device": device, "dtype": dtype, "seed": seed,
                    "epochs": 3.0 if len(train) <= SMALL_TRAIN else 1.0, **rerank_train, "max_minutes": minutes}
        config = RerankTrainConfig(**settings)
    else:
        say(f"rerank: fitting the sentence reranker's blend over {over} (~{scoring:.1f} min)")
    with tempfile.TemporaryDirectory(prefix="genret-adapt-rerank-") as scratch:
        fit = adapt_reranker(index_dir, train, held, over=over,
                             config=after_cfg.model_copy(update={"hybrid": after_cfg.hybrid.model_copy(
                                 update={"tuned": "auto"})}),
                             train_config=config, scratch=Path(scratch), task=task, depth=RERANK_DEPTHS,
                             first=first,
                             trained={"train": recipe["train"], "train_sha256": recipe["train_sha256"], "task": task},
                             progress=progress, say=say)
    report.before["reranked"] = {lv: fit.first[lv] for lv in REPORT_LEVELS}
    report.after["reranked"] = {lv: (fit.blended if fit.kept else fit.first)[lv] for lv in REPORT_LEVELS}
    if fit.kept:
        report.gains["reranked"] = fit.gain
    report.rerank = {"over": over, "model": fit.model, "depth": fit.depth, "weight": fit.weight, "kept": fit.kept,
                     "held_out_blended": fit.blended, "held_out_first": fit.first, "held_out_gain": fit.gain,
                     "candidates": fit.candidates,
                     **{k: fit.train[k] for k in TRAIN_STATS if k in fit.train}}
    report.minutes.update({f"rerank {k}": v for k, v in fit.minutes.items()})
    if not fit.kept:
        learned = (f" (cross-encoder loss {fit.train.get('loss_first')} → {fit.train.get('loss_last')})"
                   if fit.train else "")
        report.skipped["rerank"] = (f"none kept: the best, {fit.model}, blended into {over} scored "
                                    f"{fit.blended['objective']:.1f} on the held-out fold against "
                                    f"{fit.first['objective']:.1f} alone (a record: {gain_text(fit.gain)}; kept "
                                    f"only at {KEEP_RULE}){learned}")
        if fit.model == SENTENCE_RERANK_MODEL and fit.weight > 0:  # no model to keep: a user may still blend it
            report.skipped["rerank"] += (f"; to blend it anyway: --rerank {SENTENCE_RERANK_MODEL} --rerank-depth "
                                         f"{fit.depth} --rerank-weight {fit.weight:g} on search, eval, rag or serve")


def _adapt_dense(index_dir, train, held, report: AdaptReport, recipe: dict, budget: float, t_start: float,
                 scratch: Path, settings: dict[str, Any], task: str | None, after_cfg: RetrievalConfig,
                 progress: bool, say: Callable[[str], None], share: float = 1.0,
                 rerank_steps: tuple[int, int] | None = None, rerank: bool = False):
    """Fine-tune and re-encode the dense encoder within ``share`` of what is left of the budget; returns the
    adapted dense retriever's hit lists for the held-out records.  ``rerank_steps``: ``(pairs a cross-encoder
    training step reads, steps it needs)`` when one is to be trained with the rest — where the rest gives it fewer
    steps, the dense encoder gets the whole budget and ``report.skipped["cross-encoder"]`` says why; ``rerank``: a
    reranking stage follows (then, with no cross-encoder to train, the time the sentence reranker's scoring takes is
    set aside)."""
    device, dtype = settings["device"], settings["dtype"]
    with Index(index_dir) as index:
        rate = _encode_rate(index, device, dtype)
        units = len(index.store)
        spent = (time.perf_counter() - t_start) / 60
        reencode = units / rate / 60
        report.dense["encode_rate"] = round(rate, 1)
        after_eval = report.minutes.get("before", 0.0) / max(1, len(report.before) - 1) + 0.5
        fit = FIT_MINUTES + FIT_MINUTES_PER_1000 * len(held) / 1000
        left = budget - spent - reencode - after_eval - fit
        report.estimates.update({"dense re-encoding": round(reencode, 2), "dense after": round(after_eval, 2),
                                 "fit": round(fit, 2)})
        if rerank_steps:
            pairs, needed = rerank_steps
            steps = int(left * (1.0 - share) * 60 * rate / CE_RATE_RATIO / pairs)
            if steps < needed:
                share = 1.0
                report.skipped["cross-encoder"] = (
                    f"not trained: its share of the budget would give ~{steps} steps here (~{rate / CE_RATE_RATIO:.1f}"
                    f" pairs/s), fewer than the {needed} it needs (one pass over the training queries, at most "
                    f"{FULL_RERANK_STEPS}, at least {MIN_RERANK_STEPS}); the dense encoder got the time and the "
                    "sentence reranker is the candidate (raise --budget-minutes, or `genret train rerank`)")
                say(f"rerank: cross-encoder {report.skipped['cross-encoder']}")
        if rerank and share >= 1.0:
            scoring = _scoring_minutes(report, cross_encoder=False)
            left -= scoring
            report.estimates["rerank scoring"] = round(scoring, 2)
        minutes = left * share
        say(f"dense: re-encoding {units} units will take ~{reencode:.1f} min ({rate:.0f} units/s); "
            f"{max(minutes, 0):.1f} of the {budget:g}-minute budget for training it")
        if minutes < 0.5:
            minutes = 0.5
            say("dense: the budget is spent before training; training for 0.5 min anyway (raise --budget-minutes)")
        config = DenseTrainConfig(**{**settings, "max_minutes": minutes})
        t0 = time.perf_counter()
        stats = fine_tune_dense(index, pairs_from_kilt(train), scratch / "model", config, progress=progress)
    report.minutes["dense training"] = round((time.perf_counter() - t0) / 60, 2)
    t0 = time.perf_counter()
    trained = {"train": recipe["train"], "train_sha256": recipe["train_sha256"], "task": task,
               "records": len(train) + len(held), "holdout": recipe["holdout"],
               "config": config.model_dump(exclude={"device", "max_minutes"}), **stats}
    write_adapted_dense(index_dir, scratch / "model", trained=trained, device=device, dtype=dtype, progress=progress)
    report.minutes["dense re-encoding"] = round((time.perf_counter() - t0) / 60, 2)
    report.dense.update({k: stats[k] for k in TRAIN_STATS if k in stats})
    with Index(index_dir) as index:
        return run_members(index, ["dense"], held, 100, after_cfg, task, progress)["dense"]


def _scoring_minutes(report: AdaptReport, cross_encoder: bool) -> float:
    """What scoring the held-out fold for the reranking stage takes, estimated: the first stage once more where it
    is the only retriever (as long as the runs before; a hybrid's held-out rankings come from the fusion's fit, no
    search); the sentence reranker over the deepest of RERANK_DEPTHS hits a record, SENTENCE_COST times encoding
    the distinct units among them (``estimates["rerank units"]``: its sentence cache serves the rest; mini-KILT
    squad's 1,000 questions read ~2,000 of its 2,067 units, so counting every hit, as before, set aside 5.0 minutes
    for 1.67); where one was trained, a cross-encoder pass over every hit about as fast as encoding units and half a
    minute for loading and writing it (scifact: 0.86 min for the first stage and the cross-encoder against 0.66
    estimated)."""
    rate = report.dense.get("encode_rate", 50.0)
    hits = report.held_out_records * max(RERANK_DEPTHS)
    sentences = SENTENCE_COST * report.estimates.get("rerank units", hits) / rate / 60
    first = 0.0 if "hybrid" in report.before else report.minutes.get("before", 0.0)
    return first + sentences + (hits / rate / 60 + 0.5 if cross_encoder else 0.1)


def _rerank_share(queries: int) -> float:
    """The cross-encoder's share of the training minutes for ``queries`` training queries (see RERANK_SHARE)."""
    return RERANK_SHARE_SMALL if queries <= SMALL_TRAIN else RERANK_SHARE


def _rerank_steps(queries: int, rerank_train: dict[str, Any] | None) -> tuple[int, int]:
    """``(query-passage pairs a cross-encoder training step reads, steps it needs)``: per query its positive, hard
    and in-batch negatives; one pass over ``queries`` training queries, within [MIN_RERANK_STEPS,
    FULL_RERANK_STEPS]."""
    c = RerankTrainConfig(**(rerank_train or {}))
    one_pass = -(-queries // c.batch_size)
    return c.batch_size * (1 + c.negatives + c.in_batch_negatives), max(MIN_RERANK_STEPS,
                                                                        min(one_pass, FULL_RERANK_STEPS))


def _encode_rate(index: Index, device: str, dtype: str) -> float:
    """Units a second the index's dense encoder encodes here (up to 128 units, after a warm-up batch)."""
    from genret.indexing import SentenceTransformerEncoder, encoder_model, unit_text

    component = index.component("dense")
    encoder = SentenceTransformerEncoder(encoder_model(index.path, component), device, dtype)
    # a seeded sample from the whole corpus (its first units need not be typical: mini-KILT scifact's first 64 are
    # encoded 1.3 times as fast as a random 128, and its re-encoding took 9.99 minutes against 8.6 estimated)
    units = index.store.get(sorted(random.Random(0).sample(range(len(index.store)), min(128, len(index.store)))))
    texts = [unit_text(u.title, u.text, component.params.get("with_title", True)) for u in units]
    encoder.encode(texts[:16])
    t0 = time.perf_counter()
    encoder.encode(texts)
    return max(1.0, len(texts) / max(time.perf_counter() - t0, 1e-6))


def _threads() -> int:
    """The CPU threads torch computes with (``OMP_NUM_THREADS``, else the machine's cores)."""
    import torch

    return torch.get_num_threads()
