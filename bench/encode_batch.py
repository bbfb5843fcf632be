"""The dense encoder's speed by batch size and dtype, side by side in one process: the measurement behind the
encoder's default batch on a CPU (``indexing._encoder.CPU_BATCH``).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/encode_batch.py --index runs/adapt/squad

Encodes the first ``--units`` units of an index (title + text, as ``genret index`` does) with the packaged MiniLM
(or ``--model``) on one torch thread, once per (batch size, dtype), the dtypes alternating within each batch size
and the whole sweep repeated ``--repeats`` times (best of the repeats: the machine is shared).  Prints units/s per
batch size and dtype, and bfloat16 over float32.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="a genret index (its units are encoded)")
    p.add_argument("--units", type=int, default=384)
    p.add_argument("--batches", default="4,8,16,32,64,128")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--model", default=None, help="default: the index's dense model, else the packaged MiniLM")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    import torch

    from genret.core import DEFAULT_DENSE_MODEL
    from genret.indexing import Index, SentenceTransformerEncoder, unit_text

    torch.set_num_threads(1)
    index = Index(a.index)
    try:
        texts: list[str] = []
        for batch in index.store.iter_units(batch=512):
            texts += [unit_text(u.title, u.text, True) for u in batch]
            if len(texts) >= a.units:
                break
    finally:
        index.close()
    texts = texts[:a.units]
    encoders = {dt: SentenceTransformerEncoder(a.model or DEFAULT_DENSE_MODEL, "cpu", dt) for dt in a.dtypes.split(",")}
    best: dict[tuple[int, str], float] = {}
    for _ in range(a.repeats):
        for bs in (int(x) for x in a.batches.split(",")):
            for dt, enc in encoders.items():
                enc.encode(texts[:bs], batch_size=bs)  # warm the kernels for this shape
                t0 = time.perf_counter()
                enc.encode(texts, batch_size=bs)
                rate = len(texts) / (time.perf_counter() - t0)
                best[(bs, dt)] = max(best.get((bs, dt), 0.0), rate)
    dts = list(encoders)
    both = {"float32", "bfloat16"} <= set(dts)
    print(f"{len(texts)} units of {a.index}, one torch thread, best of {a.repeats}; units/s\n")
    print("| batch | " + " | ".join(dts) + (" | bfloat16 / float32 |" if both else " |"))
    print("|---:|" + "---:|" * len(dts) + ("---:|" if both else ""))
    for bs in (int(x) for x in a.batches.split(",")):
        row = " | ".join(f"{best[(bs, dt)]:.1f}" for dt in dts)
        ratio = f" | {best[(bs, 'bfloat16')] / best[(bs, 'float32')]:.2f}" if both else ""
        print(f"| {bs} | {row}{ratio} |")


if __name__ == "__main__":
    main()
