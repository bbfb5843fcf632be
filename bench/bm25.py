"""BM25 (Lucene via pyserini/Anserini) over each mini-KILT knowledge source: build time, query speed, and
KILT retrieval quality on dev compared with the BM25 anchor baseline in the mini-KILT README.

For each task: a paragraph-unit index (``build_index(..., IndexConfig(components=()))``), then
``build_bm25`` (k1=0.9, b=0.4, contents ``title\\ntext``: the baseline's settings); the dev ``input``s are
the queries.  Speed is measured after a warm-up, at k=``--k``, best of ``--repeats`` runs, as a loop of
``search`` and as one ``batch_search`` with 1 and 2 Java threads (hits include the unit-store look-up and
provenance).
Quality: page- and paragraph-level R-Precision and recall@1/5/20/100 (KILT definitions, ``genret.eval._score``).

    python bench/bm25.py [--minikilt /work/shared/minikilt] [--tasks squad scifact climate_fever] [--k 100]
                         [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genret.eval._kilt_io import read_kilt  # noqa: E402
from genret.eval._score import score  # noqa: E402
from genret.indexing import Index, IndexConfig, build_index  # noqa: E402
from genret.indexing._bm25 import BM25Config, build_bm25  # noqa: E402
from genret.indexing._manifest import read_manifest, write_manifest  # noqa: E402
from genret.retrieval._bm25 import BM25Retriever  # noqa: E402

TASKS = ("squad", "scifact", "climate_fever")
LEVELS = {"page": ("wikipedia_id",), "paragraph": ("wikipedia_id", "start_paragraph_id")}
METRICS = (("R-Prec", "Rprec"), ("R@1", "recall@1"), ("R@5", "recall@5"), ("R@20", "recall@20"),
           ("R@100", "recall@100"))
KS = (1, 5, 20, 100)


def read_baseline(readme: Path) -> dict[tuple[str, str], list[float]]:
    """``{(task, level): [R-Prec, R@1, R@5, R@20, R@100]}`` of the ``bm25`` rows of the README's anchor tables."""
    out: dict[tuple[str, str], list[float]] = {}
    level = None
    for line in readme.read_text(encoding="utf-8").splitlines():
        m = re.match(r"### (page|paragraph) level", line)
        if m:
            level = m.group(1)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if level and len(cells) == 7 and cells[1] == "bm25":
            out[(cells[0], level)] = [float(c) for c in cells[2:]]
    return out


def qps(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def best_of(repeats: int, action: Any) -> tuple[float, Any]:
    """The shortest of ``repeats`` timed calls of ``action`` (the machine may be shared) and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_task(task_dir: Path, work: Path, k: int, repeats: int) -> dict[str, Any]:
    """Build, time and score one task; returns its table cells."""
    out = work / task_dir.name
    t0 = time.perf_counter()
    build_index(task_dir / "knowledge_source.jsonl", out, IndexConfig(components=()), progress=False)
    store_s = time.perf_counter() - t0
    manifest = read_manifest(out)
    with Index(out) as index:
        t0 = time.perf_counter()
        manifest.components["bm25"] = build_bm25(index.store, out, BM25Config(), progress=False)
        build_s = time.perf_counter() - t0
    write_manifest(out, manifest)
    gold = read_kilt(task_dir / "dev.jsonl")
    queries = [str(rec["input"]) for rec in gold]
    row: dict[str, Any] = {"task": task_dir.name, "units": manifest.units.count, "store_s": store_s,
                           "build_s": build_s, "queries": len(queries)}
    with Index(out) as index:
        r = BM25Retriever(index)
        r.batch_search(queries[:200], k)  # warm-up (JIT, page cache)
        for q in queries[:50]:
            r.search(q, k)
        seconds, _ = best_of(repeats, lambda: [r.search(q, k) for q in queries])
        row["single"] = qps(len(queries), seconds)
        for threads in (1, 2):
            r.threads = threads
            seconds, results = best_of(repeats, lambda: r.batch_search(queries, k))
            row[f"batch{threads}"] = qps(len(queries), seconds)
        r.close()
    preds = [{"id": rec["id"], "output": [{"answer": "", "provenance": [
        {"wikipedia_id": h.provenance.wikipedia_id, "start_paragraph_id": h.provenance.start_paragraph_id,
         "end_paragraph_id": h.provenance.end_paragraph_id} for h in hits]}]}
        for rec, hits in zip(gold, results)]
    for level, keys in LEVELS.items():
        metrics = score(preds, gold, ks=KS, rank_keys=keys, downstream=False, include_recall_at_1=True)["retrieval"]
        row[level] = [100 * metrics[key] for _, key in METRICS]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minikilt", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "minikilt")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="speed: best of this many runs")
    parser.add_argument("--work", type=Path, help="keep the indexes here (default: a temporary directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from genret.indexing._java import import_pyserini

    t0 = time.perf_counter()
    ps = import_pyserini()  # JVM start-up, timed apart from the builds
    jvm_s = time.perf_counter() - t0
    work = args.work or Path(tempfile.mkdtemp(prefix="genret-bench-bm25-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run_task(args.minikilt / t, work, args.k, args.repeats) for t in args.tasks
                if (args.minikilt / t / "knowledge_source.jsonl").is_file()]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"pyserini {ps.pyserini_version} (Anserini {ps.anserini_version}, Lucene {ps.lucene_version}), "
          f"Java {ps.java.version_str} ({ps.java.source}); k1=0.9 b=0.4, contents title\\ntext, paragraph units, "
          f"k={args.k}; JVM start-up {jvm_s:.1f} s (not in the build times)\n")
    print("| task | units | store build s | BM25 build s | dev queries | q/s single (search loop) "
          "| q/s batch, 1 thread | q/s batch, 2 threads |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['task']} | {row['units']:,} | {row['store_s']:.1f} | {row['build_s']:.1f} | {row['queries']} "
              f"| {row['single']} | {row['batch1']} | {row['batch2']} |")
    baseline = read_baseline(args.minikilt / "README.md") if (args.minikilt / "README.md").is_file() else {}
    print("\nRetrieval quality on dev, percent: ours (baseline, difference).\n")
    print("| task | level | " + " | ".join(name for name, _ in METRICS) + " |")
    print("|---|---|" + "---:|" * len(METRICS))
    worst = 0.0
    for row in rows:
        for level in LEVELS:
            ref = baseline.get((row["task"], level))
            cells = []
            for i, value in enumerate(row[level]):
                if ref is None:
                    cells.append(f"{value:.1f}")
                else:
                    diff = round(value, 1) - ref[i]
                    worst = max(worst, abs(diff))
                    cells.append(f"{value:.1f} ({ref[i]:.1f}, {diff:+.1f})")
            print(f"| {row['task']} | {level} | " + " | ".join(cells) + " |")
    if baseline:
        print(f"\nLargest absolute difference from the baseline: {worst:.1f} points.")


if __name__ == "__main__":
    main()
