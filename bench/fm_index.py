"""Benchmark of the FM-index (``genret.indexing.fm._index``) against the previous one, tokengrams and infini-gram.

Systems: ``fm`` (memory-mapped wavelet matrix, numba kernels), ``fm-v1`` (the previous index, ``bench/_fm_v1.py``:
the ``wavelet-matrix`` package rebuilt at every open), ``fm-prev`` (``fm`` as of the git revision ``--prev``, its
modules copied out of git into a package of their own: a side-by-side check of a change), ``tokengrams`` (Rust
suffix table), ``infini-gram`` (C++ suffix array engine, memory-mapped; its licence rules it out as a dependency,
not as a yardstick) and ``numpy-sa`` (tokens + int32 suffix array, ``bisect``).
Yardsticks: ``pip install -e '.[bench]'``.

Corpora: Zipf-distributed synthetic token ids (vocabulary 50k, documents of ~100 tokens) of the given sizes, and
the mini-KILT knowledge sources (one document per paragraph, laid out as ``[1] title [2] paragraph`` like the
``fm-index`` component, SmolLM2 tokenizer); missing files are skipped.  Every build runs in its own subprocess,
so its peak RSS is its own.  Queries are n-grams sampled from random document positions (so frequent tokens are
frequent prefixes, as in decoding); all systems answer the same queries in the same run.

    python bench/fm_index.py [--sizes 1e7,5e7] [--full] [--no-minikilt] [--queries 1000] [--sa-sample N]
                             [--systems fm,fm-v1,tokengrams,infini-gram] [--prev REV (system fm-prev)]

Columns: build time (arrays written), tokens/s, peak RSS of the build process, bytes/token on disk, open time,
bytes/token of RSS added by opening (peak during the open in brackets) and after all the queries (FM: the
memory-mapped pages the queries touched, page cache; fm-v1: + its wavelet matrix in anonymous memory), then
median / p99 latency in µs of ``count`` (3-grams), ``next_tokens``
(1-token and 3-token prefixes; "step": ``next_tokens_of_range`` + ``extend`` on a range kept from the previous
step, the per-token cost of constrained decoding) and ``locate(limit=100)`` (3-grams).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _fm_index_workers import materialize_prev, worker_main  # the workers' side (bench/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = 50_000
MINIKILT = Path("/work/shared/minikilt")
KILT_TASKS = ("squad", "scifact", "climate_fever")


# -- corpora -------------------------------------------------------------------------------------------------
def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Zipf(1.1) token ids below VOCAB in documents of 50-150 tokens."""
    rng = np.random.default_rng(seed)
    parts, have = [], 0
    while have < n:
        z = rng.zipf(1.1, 2 * (n - have) + 1000)
        z = z[z <= VOCAB] - 1
        parts.append(z[: n - have])
        have += len(parts[-1])
    tokens = np.concatenate(parts).astype(np.uint16)
    lengths = rng.integers(50, 151, n // 50 + 2)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    lengths[-1] -= int(lengths.sum()) - n
    return tokens, lengths.astype(np.int64)


def minikilt(task: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Paragraph documents of a mini-KILT knowledge source, tokenized as the fm-index component does."""
    from genret.core import load_tokenizer
    from genret.indexing.fm._tokens import encode_texts, title_markers

    tok = load_tokenizer("smollm2-135m-instruct")
    start, end, _ = title_markers(tok)
    titles, texts = [], []
    with open(MINIKILT / task / "knowledge_source.jsonl", encoding="utf-8") as fh:
        for line in fh:
            page = json.loads(line)
            for par in page["text"][1:]:
                titles.append(page["wikipedia_title"])
                texts.append(par)
    t0 = time.perf_counter()
    docs = []
    for a in range(0, len(texts), 2048):
        ids = encode_texts(tok, titles[a:a + 2048] + texts[a:a + 2048])
        half = len(ids) // 2
        docs += [[start, *ids[k], end, *ids[half + k]] for k in range(half)]
    seconds = time.perf_counter() - t0
    lengths = np.array([len(d) for d in docs], np.int64)
    return np.concatenate([np.array(d, np.uint16) for d in docs]), lengths, seconds


def sample_queries(tokens: np.ndarray, lengths: np.ndarray, k: int, m: int, seed: int) -> list[list[int]]:
    """``m`` k-grams starting at uniformly random positions inside documents."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    ok = np.flatnonzero(lengths >= k)
    weights = (lengths[ok] - k + 1) / (lengths[ok] - k + 1).sum()
    docs = rng.choice(ok, size=m, p=weights)
    offs = (rng.random(m) * (lengths[docs] - k + 1)).astype(np.int64)
    return [tokens[starts[d] + o: starts[d] + o + k].tolist() for d, o in zip(docs, offs)]


# -- workers (each run in its own process: bench/_fm_index_workers.py) ----------------------------------------
def run_worker(kind: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, str(work)], capture_output=True, text=True,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# -- driver --------------------------------------------------------------------------------------------------
def bench_corpus(name: str, tokens: np.ndarray, lengths: np.ndarray, vocab: int, n_queries: int,
                 systems: list[str], sa_sample: int | None = None) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmbench-") as tmp:
        work = Path(tmp)
        np.save(work / "tokens.npy", tokens)
        np.save(work / "lengths.npy", lengths)
        (work / "meta.json").write_text(json.dumps({"vocab": vocab, "sa_sample": sa_sample}))
        q = {"q1": sample_queries(tokens, lengths, 1, n_queries, 1),
             "q3": sample_queries(tokens, lengths, 3, n_queries, 3)}
        (work / "queries.json").write_text(json.dumps(q))
        n = len(tokens)
        for system in systems:
            try:
                r = run_worker(system, work)
                if system in ("fm", "fm-v1", "fm-prev"):
                    r.update(run_worker(f"{system}-query", work))
            except RuntimeError as exc:
                print(f"{system} failed: {exc}", file=sys.stderr, flush=True)
                rows.append(f"| {name} | {n / 1e6:.2f}M | {system} | failed ({str(exc).splitlines()[0][:60]}) |")
                continue
            mb = r["peak"] / 2**20
            label = f"{system} (sa_sample={r['sa_sample']})" if "sa_sample" in r else system
            ram = f"{r['ram'] / n:.2f}" + (f" [{r['ram_peak'] / n:.2f}]" if "ram_peak" in r else "")
            row = [name, f"{n / 1e6:.2f}M", label, f"{r['build_s']:.2f}", f"{n / r['build_s'] / 1e6:.2f}",
                   f"{mb:.0f}" if mb else "–", f"{r['disk'] / n:.2f}",
                   f"{r['load_s']:.3f}" if "load_s" in r else "–", ram,
                   f"{r['ram_after'] / n:.2f}" if "ram_after" in r else "–",
                   f"{r['mapped'] / n:.2f}" if "mapped" in r else "–",
                   r["count3"], r["next1"], r["next3"], r.get("step3", "–"), r["locate"]]
            rows.append("| " + " | ".join(row) + " |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


HEADER = ("| corpus | tokens | system | build s | Mtok/s | build peak MB | disk B/tok | open s "
          "| RSS at open B/tok [peak] | RSS after queries B/tok | mapped B/tok | count 3-gram µs "
          "| next_tokens 1-tok µs | next_tokens 3-tok µs | decode step µs | locate≤100 µs |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="synthetic corpus sizes in tokens, comma-separated")
    ap.add_argument("--full", action="store_true", help="also 5e7 tokens")
    ap.add_argument("--only-minikilt", action="store_true", help="no synthetic corpora")
    ap.add_argument("--no-minikilt", action="store_true")
    ap.add_argument("--queries", type=int, default=1000, help="queries per operation (locate: half)")
    ap.add_argument("--systems", default="fm,fm-v1,tokengrams,infini-gram")
    ap.add_argument("--sa-sample", type=int, default=None,
                    help="FM-index suffix-array sampling rate (default: each system's own)")
    ap.add_argument("--prev", default="HEAD", help="git revision of the fm-prev system")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]))
        return
    systems = args.systems.split(",")
    if "fm-prev" in systems:
        prev_dir = Path(tempfile.mkdtemp(prefix="fmprev-"))
        materialize_prev(args.prev, prev_dir)
        os.environ["FM_PREV_DIR"] = str(prev_dir)
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.prev], capture_output=True,
                             text=True).stdout.strip()
        print(f"fm-prev: the FM-index modules of {args.prev} ({rev})", file=sys.stderr, flush=True)
    sizes = [] if args.only_minikilt else [int(float(s)) for s in args.sizes.split(",") if s]
    if args.full and 50_000_000 not in sizes:
        sizes.append(50_000_000)
    rows, notes = [], []
    for n in sizes:
        tokens, lengths = synthetic(n)
        rows += bench_corpus("zipf", tokens, lengths, VOCAB, args.queries, systems, args.sa_sample)
    if not args.no_minikilt:
        for task in KILT_TASKS:
            if not (MINIKILT / task / "knowledge_source.jsonl").is_file():
                notes.append(f"{task}: skipped (no knowledge_source.jsonl)")
                continue
            tokens, lengths, secs = minikilt(task)
            notes.append(f"{task}: {len(lengths)} paragraphs, {len(tokens)} tokens, tokenized at "
                         f"{len(tokens) / secs / 1e6:.2f}M tok/s")
            rows += bench_corpus(f"minikilt/{task}", tokens, lengths, 49_152, args.queries, systems, args.sa_sample)
    print(HEADER)
    print("\n".join(rows))
    for note in notes:
        print(f"\n- {note}", end="")
    print(f"\n\nmachine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
