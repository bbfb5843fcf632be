"""Ray scale-out on one machine: build throughput with 1 vs 2 Ray workers, and search latency (p50 / p99) over 1 vs 2
shards served as Ray actors, next to the single-process peers, in one run.

Build: the same corpus indexed (dense + BM25 + FM-index, the defaults) by ``build_index`` in this process, then by
``build_index_ray`` on a local Ray cluster with 1 worker (1 encoder actor, 1 FM shard task) and with 2 (2 encoder
actors, 2 FM shard tasks); wall seconds and units/s, alternating ``--rounds`` times (the machine's load drifts).

Serving: each Ray build served by ``load_ray_retriever`` (the 1-worker index: 1 shard; the 2-worker index: 2 shards,
one actor each) and the first index by ``load_retriever`` in this process; the same queries, one at a time, in
alternating rounds; p50 / p99 milliseconds of ``search(query, k=10)`` per retriever (dense, generative).

Corpus: ``../shared/minikilt/squad/knowledge_source.jsonl`` (48 pages, 2,067 paragraphs); queries: its dev questions.

    python bench/ray_scale.py [--corpus FILE] [--queries FILE] [--cpus 2] [--rounds 1] [--dense-queries 100]
                              [--generative-queries 10] [--json OUT.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_worker_niceness", "0")  # Ray runs workers at nice 15: give the peers equal priority

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINIKILT = ROOT.parent / "shared" / "minikilt" / "squad"


def build_rows(corpus: Path, work: Path, rounds: int) -> tuple[list[dict], dict[str, Path]]:
    from genret.indexing import Index, build_index, build_index_ray

    rows, paths = [], {}
    for r in range(rounds):
        for name, workers in (("single process", 0), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
            out = work / f"{name.replace(' ', '').replace(',', '-')}-{r}"
            t0 = time.perf_counter()
            if workers:
                build_index_ray(corpus, out, shards=workers, workers=workers, progress=False, force=True)
            else:
                build_index(corpus, out, progress=False, force=True)
            seconds = time.perf_counter() - t0
            with Index(out) as ix:
                units = len(ix.store)
            rows.append({"build": name, "round": r, "units": units, "seconds": round(seconds, 1),
                         "units_per_s": round(units / seconds, 1)})
            print(f"  {rows[-1]}", flush=True)
            paths[name] = out
    return rows, paths


def latency_rows(paths: dict[str, Path], queries: list[str], n_dense: int, n_gen: int, rounds: int) -> list[dict]:
    from genret.indexing import Index
    from genret.retrieval import load_ray_retriever, load_retriever

    peers = {"single process (in-process)": (paths["single process"], load_retriever, {}),
             "ray, 1 shard": (paths["ray, 1 worker"], load_ray_retriever, {}),
             "ray, 2 shards": (paths["ray, 2 workers"], load_ray_retriever, {})}
    rows = []
    for retriever, n in (("dense", n_dense), ("generative", n_gen)):
        opened = {name: (Index(p), loader) for name, (p, loader, _) in peers.items()}
        loaded = {name: loader(ix, retriever) for name, (ix, loader) in opened.items()}
        times: dict[str, list[float]] = {name: [] for name in loaded}
        for r in loaded.values():  # warm-up: models, first FAISS/FM pages, actor start
            r.search(queries[0], 10)
        for _ in range(rounds):
            for q in queries[:n]:
                for name, r in loaded.items():
                    t0 = time.perf_counter()
                    r.search(q, 10)
                    times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            ms = np.array(ts) * 1000
            rows.append({"retriever": retriever, "served by": name, "queries": len(ts),
                         "p50_ms": round(float(np.percentile(ms, 50)), 1),
                         "p99_ms": round(float(np.percentile(ms, 99)), 1)})
            print(f"  {rows[-1]}", flush=True)
        for r in loaded.values():
            r.close()
        for ix, _ in opened.values():
            ix.close()
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=MINIKILT / "knowledge_source.jsonl")
    p.add_argument("--queries", type=Path, default=MINIKILT / "dev.jsonl")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--dense-queries", type=int, default=100)
    p.add_argument("--generative-queries", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray

    queries = [json.loads(line)["input"] for line in a.queries.open(encoding="utf-8")]
    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM",
                                                                  "OMP_NUM_THREADS")}})
    try:
        with tempfile.TemporaryDirectory(prefix="ray-scale-") as tmp:
            print(f"build ({a.corpus}, local Ray cluster of {a.cpus} CPUs)", flush=True)
            builds, paths = build_rows(a.corpus, Path(tmp), a.rounds)
            print("search latency", flush=True)
            latency = latency_rows(paths, queries, a.dense_queries, a.generative_queries, a.rounds)
    finally:
        ray.shutdown()
    print("\n" + table(builds) + "\n\n" + table(latency))
    if a.json:
        a.json.write_text(json.dumps({"build": builds, "latency": latency}, indent=1))


if __name__ == "__main__":
    main()
