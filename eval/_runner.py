"""Run a retriever over a task (KILT file, BEIR folder, queries + qrels), write predictions and runs, score them;
and score the generative retriever on dev files at each epoch's end while it trains (``dev_callback``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from genret.core import ConfigError, GenretError, progress_bar
from genret.indexing import Index
from genret.retrieval import Hit, RetrievalConfig, Retriever, load_retriever

from ._ir_metrics import ir_scores, kilt_per_query
from ._ir_tasks import load_task, qrels_from_gold
from ._kilt_io import id_key, read_kilt, write_kilt
from ._report import EvalReport
from ._score import score
from ._trec import doc_id, doc_run, write_trec_run

log = logging.getLogger("genret")

# Named rank-key sets: KILT page level and paragraph (passage) level.
LEVELS = {"page": ("wikipedia_id",), "passage": ("wikipedia_id", "start_paragraph_id")}
DEFAULT_KS = (1, 5, 10, 20, 100)


def hits_to_provenance(hits: list[Hit], with_text: int) -> list[dict]:
    """KILT provenance for ranked hits (text kept for the first ``with_text``, for answer_in_context)."""
    out = []
    for h in hits:
        p = h.provenance
        item = {"wikipedia_id": p.wikipedia_id, "title": p.title, "start_paragraph_id": p.start_paragraph_id,
                "end_paragraph_id": p.end_paragraph_id, "start_character": p.start_character,
                "end_character": p.end_character, "score": h.score}
        if h.rank <= with_text and h.text is not None:
            item["text"] = h.text
        out.append(item)
    return out


def group_by_task(records: list[dict], task_name: str | None) -> dict[str | None, list[int]]:
    """Positions of ``records`` per task: ``task_name`` for all, else each record's ``meta.task``."""
    by_task: dict[str | None, list[int]] = {}
    for i, rec in enumerate(records):
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        by_task.setdefault(task_name or meta.get("task"), []).append(i)
    return by_task


