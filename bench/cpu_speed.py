"""Every model path at float32, bfloat16 and int8, side by side in one run, with quality beside speed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_speed.py --out runs/cpu-speed

Each (path, dtype) runs in a fresh worker process on one torch thread, so a path's load, caches and oneDNN kernels
are its own.  Paths:

- ``encode``: the dense encoder (packaged MiniLM) over 256 scifact paragraphs (title + text, at most 256 tokens),
  in the encoder's default batches on a CPU (16: ``bench/encode_batch.py``) as ``genret index`` encodes: units/s,
  and the cosine of each vector to float32's (min / mean); and query encoding one query at a time (the first 64
  squad dev questions): ms/query;
- ``dense``: a dense index per dev task (``--dense-tasks``; built once per dtype under OUT/indexes and kept, its
  build time reported as units/s) and its page / passage R-Precision on ``--records`` dev records;
- ``generative``: the zero-shot generative retriever (``GenerativeConfig()``, SmolLM2-135M) per dev task: ms/query
  batched (8) and one at a time, page / passage R-Precision on ``--records`` dev records;
- ``rag``: RAG answers (BM25 top 3 passages, the packaged generator and span reader) on ``--rag-records`` squad dev
  records: s/answer and EM;
- ``train``: one optimizer step of ``genret train retriever`` (batch 8 squad train records, generation loss):
  s/step after two warm-up steps (float32 vs accelerate's bf16 autocast; int8 does not train).

``--capped`` adds rows for float32 and int8 with oneDNN capped below bf16 (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``): how an
ordinary CPU without AMX / AVX512-BF16 runs (``auto`` resolves to int8 there).  Achieved GFLOP/s is 2 × (linear-layer
parameters) × tokens / seconds (attention's own products left out, so it is a lower bound), set against this CPU's
peak per core for the dtype: float32 AVX-512 with two FMA units 64 FLOP/cycle, bf16 AMX 1024, int8 (VNNI,
fbgemm's path) 256 ops/cycle, times the clock ``lscpu`` reports.  Prints Markdown tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MINIKILT = Path(__file__).resolve().parent.parent.parent / "shared" / "minikilt"
TASKS = ("squad", "scifact", "climate_fever")
PEAK_FLOP_PER_CYCLE = {"float32": 64, "bfloat16": 1024, "int8": 256}
CAP = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}


def _linear_params(model) -> int:
    import torch

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            n += m.in_features * m.out_features
        elif type(m).__name__ == "Linear" and hasattr(m, "weight") and callable(m.weight):  # dynamic int8
            w = m.weight()
            n += int(w.shape[0] * w.shape[1])
    return n


def _gflops(params: int, tokens: int, seconds: float) -> float:
    return 2 * params * tokens / seconds / 1e9


def _kilt(task: str, n: int) -> list[dict]:
    from genret.eval import read_kilt

    return read_kilt(MINIKILT / task / "dev.jsonl")[:n]


# ----------------------------------------------------------------------------------------------- workers


def work_encode(a) -> dict:
    import numpy as np

    from genret.indexing import SentenceTransformerEncoder

    pages = [json.loads(line) for line in open(MINIKILT / "scifact" / "knowledge_source.jsonl", encoding="utf-8")]
    texts = [f"{p['wikipedia_title']}\n{' '.join(p['text'][1:])}" for p in pages[:256]]
    enc = SentenceTransformerEncoder(dtype=a.dtype, device="cpu")
    st = enc._model  # noqa: SLF001 - the bench counts the model's tokens and parameters
    st.max_seq_length = 256
    enc.encode(texts[:16], batch_size=16)
    t0 = time.perf_counter()
    vecs = enc.encode(texts)  # the default batch on a CPU, as `genret index` encodes
    dt = time.perf_counter() - t0
    tokens = sum(min(len(x), 256) for x in st.tokenizer(texts, add_special_tokens=True)["input_ids"])
    np.save(Path(a.out) / f"encode-{a.dtype}{'-capped' if a.capped else ''}.npy", vecs)
    queries = [r["input"] for r in _kilt("squad", 64)]
    enc.encode(queries[:4], batch_size=1)
    t0 = time.perf_counter()
    for q in queries:
        enc.encode([q], batch_size=1)
    q_ms = (time.perf_counter() - t0) / len(queries) * 1e3
    return {"units_per_s": len(texts) / dt, "query_ms": q_ms,
            "gflops": _gflops(_linear_params(st), tokens, dt)}


def _index(a, task: str, kind: str) -> Path:
    """OUT/indexes/TASK-KIND, built once (``fm``: FM-index + BM25; ``dense-DTYPE``: dense only)."""
    from genret.indexing import DenseConfig, IndexConfig, build_index

    path = Path(a.out) / "indexes" / f"{task}-{kind}{'-capped' if a.capped and kind != 'fm' else ''}"
    if not (path / "manifest.json").is_file():
        comps = ("fm", "bm25") if kind == "fm" else ("dense",)
        cfg = IndexConfig(components=comps, dense=DenseConfig(device="cpu", dtype=a.dtype))
        build_index(MINIKILT / task / "knowledge_source.jsonl", path, cfg, progress=False)
    return path


def _rprec(preds: list[dict], gold: list[dict]) -> dict:
    from genret.eval import LEVELS, score

    return {lv: score(preds, gold, ks=(5,), rank_keys=LEVELS[lv], downstream=False)["retrieval"]["Rprec"]
            for lv in ("page", "passage")}


def work_dense(a) -> dict:
    from genret.eval import predict
    from genret.indexing import Index
    from genret.retrieval import RetrievalConfig, load_retriever

    out = {}
    for task in a.dense_tasks.split(","):
        path = _index(a, task, f"dense-{a.dtype}")
        with Index(path) as index:
            comp = index.component("dense")
            r = load_retriever(index, "dense", RetrievalConfig(dense={"device": "cpu", "dtype": a.dtype}))
            gold = _kilt(task, a.records)
            out[task] = {"build_units_per_s": comp.params["count"] / comp.build_seconds,
                         **_rprec(predict(r, gold, 100, progress=False), gold)}
    return out


def work_generative(a) -> dict:
    from genret.eval import predict
    from genret.indexing import Index
    from genret.retrieval import GenerativeConfig, GenerativeRetriever

    out, lm = {}, None
    for task in a.gen_tasks.split(","):
        with Index(_index(a, task, "fm")) as index:
            r = GenerativeRetriever(index, GenerativeConfig(device="cpu", dtype=a.dtype, task=task), lm=lm)
            lm = r.lm
            gold = _kilt(task, a.records)
            r.search(str(gold[0]["input"]), 10)
            singles = []
            for rec in gold[:8]:
                t0 = time.perf_counter()
                r.search(str(rec["input"]), 100)
                singles.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            preds = predict(r, gold, 100, batch_size=8, progress=False)
            out[task] = {"batched_ms": (time.perf_counter() - t0) / len(gold) * 1e3,
                         "single_ms": statistics.median(singles) * 1e3, **_rprec(preds, gold)}
    return out


def work_rag(a) -> dict:
    from genret.eval import evaluate_rag
    from genret.indexing import Index
    from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline, load_generator, load_retriever

    generator = load_generator(GeneratorConfig(device="cpu", dtype=a.dtype, max_new_tokens=16))
    with Index(_index(a, "squad", "fm")) as index:
        pipe = RagPipeline(generator, load_retriever(index, "bm25"), None, RagConfig(passages=3))
        gold = MINIKILT / "squad" / "dev.jsonl"
        evaluate_rag(pipe, gold, task_name="squad", max_records=2, progress=False)
        t0 = time.perf_counter()
        report = evaluate_rag(pipe, gold, task_name="squad", max_records=a.rag_records, progress=False)
        dt = time.perf_counter() - t0
    return {"s_per_answer": dt / a.rag_records, "em": report["downstream"]["em"]}


def work_train(a) -> dict:
    from genret.eval import read_kilt
    from genret.indexing import Index
    from genret.retrieval.generative.training import TrainConfig, TrainTask, train_retriever

    if a.dtype == "int8":
        return {}
    walls = {}
    with Index(_index(a, "squad", "fm")) as index:
        for steps in (2, 8):  # the difference is 6 steps, without loading and the first steps' warm-up
            cfg = TrainConfig(tasks=[TrainTask(name="squad", file=str(MINIKILT / "squad" / "train.jsonl"))],
                              batch_size=8, max_steps=steps, max_records=128, device="cpu", seed=0,
                              mixed_precision={"float32": "no", "bfloat16": "bf16"}[a.dtype])
            t0 = time.perf_counter()
            train_retriever(cfg, index, Path(a.out) / f"ckpt-{a.dtype}-{steps}", read_records=read_kilt,
                            progress=False)
            walls[steps] = time.perf_counter() - t0
    return {"s_per_step": (walls[8] - walls[2]) / 6}


WORKERS = {"encode": work_encode, "dense": work_dense, "generative": work_generative, "rag": work_rag,
           "train": work_train}


# ----------------------------------------------------------------------------------------------- driver


def _clock_ghz() -> float:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return float("nan")
    for key in ("CPU max MHz", "CPU MHz"):
        for line in out.splitlines():
            if line.startswith(key):
                return float(line.split(":")[1]) / 1000
    return 2.0  # not reported (a VM): a nominal 2 GHz


def _run(path: str, dtype: str, capped: bool, a) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(CAP if capped else {})}
    cmd = [sys.executable, __file__, "--worker", path, "--dtype", dtype, "--out", a.out, "--records", str(a.records),
           "--rag-records", str(a.rag_records), "--dense-tasks", a.dense_tasks, "--gen-tasks", a.gen_tasks]
    cmd += ["--capped"] if capped else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {path:<10} {dtype:<8} {'capped' if capped else '':<6} {time.perf_counter() - t0:6.0f} s  "
          f"{json.dumps(res)}", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/cpu-speed")
    p.add_argument("--paths", default=",".join(WORKERS))
    p.add_argument("--dtypes", default="float32,bfloat16,int8")
    p.add_argument("--capped", action="store_true", help="(driver) add the capped-ISA rows; (worker) run capped")
    p.add_argument("--records", type=int, default=100, help="dev records per task for R-Precision")
    p.add_argument("--rag-records", type=int, default=50)
    p.add_argument("--dense-tasks", default="squad,climate_fever")
    p.add_argument("--gen-tasks", default=",".join(TASKS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.worker:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(WORKERS[a.worker](a)))
        return
    saved = Path(a.out) / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() else {}
    for path in a.paths.split(","):
        for dtype in a.dtypes.split(","):
            results.setdefault(path, {})[dtype] = _run(path, dtype, False, a)
            saved.write_text(json.dumps(results, indent=1))
        if a.capped and path in ("encode", "generative", "rag"):
            for dtype in ("float32", "int8"):
                results[path][f"{dtype} (capped)"] = _run(path, dtype, True, a)
                saved.write_text(json.dumps(results, indent=1))
    report(results, a.out)


def report(results: dict, out: str) -> None:
    import numpy as np

    ghz = _clock_ghz()
    print(f"\nCPU clock {ghz:.2f} GHz; peak GFLOP/s per core: "
          + ", ".join(f"{k} {v * ghz:.0f}" for k, v in PEAK_FLOP_PER_CYCLE.items()) + "\n")
    ref = Path(out) / "encode-float32.npy"
    enc = results.get("encode", {})
    if enc:
        print("| encode (MiniLM) | units/s | × float32 | query ms | cosine to float32 min / mean "
              "| GFLOP/s (% of peak) |")
        print("|---|---|---|---|---|---|")
        base = enc.get("float32", {}).get("units_per_s")
        for dt, r in enc.items():
            if "units_per_s" not in r:
                continue
            f = Path(out) / f"encode-{dt.replace(' (capped)', '')}{'-capped' if 'capped' in dt else ''}.npy"
            cos = "–"
            if ref.is_file() and f.is_file():
                c = (np.load(ref) * np.load(f)).sum(1)
                cos = f"{c.min():.4f} / {c.mean():.4f}"
            peak = PEAK_FLOP_PER_CYCLE[dt.split()[0]] * ghz
            ratio = f"{r['units_per_s'] / base:.2f}" if base else "–"  # no float32 row in this run
            print(f"| {dt} | {r['units_per_s']:.1f} | {ratio} | {r['query_ms']:.1f} | {cos} | "
                  f"{r['gflops']:.1f} ({r['gflops'] / peak * 100:.0f} %) |")
    for path, keys in (("dense", ("build_units_per_s", "page", "passage")),
                       ("generative", ("batched_ms", "single_ms", "page", "passage"))):
        rows = results.get(path, {})
        if not rows:
            continue
        print(f"\n| {path} | task | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for dt, per_task in rows.items():
            for task, r in per_task.items():
                if isinstance(r, dict):
                    cells = [f"{r[k] * 100:.1f}" if k in ("page", "passage") else f"{r[k]:.0f}" for k in keys]
                    print(f"| {dt} | {task} | " + " | ".join(cells) + " |")
    for path, keys in (("rag", ("s_per_answer", "em")), ("train", ("s_per_step",))):
        rows = results.get(path, {})
        if rows:
            print(f"\n| {path} | " + " | ".join(keys) + " |")
            print("|---|" + "---|" * len(keys))
            for dt, r in rows.items():
                if r and all(k in r for k in keys):
                    print(f"| {dt} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
