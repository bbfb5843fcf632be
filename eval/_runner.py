"""Run a retriever over a KILT task file, write KILT-format predictions, score them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from genret.indexing import GenretError, Index, progress_bar
from genret.retrieval import Hit, RetrievalConfig, Retriever, load_retriever

from ._kilt_io import read_kilt, write_kilt
from ._score import score

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


def evaluate(index: str | Path | Index, task_path: str | Path, retriever: str | None = None, k: int = 100, *,
             ks: tuple[int, ...] = DEFAULT_KS, levels: tuple[str, ...] = ("page", "passage"),
             out: str | Path | None = None, config: RetrievalConfig | None = None, with_text: int = 20,
             task_name: str | None = None, max_records: int | None = None, progress: bool = True) -> dict:
    """Retrieve for every record of a KILT task file and score at each level.

    Returns ``{"task", "records", "retriever", "k", "seconds", "levels": {level: metrics}}``; with
    ``out``, the predictions are written there (KILT JSONL) as well.  Unit text is kept for the
    first ``with_text`` hits only, so the text-based metrics (``answer_in_context@k`` and its
    kin) are reported for ``k <= with_text`` only.
    """
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise GenretError(f"unknown level(s) {unknown}; use {sorted(LEVELS)}")
    opened = index if isinstance(index, Index) else Index(index)
    try:
        gold = read_kilt(task_path)[:max_records]
        if not gold:
            raise GenretError(f"{task_path} holds no records")
        r = load_retriever(opened, retriever, config)
        t0 = time.perf_counter()
        preds = predict(r, gold, k, with_text=with_text, task_name=task_name, progress=progress,
                        batch_size=getattr(getattr(config, r.name, None), "batch_size", 64) if config else 64)
        seconds = time.perf_counter() - t0
    finally:
        if not isinstance(index, Index):
            opened.close()
    if out is not None:
        write_kilt(out, preds)
    metrics = {lv: _drop_textless(score(preds, gold, ks=ks, rank_keys=LEVELS[lv], downstream=False)["retrieval"],
                                  with_text) for lv in levels}
    return {"task": str(task_path), "records": len(gold), "retriever": r.name, "k": k,
            "seconds": round(seconds, 3), "levels": metrics}


_TEXT_METRICS = ("answer_in_context@", "answer_and_ent_in_context@", "entity_in_context@")


def _drop_textless(metrics: dict, with_text: int) -> dict:
    return {name: v for name, v in metrics.items()
            if not (name.startswith(_TEXT_METRICS) and int(name.rsplit("@", 1)[1]) > with_text)}
