"""Sweep generative retriever settings on a KILT file (one model load for all): page and passage R-Precision,
R@5 and R@20 of each setting, and seconds per query (one torch thread).  The settings are JSON objects of
``GenerativeConfig`` overrides (``scoring`` a nested object).  Tune on train records, never on the test set:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generative_sweep.py runs/indexes/squad \
        ../shared/minikilt/squad/train.jsonl --n 120 --offset 200 --task squad '{}' '{"scoring": {"alpha": 1.0}}'
"""

import argparse
import json
import time

import torch

from genret.eval import LEVELS, predict, read_kilt, score
from genret.indexing import Index
from genret.retrieval import GenerativeConfig, GenerativeRetriever
from genret.retrieval.generative import ScoringConfig

torch.set_num_threads(1)

ap = argparse.ArgumentParser()
ap.add_argument("index")
ap.add_argument("file")
ap.add_argument("--n", type=int, default=100, help="records")
ap.add_argument("--offset", type=int, default=0, help="skip this many records first")
ap.add_argument("--task", default=None, help="task prompt (default: each record's meta.task)")
ap.add_argument("configs", nargs="+", help="JSON dicts of GenerativeConfig overrides; key 'scoring' dict")
a = ap.parse_args()
idx = Index(a.index)
gold = read_kilt(a.file)[a.offset:a.offset + a.n]
lm = None
for c in a.configs:
    over = json.loads(c)
    sc = ScoringConfig(**over.pop("scoring", {}))
    cfg = GenerativeConfig(device="cpu", scoring=sc, **over)
    r = GenerativeRetriever(idx, cfg, lm=lm)
    lm = r.lm
    t = time.perf_counter()
    preds = predict(r, gold, 20, batch_size=cfg.batch_size, task_name=a.task, progress=False)
    dt = (time.perf_counter() - t) / len(gold)
    out = {}
    for lv in ("page", "passage"):
        m = score(preds, gold, ks=(1, 5, 20), rank_keys=LEVELS[lv], downstream=False)["retrieval"]
        out[lv] = (round(100 * m["Rprec"], 1), round(100 * m["recall@5"], 1), round(100 * m["recall@20"], 1))
    print(f"{c}  page {out['page']}  passage {out['passage']}  {dt:.2f}s/q", flush=True)
