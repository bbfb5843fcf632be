"""The CPU kernels behind the bf16 figures, one torch thread, float32 beside bfloat16 in one run:

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bf16_kernels.py

- a MiniLM-sized linear layer (384 → 384, 3,072 rows: batch 16 × 192 tokens) and MiniLM-sized attention
  (``scaled_dot_product_attention``, batch 16 × 12 heads × 192 tokens × 32 dims, a padding mask): ms per call;
- the plain Llama's bfloat16 linear layer as ``F.linear`` and packed once (``_llama_torch.PackedLinear``), SmolLM2's
  576 → 3,072 at 1 / 20 / 100 rows: ms per call;
- with ``--profile``: the share of each operator in the packaged MiniLM encoding 256 squad paragraphs (title + text)
  in bfloat16, by torch's profiler.

Prints Markdown tables (the median of ``--repeat`` timings).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

MINIKILT = Path(__file__).resolve().parent.parent.parent / "shared" / "minikilt"


def _ms(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def kernels(repeat: int) -> None:
    import torch
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    b, h, n, d = 16, 12, 192, 32
    lengths = torch.randint(n // 2, n + 1, (b,), generator=g)
    mask = (torch.arange(n)[None, :] < lengths[:, None])[:, None, None, :]
    print("| kernel | float32 ms | bfloat16 ms | × |\n|---|---:|---:|---:|")
    for name, make in (
        ("linear 384 → 384, 3,072 rows", lambda dt: (lambda w, x: lambda: F.linear(x, w))(
            torch.randn(384, 384, generator=g).to(dt), torch.randn(b * n, 384, generator=g).to(dt))),
        ("attention 16 × 12 × 192 × 32, masked", lambda dt: (lambda q, k, v: lambda: F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask))(*(torch.randn(b, h, n, d, generator=g).to(dt) for _ in range(3)))),
    ):
        with torch.inference_mode():
            f32, b16 = _ms(make(torch.float32), repeat), _ms(make(torch.bfloat16), repeat)
        print(f"| {name} | {f32:.2f} | {b16:.2f} | {f32 / b16:.1f} |")

    from genret.retrieval._llama_torch import PackedLinear

    print("\n| bfloat16 linear 576 → 3,072 | F.linear ms | packed ms | × |\n|---|---:|---:|---:|")
    w = torch.randn(3072, 576, generator=g).to(torch.bfloat16)
    packed = PackedLinear(w)
    for rows in (1, 20, 100):
        x = torch.randn(rows, 576, generator=g).to(torch.bfloat16)
        with torch.inference_mode():
            plain, fast = _ms(lambda x=x: F.linear(x, w), repeat), _ms(lambda x=x: packed(x), repeat)
        print(f"| {rows} rows | {plain:.3f} | {fast:.3f} | {plain / fast:.2f} |")


def encoder_profile() -> None:
    from torch.profiler import ProfilerActivity, profile

    from genret.indexing import SentenceTransformerEncoder

    texts = []
    for line in open(MINIKILT / "squad" / "knowledge_source.jsonl", encoding="utf-8"):
        page = json.loads(line)
        texts += [f"{page['wikipedia_title']}\n{p.strip()}" for p in page["text"][1:] if p.strip()]
        if len(texts) >= 256:
            break
    enc = SentenceTransformerEncoder(dtype="bfloat16", device="cpu")
    enc.encode(texts[:32])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        enc.encode(texts[:256])
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    print("\n| operator (MiniLM, bfloat16, 256 squad paragraphs) | share of self time |\n|---|---:|")
    for e in rows[:6]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.0f} % |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="also profile the packaged MiniLM encoder (bf16)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    kernels(a.repeat)
    if a.profile:
        encoder_profile()


if __name__ == "__main__":
    main()
