"""Precomputed next-token lists of the 1-grams that have many distinct followers (the FM-index's worst case).

Without them, ``next_tokens`` of a frequent token walks the wavelet matrix once per distinct follower
(``k (L - log2 k + 2)`` nodes: tens of thousands of ``rank1`` for the most frequent tokens, i.e. milliseconds).
At build time the 1-grams with at least ``HOT_MIN_ROWS`` occurrences and ``HOT_MIN_DISTINCT`` distinct
followers get their list stored, longest first, within ``HOT_BUDGET`` bytes per text row (an entry is a
symbol and a uint16 count, 4 bytes for 16-bit symbols; counts of 65,535 or more are kept apart in
``hot_big``, ``[entry, count]`` rows).  Lists are keyed by their suffix-array range ``(lo, hi)``: two n-grams
with the same range have the same followers.
"""

from __future__ import annotations

import numpy as np

from . import _wavelet as wv

HOT_MIN_ROWS = 1024
HOT_MIN_DISTINCT = 384
HOT_BUDGET = 0.08
BIG = 0xFFFF
FIRST_SYM = 2


def hot_lists(bits: np.ndarray, ranks: np.ndarray, zeros: np.ndarray, C: np.ndarray, sdt: np.dtype,
              pdt: np.dtype) -> dict[str, np.ndarray]:
    """``hot_ranges`` (``[n, 2]``, sorted), ``hot_offsets``, ``hot_syms``, ``hot_counts`` of the wavelet matrix
    ``bits, ranks, zeros`` of a BWT with cumulative symbol counts ``C`` (boundary symbols left out)."""
    counts = np.diff(C)
    cand = [s for s in np.flatnonzero(counts >= HOT_MIN_ROWS).tolist() if s >= FIRST_SYM]
    found = []
    for s in cand:
        lo, hi = int(C[s]), int(C[s + 1])
        out = wv.wm_distinct(bits, ranks, zeros, lo, hi, FIRST_SYM)
        if out.shape[1] >= HOT_MIN_DISTINCT:
            found.append((out.shape[1], lo, hi, out[0], out[1]))
    found.sort(key=lambda f: -f[0])
    budget, kept = int(int(C[-1]) * HOT_BUDGET) // (np.dtype(sdt).itemsize + 2), []
    for f in found:
        if f[0] > budget:
            break
        budget -= f[0]
        kept.append(f)
    kept.sort(key=lambda f: f[1])
    counts = np.concatenate([f[4] for f in kept]) if kept else np.zeros(0, np.int64)
    big = np.flatnonzero(counts >= BIG)
    return {"hot_ranges": np.array([(f[1], f[2]) for f in kept], dtype=pdt).reshape(-1, 2),
            "hot_offsets": np.concatenate([[0], np.cumsum([f[0] for f in kept])]).astype(np.int64),
            "hot_syms": (np.concatenate([f[3] for f in kept]) if kept else np.zeros(0)).astype(sdt),
            "hot_counts": np.minimum(counts, BIG).astype(np.uint16),
            "hot_big": np.stack([big, counts[big]], axis=1).astype(np.int64).reshape(-1, 2)}


def hot_counts(counts: np.ndarray, big: np.ndarray, a: int) -> np.ndarray:
    """The true counts of entries ``[a, a + len(counts))`` (uint16, saturated) given the ``hot_big`` rows."""
    out = counts.astype(np.int64)
    if len(big) and (out == BIG).any():
        lo, hi = np.searchsorted(big[:, 0], [a, a + len(out)])
        rows = np.asarray(big[lo:hi])
        out[rows[:, 0] - a] = rows[:, 1]
    return out
