"""RAG end to end over a KILT task file: answers and provenance in one KILT prediction, scored together.

Each prediction's ``output`` holds the generated answer and, as provenance, the passages the prompt showed
(retrieval rank order), so KILT's downstream metrics (EM / F1 / accuracy / ROUGE-L) and their KILT-gated
versions (credit only when the page-level R-Precision of that provenance is 1) come from one ``score`` call.
"""

from __future__ import annotations

import time
from pathlib import Path

from genret.core import GenretError, progress_bar
from genret.retrieval.rag import RagAnswer, RagPipeline, resolve_answer_task

from ._kilt_io import read_kilt, write_kilt
from ._runner import LEVELS, group_by_task, hits_to_provenance
from ._score import score


def rag_prediction(record: dict, result: RagAnswer) -> dict:
    """A KILT prediction record for one RAG answer (cited passage numbers kept in ``meta``)."""
    return {"id": record["id"], "input": record["input"],
            "output": [{"answer": result.answer,
                        "provenance": hits_to_provenance(list(result.passages), len(result.passages)),
                        "meta": {"raw": result.raw, "cited": [c.number for c in result.citations],
                                 "demos": [d.id for d in result.demos]}}]}


def predict_rag(pipeline: RagPipeline, records: list[dict], *, task_name: str | None = None, batch_size: int = 8,
                progress: bool = True) -> list[dict]:
    """KILT predictions for ``records``; the task is ``task_name`` or each record's ``meta.task``.

    A record's own id is never used as its demonstration (in case the pool and the task file overlap)."""
    preds: list[dict] = []
    with progress_bar(len(records), "answering (rag)", progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            results: list = [None] * len(chunk)
            for name, idx in group_by_task(chunk, task_name).items():
                answers = pipeline.batch_answer([str(chunk[i]["input"]) for i in idx], task=name,
                                                exclude=[[str(chunk[i]["id"])] for i in idx])
                for i, a in zip(idx, answers):
                    results[i] = a
            preds.extend(rag_prediction(rec, res) for rec, res in zip(chunk, results))
            bar.update(len(chunk))
    return preds


def evaluate_rag(pipeline: RagPipeline, task_path: str | Path, *, task_name: str | None = None,
                 max_records: int | None = None, level: str = "page", out: str | Path | None = None,
                 batch_size: int = 8, progress: bool = True) -> dict:
    """Answer every record of a KILT task file and score answers and provenance together.

    Returns ``{"task", "records", "seconds", "downstream": {...}, "kilt": {...}, "retrieval": {...}}``
    (retrieval at ``level``'s rank keys, k = the passages shown); with ``out`` the predictions are written.
    """
    if level not in LEVELS:
        raise GenretError(f"unknown level {level!r}; use {sorted(LEVELS)}")
    gold = read_kilt(task_path)[:max_records]
    if not gold:
        raise GenretError(f"{task_path} holds no records")
    t0 = time.perf_counter()
    preds = predict_rag(pipeline, gold, task_name=task_name, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    if out is not None:
        write_kilt(out, preds)
    k = max(1, pipeline.config.passages if pipeline.retriever is not None else 1)
    scores = score(preds, gold, ks=(k,), rank_keys=LEVELS[level], downstream=True)
    return {"task": str(task_path), "records": len(gold), "seconds": round(seconds, 3),
            "downstream": scores["downstream"], "kilt": scores["kilt"], "retrieval": scores["retrieval"]}


RAG_SETTINGS = ("closed book", "retrieval", "retrieval + demonstrations")


def compare_rag(pipeline: RagPipeline, task_path: str | Path, *, task_name: str | None = None,
                max_records: int | None = None, level: str = "page", batch_size: int = 8,
                progress: bool = True) -> dict[str, dict]:
    """``evaluate_rag`` under each of ``RAG_SETTINGS`` with the pipeline's own parts: closed book (no passages,
    no demonstrations), retrieval (its passages, no demonstrations) and retrieval + demonstrations (settings
    the pipeline lacks the parts for — no retriever, no demonstration source — are left out).  Returns
    ``{setting: report}``, each report with ``majority`` (the share of the most frequent gold answer of a label
    task named by ``task_name``, else None) added."""
    cfg = pipeline.config
    variants = {"closed book": (None, None, cfg.model_copy(update={"passages": 0, "demos": 0}))}
    if pipeline.retriever is not None and cfg.passages:
        variants["retrieval"] = (pipeline.retriever, None, cfg.model_copy(update={"demos": 0}))
        if pipeline.demo_source is not None and cfg.demos:
            variants["retrieval + demonstrations"] = (pipeline.retriever, pipeline.demo_source, cfg)
    gold = read_kilt(task_path)[:max_records]
    answers = [str((r.get("output") or [{}])[0].get("answer", "")) for r in gold]
    label_task = resolve_answer_task(task_name, pipeline.tasks)[1].form == "label"
    majority = max(answers.count(a) for a in set(answers)) / len(answers) if answers and label_task else None
    out = {}
    for name, (retriever, demos, config) in variants.items():
        variant = RagPipeline(pipeline.generator, retriever, demos, config, pipeline.tasks)
        report = evaluate_rag(variant, task_path, task_name=task_name, max_records=max_records, level=level,
                              batch_size=batch_size, progress=progress)
        report["majority"] = majority
        out[name] = report
    return out


def rag_table(reports: dict[str, dict]) -> str:
    """A Markdown table of ``compare_rag``'s reports: one row per setting, the downstream and KILT metrics in %
    (label tasks: accuracy and the majority-label rate; others: EM, F1, ROUGE-L)."""
    first = next(iter(reports.values()))
    names = ("accuracy",) if first.get("majority") is not None else ("em", "f1", "rougel")
    metrics = [m for m in (*first["downstream"], *first["kilt"]) if m.removeprefix("KILT-") in names]
    head = ["setting", *metrics] + (["majority label"] if first.get("majority") is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in reports.items():
        values = {**r["downstream"], **r["kilt"]}
        cells = [name, *(f"{values[m] * 100:.1f}" for m in metrics)]
        if r.get("majority") is not None:
            cells.append(f"{r['majority'] * 100:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
