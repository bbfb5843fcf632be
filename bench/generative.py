"""Generative retrieval speed on CPU: per-query latency and queries/s for beam 5/10/15, and the cost of the
FM-index constraints (constrained vs unconstrained beam search of the same length, same model, same prompts).

    .venv/bin/python bench/generative.py --index runs/fm/squad --queries ../shared/minikilt/squad/dev.jsonl -n 20

Prints a Markdown table.  The model is the index's (packaged SmolLM2-135M-Instruct by default) or --model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True, help="KILT-format file: the `input` fields are the queries")
    ap.add_argument("-n", type=int, default=20, help="queries per setting")
    ap.add_argument("--beams", default="5,10,15")
    ap.add_argument("--max-len", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch

    from indexing import Index
    from retrieval import GenerativeConfig, GenerativeRetriever
    from retrieval._decoding import constrained_beam_search
    from retrieval._prompts import prompt_text, resolve_prompt

    queries = [json.loads(line)["input"] for line in open(a.queries, encoding="utf-8")][: a.n]
    index = Index(a.index)
    base = GenerativeRetriever(index, GenerativeConfig(model=a.model, device=a.device))
    lm, fm = base.lm, base.fm
    spec = resolve_prompt("generic", base.prompts)[1]
    prompts = [lm.tokenizer(prompt_text(spec, q, "body"))["input_ids"] for q in queries]
    markers = (base.encoder.title_start, base.encoder.title_end)
    print(f"torch threads: {torch.get_num_threads()}, queries: {len(queries)}, max_len: {a.max_len}, "
          f"batch: {a.batch_size}, device: {lm.device}\n")
    print("| beam | mode | per query, single (ms) median | p90 | queries/s single | queries/s batched |"
          " constrained / unconstrained |")
    print("|---|---|---|---|---|---|---|")
    for beam in [int(b) for b in a.beams.split(",")]:
        timings = {}
        for constrained in (True, False):
            singles = []
            for p in prompts:
                t0 = time.perf_counter()
                constrained_beam_search(lm, fm, [p], beam=beam, max_len=a.max_len, constrained=constrained,
                                        banned=markers)
                singles.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for s in range(0, len(prompts), a.batch_size):
                constrained_beam_search(lm, fm, prompts[s:s + a.batch_size], beam=beam, max_len=a.max_len,
                                        constrained=constrained, banned=markers)
            batched = time.perf_counter() - t0
            timings[constrained] = (singles, batched)
        ratio = statistics.median(timings[True][0]) / statistics.median(timings[False][0])
        for constrained in (True, False):
            singles, batched = timings[constrained]
            q = sorted(singles)
            print(f"| {beam} | {'constrained' if constrained else 'unconstrained'} | "
                  f"{statistics.median(q) * 1e3:.0f} | {q[int(0.9 * (len(q) - 1))] * 1e3:.0f} | "
                  f"{len(q) / sum(q):.2f} | {len(q) / batched:.2f} | {f'{ratio:.2f}' if constrained else ''} |")
    # end to end (decoding of body n-grams and titles + scoring), beam 10
    r = GenerativeRetriever(index, GenerativeConfig(model=a.model, device=a.device, beam=10), lm=lm)
    t0 = time.perf_counter()
    r.batch_search(queries, k=100)
    dt = time.perf_counter() - t0
    print(f"\nend to end (body + title decoding, SEAL scoring, k=100, beam 10, batch {r.config.batch_size}): "
          f"{dt / len(queries) * 1e3:.0f} ms/query, {len(queries) / dt:.2f} queries/s")


if __name__ == "__main__":
    main()
