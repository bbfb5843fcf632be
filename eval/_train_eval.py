"""Dev evaluation during retriever training (``genret train retriever --dev TASK=FILE``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from genret.indexing import Index

from ._kilt_io import read_kilt
from ._runner import LEVELS, hits_to_provenance
from ._score import score


def dev_callback(index: Index, dev: dict[str, Path], *, records: int = 100, k: int = 20,
                 generative_config=None) -> Callable:
    """``on_epoch_end`` for ``train_retriever``: R-Precision and recall@5 at page and passage level on the
    first ``records`` records of each dev file, with the model as it is at the end of the epoch."""
    gold = {task: read_kilt(path)[:records] for task, path in dev.items()}

    def evaluate(lm, prompts, vectors, epoch) -> dict:
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

    return evaluate
