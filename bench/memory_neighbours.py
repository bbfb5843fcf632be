"""How often the nearest training question names a dev question's page — the premise of the query memory
(``genret train memory``; docs/src/guide/retrievers.md) — by the cosine of that nearest question.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/memory_neighbours.py [--tasks squad,scifact,climate_fever]

Per mini-KILT task: the train split's inputs and the dev split's are embedded with the packaged MiniLM (the
encoder an index is built with, before ``adapt``), and for each dev record with gold provenance the nearest
training record is found; printed: how many dev records have their nearest training record above each similarity
threshold, and of those how many share a gold page with it.  No index is read: it measures the data, not genret's
ranking.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MINIKILT = ROOT.parent / "shared" / "minikilt"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _pages(record: dict) -> set[str]:
    return {str(p["wikipedia_id"]) for o in record.get("output", []) for p in o.get("provenance") or []}


def _read(task: str, split: str) -> list[dict]:
    with open(MINIKILT / task / f"{split}.jsonl", encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if _pages(r)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    from genret.core import DEFAULT_DENSE_MODEL
    from genret.indexing import query_encoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="squad,scifact,climate_fever")
    a = ap.parse_args()
    encoder = query_encoder(DEFAULT_DENSE_MODEL, "cpu")
    print("| task | dev records | " + " | ".join(f"nearest ≥ {t}: same page / all" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for task in a.tasks.split(","):
        train, dev = _read(task, "train"), _read(task, "dev")
        sims = _unit(encoder.encode([r["input"] for r in dev])) @ _unit(encoder.encode([r["input"] for r in train])).T
        nearest = sims.argmax(axis=1)
        best = sims[np.arange(len(dev)), nearest]
        same = np.array([bool(_pages(d) & _pages(train[j])) for d, j in zip(dev, nearest)])
        cells = [f"{int((same & (best >= t)).sum())} / {int((best >= t).sum())}" for t in THRESHOLDS]
        print(f"| {task} | {len(dev)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