def search_records(r: Retriever, records: list[dict], k: int = 100, *, batch_size: int = 64,
                   task_name: str | None = None, progress: bool = True) -> list[list[Hit]]:
    """Hits for every record's ``input``, in record order, ``batch_size`` records a call.

    The task prompt is ``task_name``, else each record's ``meta.task`` (retrievers without prompts ignore it).
    """
    results: list[list[Hit]] = []
    with progress_bar(len(records), f"retrieving ({r.name})", progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            found: list = [None] * len(chunk)
            for name, idx in group_by_task(chunk, task_name).items():
                for i, hits in zip(idx, r.batch_search([str(chunk[i]["input"]) for i in idx], k, task=name)):
                    found[i] = hits
            results.extend(found)
            bar.update(len(chunk))
    return results


def predict(r: Retriever, task: list[dict], k: int = 100, *, batch_size: int = 64, with_text: int = 20,
            task_name: str | None = None, progress: bool = True) -> list[dict]:
    """KILT-format predictions: one output per record, provenance in rank order (see ``search_records``)."""
    results = search_records(r, task, k, batch_size=batch_size, task_name=task_name, progress=progress)
    return [{"id": rec["id"], "input": rec["input"],
             "output": [{"answer": "", "provenance": hits_to_provenance(hits, with_text)}]}
            for rec, hits in zip(task, results)]


def default_ks(k: int) -> tuple[int, ...]:
    """The cut-offs reported for ``k`` hits: ``DEFAULT_KS`` up to ``k``, and ``k`` itself."""
    return tuple(sorted({c for c in DEFAULT_KS if c <= k} | {k}))


def evaluate(index: str | Path | Index, task_path: str | Path, retriever: str | None = None, k: int = 100, *,
             ks: tuple[int, ...] | None = None, levels: tuple[str, ...] = ("page", "passage"),
             out: str | Path | None = None, config: RetrievalConfig | None = None, with_text: int = 20,
             task_name: str | None = None, max_records: int | None = None, progress: bool = True,
             qrels: str | Path | None = None, split: str | None = None, trec_run: str | Path | None = None,
             per_query: bool = False) -> EvalReport:
    """Retrieve for every record of a task and score at each level, with KILT's metrics and IR metrics.

    The task is a KILT task file, a BEIR folder (its ``split`` qrels, default ``test``; a ``split`` for another
    task is refused) or a query file with ``qrels`` (see ``_ir_tasks``); tasks from judgments have a page level
    only.  A task none of whose gold documents is in the index is refused (``GenretError``: the wrong corpus, or
    the wrong task); one with some of them missing is evaluated with a warning.  Metrics are reported at the
    cut-offs ``ks`` (default ``default_ks(k)``; none may exceed ``k``).  Returns an ``EvalReport``:
    ``report.page`` and ``report.passage`` hold each level's KILT and IR metrics, ``"qrels"`` names the judgments
    the IR metrics used (a file, or ``gold provenance``); with ``per_query``, also ``per_query``: ``{level:
    {metric: {record id: value}}}`` for both kinds of metrics (``report.to_dict()``: all of it as a dict, which
    ``report["levels"]`` and the like read too).  With ``out``, the predictions are written there (KILT JSONL);
    with ``trec_run``, the page-level run (passage level when there is no page level) as a TREC run file.  Unit
    text is kept for the first ``with_text`` hits only, so the text-based metrics (``answer_in_context@k`` and its
    kin) are reported for ``k <= with_text`` only; tasks from judgments have no answers and report none of them.
    """
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise GenretError(f"unknown level(s) {unknown}; use {sorted(LEVELS)}")
    ks = _cut_offs(ks, k)
    opened = index if isinstance(index, Index) else Index(index)
    try:
        task = load_task(task_path, qrels=qrels, split=split)
        if task.judged:
            if "page" not in levels:
                raise GenretError(f"{task_path}: judgments are per document; evaluate it at page level")
            levels = ("page",)
        gold = task.records[:max_records]
        if not gold:
            raise GenretError(f"{task_path} holds no records")
        check_gold_in_index(opened, gold, task_path)
        r = load_retriever(opened, retriever, config)
        t0 = time.perf_counter()
        batch = getattr(getattr(config, r.name, None), "batch_size", None) if config else None
        preds = predict(r, gold, k, with_text=with_text, task_name=task_name, progress=progress, batch_size=batch or 64)
        seconds = time.perf_counter() - t0
    finally:
        if not isinstance(index, Index):
            opened.close()
    if out is not None:
        write_kilt(out, preds)
    report = EvalReport(str(task_path), len(gold), r.name, k, round(seconds, 3), {}, {},
                        task.qrels_source or "gold provenance", {} if per_query else None)
    asked = {id_key(rec["id"]) for rec in gold}
    run_level = "page" if "page" in levels else levels[0]
    for lv in levels:
        metrics = score(preds, gold, ks=ks, rank_keys=LEVELS[lv], downstream=False)["retrieval"]
        report.levels[lv] = _drop_textless(metrics, 0 if task.judged else with_text)
        judged = task.qrels if task.qrels is not None and lv == "page" else qrels_from_gold(gold, LEVELS[lv])
        run = doc_run(preds, LEVELS[lv])
        report.ir[lv], ir_values = ir_scores({q: d for q, d in judged.items() if q in asked}, run, ks,
                                             per_query=per_query)
        if trec_run is not None and lv == run_level:
            write_trec_run(trec_run, run, f"genret-{r.name}")
        if report.per_query is not None:
            kilt = kilt_per_query(preds, gold, ks, LEVELS[lv])
            report.per_query[lv] = {**{m: kilt[m] for m in report.levels[lv]}, **ir_values}
    return report


def _cut_offs(ks: tuple[int, ...] | None, k: int) -> tuple[int, ...]:
    if ks is None:
        return default_ks(k)
    over = sorted({c for c in ks if c > k})
    if over:
        raise ConfigError(f"cut-off(s) {over} exceed k={k}: only {k} hits are retrieved a record")
    return tuple(ks)


def check_gold_in_index(index: Index, gold: list[dict], task_path: str | Path) -> None:
    """Refuse a task none of whose gold pages is in ``index`` (every metric would be 0: the wrong corpus or the
    wrong task); warn when only some are.  A task without gold provenance passes."""
    pages = {doc for rec in gold for output in rec.get("output") or [] for item in output.get("provenance") or []
             if (doc := doc_id(item, LEVELS["page"])) is not None}
    if not pages:
        return
    found = index.store.pages_in(pages)
    missing = sorted(pages - found)
    if len(found) == 0:
        raise GenretError(f"none of the {len(pages)} gold documents of {task_path} is in the index {index.path} "
                          f"(e.g. {missing[0]!r}): is the index built from this task's corpus?")
    if missing:
        log.warning("%d of the %d gold documents of %s are not in the index %s (e.g. %r): the queries that need "
                    "them cannot score fully", len(missing), len(pages), task_path, index.path, missing[0])


_TEXT_METRICS = ("answer_in_context@", "answer_and_ent_in_context@", "entity_in_context@")


def _drop_textless(metrics: dict, with_text: int) -> dict:
    return {name: v for name, v in metrics.items()
            if not (name.startswith(_TEXT_METRICS) and int(name.rsplit("@", 1)[1]) > with_text)
            and not (with_text == 0 and name == "entity_in_input")}


def dev_callback(index: Index, dev: dict[str, Path], *, records: int = 100, k: int = 20,
                 generative_config=None) -> Callable:
    """``on_epoch_end`` for ``train_retriever`` (``genret train retriever --dev TASK=FILE``): R-Precision and
    recall@5 at page and passage level on the first ``records`` records of each dev file, with the model as it is
    at the end of the epoch."""
    gold = {task: read_kilt(path)[:records] for task, path in dev.items()}

    def evaluate_epoch(lm, prompts, vectors, epoch) -> dict:
        from genret.retrieval import GenerativeConfig, GenerativeRetriever

        cfg = generative_config or GenerativeConfig(device=lm.device)
        r = GenerativeRetriever(index, cfg, lm=lm, prompt_vectors=vectors, prompts=prompts)
        out = {}
        for task, records in gold.items():
            hits = r.batch_search([str(x["input"]) for x in records], k, task=task)
            preds = [{"id": x["id"], "output": [{"provenance": hits_to_provenance(h, 0)}]}
                     for x, h in zip(records, hits)]
            out[task] = {level: {m: round(v, 4) for m, v in
                                 score(preds, records, ks=(1, 5), rank_keys=LEVELS[level], downstream=False)
                                 ["retrieval"].items() if m in ("Rprec", "recall@5")}
                         for level in ("page", "passage")}
        return out

    return evaluate_epoch
