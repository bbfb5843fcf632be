"""Dense retrieval speed and recall: MiniLM encoding throughput, and FAISS flat / HNSW / IVF-PQ beside a numpy
brute-force search, on the mini-KILT knowledge sources and on synthetic random vectors.

For each mini-KILT task: paragraph units (``build_index(..., IndexConfig(components=()))``), the first
``--max-units`` of them (5,000 by default, to bound the encoding time) encoded with the packaged MiniLM at
batch 64 (``title\\ntext``, as ``build_dense`` does); the dev ``input``s, encoded, are the queries.  The
synthetic set is ``--synthetic`` random normal 384-d vectors, L2-normalised, with 1,000 random queries (a hard
case for IVF and HNSW: no cluster structure).  HNSW is built on at most ``--hnsw-max`` vectors (its build is
the slowest by far on a small CPU); its recall is then measured against flat search over the same vectors.

Indexes are built by ``genret.indexing._dense.build_faiss`` with the parameters ``faiss_params`` gives for the
``DenseConfig`` defaults (HNSW M=32, efConstruction=200, efSearch=128; IVF-PQ nlist ≈ 4·√n, PQ dim/8 × 8 bit,
nprobe=16).  Per method: build seconds (FAISS only; encoding is reported apart), bytes a vector (the index's
serialized size / n; numpy: the raw float32 matrix), queries/s of one batched search of all queries at k=10
(vectors already encoded; best of ``--repeats``), and recall@10 against flat search (|top-10 ∩ flat top-10| /
10, averaged).  numpy brute force: matrix product in chunks of 256 queries + ``argpartition`` + sort.

    python bench/dense.py [--minikilt DIR] [--tasks squad scifact climate_fever] [--max-units 5000]
                          [--synthetic 500000] [--hnsw-max 50000] [--repeats 3] [--threads N] [--no-minikilt]

(``--synthetic 0`` skips the synthetic set.)
"""

from __future__ import annotations

import os

# faiss's OpenMP threads spin while waiting: on a machine busy with other jobs that slows them down tenfold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genret.indexing import DenseConfig, Index, IndexConfig, build_index  # noqa: E402
from genret.indexing._dense import build_faiss, faiss_params, unit_text  # noqa: E402

TASKS = ("squad", "scifact", "climate_fever")
K = 10


def best_of(repeats: int, action: Callable[[], Any], budget_s: float = 20.0) -> tuple[float, Any]:
    """The shortest of up to ``repeats`` timed calls of ``action`` (stopping once ``budget_s`` is spent; the
    machine may be shared) and the last result."""
    best, result, spent = float("inf"), None, 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = action()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best, result


