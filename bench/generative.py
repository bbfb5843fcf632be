"""Generative retrieval on one CPU thread: today's default beside the path before issue 12, SEAL's full inference
and the cheapest setting, on the same queries in the same run — latency per query (single and batched) and the
KILT R-Precision each reaches on those queries.

    .venv/bin/python bench/generative.py --index runs/indexes/squad --queries ../shared/minikilt/squad/dev.jsonl \
        --task squad -n 40

Profiles (all with the packaged SmolLM2-135M-Instruct unless --model/--checkpoint):

- ``before``: the inference before issue 12 — beam 10, decoded body n-grams and titles only, SEAL's weights
  against the corpus frequency with a fixed smoothing of 5 (no query keys, unigrams or calibration);
- ``seal``: SEAL's whole inference — beam 15, decoded body n-grams and titles, query keys, rescoring, unigram
  scores — with calibration;
- ``default``: ``GenerativeConfig()`` (zero-shot: query keys, unigrams and calibration; no decoding);
- ``seal-beam5``: ``seal`` with beam 5;
- ``default-unpacked``: ``default`` with the plain Llama's bfloat16 linear layers left as ``nn.Linear`` (oneDNN
  lays the weight out on every call) instead of packed once (``_llama_torch.PackedLinear``); only where the LM is
  the plain-torch Llama in bfloat16.

``--against REV`` runs the ``default`` profile of an older revision (its own code, from ``git archive``) in a
subprocess before each round, so that a speed-up is a ratio measured in one run (``--rounds`` interleaves them).

Prints a Markdown table (torch set to 1 thread; the model is loaded once and shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

PROFILES = {
    "before": dict(beam=10, decode_body=True, decode_titles=True, query_keys=False, unigram_scores=False,
                   drop_stopword_keys=False, scoring=dict(calibration=0.0, smoothing_tokens=1)),
    "seal": dict(beam=15, decode_body=True, decode_titles=True),
    "seal-beam5": dict(beam=5, decode_body=True, decode_titles=True),
    "default": dict(),
    "default-unpacked": dict(),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True, help="KILT-format file (inputs are the queries, provenance the gold)")
    ap.add_argument("--task", default=None, help="task prompt (default: each record's meta.task, else generic)")
    ap.add_argument("-n", type=int, default=40, help="queries per profile")
    ap.add_argument("--single", type=int, default=8, help="of which timed one at a time")
    ap.add_argument("--profiles", default="before,seal,seal-beam5,default")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto", help="what the LM computes in (auto: bfloat16 where native)")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="also run the `default` profile of git revision REV (its own code and bench, extracted to a "
                    "temporary folder; float32 unless REV knows --dtype) before each round of --profiles")
    ap.add_argument("--rounds", type=int, default=1, help="times the profiles (and --against) run, interleaved")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="instead of the table: cProfile N questions one at a time (after 8 to warm up) with the "
                    "default profile, and print the functions by cumulative time")
    a = ap.parse_args()

    import torch

    from genret.eval import LEVELS, predict, read_kilt, score
    from genret.indexing import Index
    from genret.retrieval import GenerativeConfig, GenerativeRetriever

    torch.set_num_threads(a.threads)
    gold = read_kilt(a.queries)[: a.n]
    index = Index(a.index)
    lm = None
    print(f"dtype: {a.dtype}, torch threads: {torch.get_num_threads()}, queries: {len(gold)} ({a.queries}), "
          f"task: {a.task}, batch: {a.batch_size}\n")
    if a.profile:
        return profile(index, gold, a)
    print("| profile | ms/query single (median) | ms/query batched | page R-Prec | passage R-Prec | passage R@5 |")
    print("|---|---|---|---|---|---|")
    old = _extract(a.against) if a.against else None
    for name in [p for _ in range(a.rounds) for p in ([f"@{a.against}"] if old else []) + a.profiles.split(",")]:
        if name.startswith("@"):
            print(_run_revision(old, name, a), flush=True)
            continue
        cfg = GenerativeConfig(model=a.model, checkpoint=a.checkpoint, device="cpu", batch_size=a.batch_size,
                               dtype=a.dtype, **PROFILES[name])
        r = GenerativeRetriever(index, cfg, lm=lm)
        lm = r.lm
        if name.endswith("-unpacked"):
            r = GenerativeRetriever(index, cfg, lm=_unpacked(lm))
        r.search(str(gold[0]["input"]), 10, task=a.task)  # warm: caches, lazy index structures
        singles = []
        for rec in gold[: a.single]:
            t0 = time.perf_counter()
            r.search(str(rec["input"]), 100, task=a.task)
            singles.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        preds = predict(r, gold, 100, batch_size=a.batch_size, task_name=a.task, progress=False)
        batched = (time.perf_counter() - t0) / len(gold)
        m = {lv: score(preds, gold, ks=(5,), rank_keys=LEVELS[lv], downstream=False)["retrieval"] for lv in LEVELS}
        print(f"| {name} | {statistics.median(singles) * 1e3:.0f} | {batched * 1e3:.0f} | "
              f"{m['page']['Rprec'] * 100:.1f} | {m['passage']['Rprec'] * 100:.1f} | "
              f"{m['passage']['recall@5'] * 100:.1f} |", flush=True)


def _extract(rev: str):
    """A temporary folder holding revision ``rev`` of this repository as the package ``genret`` (and ``shared``
    beside it, as in a checkout); removed at exit."""
    import atexit
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="genret-rev-"))
    atexit.register(shutil.rmtree, tmp, True)
    (tmp / "genret").mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp / "genret")], input=archive, check=True)
    if (root.parent / "shared").is_dir():
        (tmp / "shared").symlink_to(root.parent / "shared")
    return tmp


def _run_revision(folder, name: str, a) -> str:
    """The `default` row of the old revision's own bench (a subprocess, same index, queries and counts)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, str(folder / "genret" / "bench" / "generative.py"), "--index", str(Path(a.index).resolve()),
           "--queries", str(Path(a.queries).resolve()), "-n", str(a.n), "--single", str(a.single),
           "--profiles", "default", "--batch-size", str(a.batch_size), "--threads", str(a.threads)]
    if a.task:
        cmd += ["--task", a.task]
    env = {**os.environ, "PYTHONPATH": str(folder)}
    out = subprocess.run(cmd, env=env, cwd=folder / "genret", capture_output=True, text=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| default |")]
    if out.returncode or not rows:
        raise SystemExit(f"revision {name[1:]}: its bench failed:\n{out.stderr[-2000:]}")
    return rows[-1].replace("| default |", f"| default {name} |", 1)


def _unpacked(lm):
    """``lm`` with its plain Llama loaded again without packed linear layers."""
    import dataclasses

    import torch

    from genret.core import resolve_checkpoint
    from genret.retrieval._llama import lite_causal_lm

    if lm.dtype != "bfloat16":
        raise SystemExit("default-unpacked compares bfloat16 layouts: run it with --dtype auto or bfloat16")
    plain = lite_causal_lm(resolve_checkpoint(lm.spec), torch.float32)  # float32 is never packed
    return dataclasses.replace(lm, model=plain.to(torch.bfloat16))


def profile(index, gold: list[dict], a) -> None:
    """cProfile of ``a.profile`` questions searched one at a time (k = 100) with ``GenerativeConfig()``."""
    import cProfile
    import pstats

    from genret.retrieval import GenerativeConfig, GenerativeRetriever

    r = GenerativeRetriever(index, GenerativeConfig(model=a.model, checkpoint=a.checkpoint, device="cpu",
                                                    dtype=a.dtype))
    questions = [str(rec["input"]) for rec in gold]
    for q in questions[:8]:
        r.search(q, 100, task=a.task)
    asked = questions[8:8 + a.profile]
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for q in asked:
        r.search(q, 100, task=a.task)
    prof.disable()
    print(f"{(time.perf_counter() - t0) / len(asked) * 1e3:.0f} ms a question under the profiler, "
          f"{len(asked)} questions\n")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
