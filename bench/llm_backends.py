"""One model, three ways in: the packaged SmolLM2-135M-Instruct through transformers (``--generator hf``, the GGUF
de-quantised to float32 weights, computing at ``auto``), the same GGUF file through llama.cpp (``llamacpp``), and
through a real OpenAI-compatible server (``llama_cpp.server`` started here on 127.0.0.1, ``openai``: span answers
and label scores from its ``/completions`` echo + logprobs).  Same process, same retriever (BM25, 3 passages, no
demonstrations), one torch / llama.cpp thread:

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/llm_backends.py --index-squad runs/indexes/squad \
        --index-scifact runs/indexes/scifact

- squad dev, the first ``--squad`` records: s/answer and EM (span answers: the span reader where the backend scores);
- scifact dev, the first ``--scifact`` claims: label accuracy (rank classification: ``--label-head none`` for every
  backend, since the packaged label head reads hidden states only the hf backend gives) and s/answer.

Needs ``genret[llamacpp]`` (``make test-llamacpp`` installs it).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MINIKILT = Path(__file__).resolve().parent.parent.parent / "shared" / "minikilt"


def _server(gguf: str, threads: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--logits_all", "true", "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-squad", default="runs/indexes/squad")
    ap.add_argument("--index-scifact", default="runs/indexes/scifact")
    ap.add_argument("--squad", type=int, default=50, help="squad dev records")
    ap.add_argument("--scifact", type=int, default=101, help="scifact dev claims (all: 101)")
    ap.add_argument("--backends", default="hf,llamacpp,openai")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import torch

    from genret.core import resolve_lm
    from genret.eval import evaluate_rag
    from genret.indexing import Index
    from genret.retrieval import GeneratorConfig, RagConfig, RagPipeline, load_generator, load_retriever

    torch.set_num_threads(a.threads)
    folder, name = resolve_lm("smollm2-135m-instruct")
    gguf = os.path.join(folder, name)
    proc, rows = None, []
    try:
        for backend in a.backends.split(","):
            fields = {"kind": backend, "max_new_tokens": 16}
            if backend == "openai":
                proc, url = _server(gguf, a.threads)
                fields["base_url"] = url
            generator = load_generator(GeneratorConfig(**fields))
            out = {}
            for task, index_dir, n in (("squad", a.index_squad, a.squad), ("scifact", a.index_scifact, a.scifact)):
                with Index(index_dir) as index:
                    pipe = RagPipeline(generator, load_retriever(index, "bm25"), None,
                                       RagConfig(passages=3, demos=0, label_head="none"))
                    gold = MINIKILT / task / "dev.jsonl"
                    evaluate_rag(pipe, gold, task_name=task, max_records=2, progress=False)  # warm
                    t0 = time.perf_counter()
                    report = evaluate_rag(pipe, gold, task_name=task, max_records=n, progress=False)
                    out[task] = (report["downstream"], (time.perf_counter() - t0) / n)
            generator.close()
            squad, scifact = out["squad"], out["scifact"]
            rows.append(f"| {backend} | {squad[1]:.2f} | {squad[0]['em'] * 100:.1f} | {scifact[1]:.2f} | "
                        f"{scifact[0]['accuracy'] * 100:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
                proc = None
    finally:
        if proc is not None:
            proc.terminate()
    print(f"| backend | squad s/answer | squad EM ({a.squad}) | scifact s/answer | scifact accuracy ({a.scifact}) |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