def numpy_top(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Exact top-k ids by inner product: matrix product (chunks of queries) + argpartition + sort."""
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk):
        scores = q[start:start + chunk] @ x.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b) for a, b in zip(ids, truth)]))


def index_bytes(index: Any, work: Path) -> int:
    import faiss

    path = work / "size.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def describe(params: dict[str, Any]) -> str:
    kind = params["index_type"]
    if kind == "hnsw":
        return f"M={params['hnsw_m']}, efC={params['ef_construction']}, efS={params['ef_search']}"
    if kind == "ivfpq":
        return (f"IVF{params['ivf_nlist']},PQ{params['pq_m']}x{params['pq_bits']}, nprobe={params['nprobe']}, "
                f"trained on {params['train_size']:,}")
    return "exact"


def bench_vectors(x: np.ndarray, q: np.ndarray, repeats: int, hnsw_max: int, work: Path) -> list[dict[str, Any]]:
    """Rows for numpy brute force, flat, HNSW and IVF-PQ over ``x`` (n × dim) with queries ``q``."""
    n, dim = x.shape
    rows: list[dict[str, Any]] = []
    flat_params = {"index_type": "flat"}
    t0 = time.perf_counter()
    flat = build_faiss(x, flat_params)
    flat_build = time.perf_counter() - t0
    flat_s, (_, truth) = best_of(repeats, lambda: flat.search(q, K))
    np_s, np_ids = best_of(repeats, lambda: numpy_top(x, q, K))
    rows.append({"method": "numpy brute force", "n": n, "build": None, "bytes": 4 * dim,
                 "qps": len(q) / np_s, "recall": recall(np_ids, truth), "params": "matmul + argpartition"})
    rows.append({"method": "faiss flat", "n": n, "build": flat_build, "bytes": index_bytes(flat, work) / n,
                 "qps": len(q) / flat_s, "recall": 1.0, "params": describe(flat_params)})
    for kind in ("hnsw", "ivfpq"):
        m = min(n, hnsw_max) if kind == "hnsw" else n
        xs = x[:m]
        ref = truth if m == n else flat_prefix_truth(xs, q)
        params = faiss_params(DenseConfig(index_type=kind), dim, m)
        t0 = time.perf_counter()
        index = build_faiss(xs, params)
        build_s = time.perf_counter() - t0
        search_s, (_, ids) = best_of(repeats, lambda index=index: index.search(q, K))
        label = f"faiss {kind}" + (f" (first {m:,} vectors)" if m < n else "")
        rows.append({"method": label, "n": m, "build": build_s, "bytes": index_bytes(index, work) / m,
                     "qps": len(q) / search_s, "recall": recall(ids, ref), "params": describe(params)})
        print(f"  {label}: built in {build_s:.1f} s", file=sys.stderr, flush=True)
        del index
    return rows


def flat_prefix_truth(xs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Flat search's top-k over ``xs`` (a prefix of the vectors)."""
    return build_faiss(xs, {"index_type": "flat"}).search(q, K)[1]


def print_table(title: str, notes: list[str], rows: list[dict[str, Any]]) -> None:
    print(f"\n### {title}\n")
    for note in notes:
        print(note)
    print("\n| method | vectors | build s | bytes / vector | queries/s (batched, k=10) | recall@10 vs flat | params |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        build = "–" if r["build"] is None else f"{r['build']:.1f}"
        print(f"| {r['method']} | {r['n']:,} | {build} | {r['bytes']:,.0f} | {r['qps']:,.0f} | {r['recall']:.3f} "
              f"| {r['params']} |")
    sys.stdout.flush()


def run_task(task_dir: Path, work: Path, encoder: Any, max_units: int, repeats: int, hnsw_max: int) -> None:
    out = work / task_dir.name
    build_index(task_dir / "knowledge_source.jsonl", out, IndexConfig(components=()), progress=False)
    texts: list[str] = []
    with Index(out) as index:
        total = len(index.store)
        for batch in index.store.iter_units(batch=1024):
            texts += [unit_text(u.title, u.text, True) for u in batch]
            if len(texts) >= max_units:
                break
    texts = texts[:max_units]
    with open(task_dir / "dev.jsonl", encoding="utf-8") as fh:
        queries = [str(json.loads(line)["input"]) for line in fh if line.strip()]
    encoder.encode(texts[:64], batch_size=64)  # warm-up
    t0 = time.perf_counter()
    x = encoder.encode(texts, batch_size=64)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = encoder.encode(queries, batch_size=64)
    qenc_s = time.perf_counter() - t0
    print(f"{task_dir.name}: encoded {len(texts):,} units in {enc_s:.1f} s", file=sys.stderr, flush=True)
    rows = bench_vectors(x, q, repeats, hnsw_max, work)
    capped = f"the first {len(texts):,} of {total:,}" if len(texts) < total else f"all {total:,}"
    print_table(f"{task_dir.name}: {len(texts):,} paragraph units, dim {x.shape[1]}", [
        f"Units: {capped} paragraph units. Encoding (MiniLM-L6, batch 64, `title\\ntext`): "
        f"**{len(texts) / enc_s:,.1f} units/s**; {len(queries):,} dev queries encoded at {len(queries) / qenc_s:,.0f} "
        "queries/s (not in the queries/s below, which is search alone)."], rows)


def run_synthetic(n: int, n_queries: int, dim: int, repeats: int, hnsw_max: int, work: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        x[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = rng.standard_normal((n_queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = bench_vectors(x, q, repeats, hnsw_max, work)
    print_table(f"synthetic: {n:,} random {dim}-d normalised vectors", [
        f"{n_queries:,} random queries. Random vectors have no cluster structure, the hard case for IVF (a query's "
        "neighbours spread over many lists) and for PQ (the codes keep little of a near-uniform direction); real "
        "embeddings (tables above) are far easier."], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minikilt", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "minikilt")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--max-units", type=int, default=5000, help="units encoded a task (bounds the time)")
    parser.add_argument("--synthetic", type=int, default=500_000, help="synthetic vectors (0: none)")
    parser.add_argument("--synthetic-queries", type=int, default=1000)
    parser.add_argument("--hnsw-max", type=int, default=50_000, help="HNSW is built on at most this many vectors")
    parser.add_argument("--repeats", type=int, default=3, help="search speed: best of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    parser.add_argument("--no-minikilt", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    import faiss
    import torch

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    load = os.getloadavg()
    print(f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs; load average at start "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    work = Path(tempfile.mkdtemp(prefix="genret-bench-dense-"))
    try:
        if not args.no_minikilt:
            from genret.indexing import SentenceTransformerEncoder

            encoder = SentenceTransformerEncoder(device="cpu")
            for task in args.tasks:
                if (args.minikilt / task / "knowledge_source.jsonl").is_file():
                    run_task(args.minikilt / task, work, encoder, args.max_units, args.repeats, args.hnsw_max)
                else:
                    print(f"\n({task}: no knowledge source under {args.minikilt})")
        if args.synthetic:
            run_synthetic(args.synthetic, args.synthetic_queries, 384, args.repeats, args.hnsw_max, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nTotal {time.perf_counter() - t_start:.0f} s; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f}")


if __name__ == "__main__":
    main()
