"""Precomputed next-token lists of the 1-grams that have many distinct followers (the FM-index's worst case).

Without them, ``next_tokens`` of a frequent token walks the wavelet matrix once per distinct follower
(``k (L - log2 k + 2)`` nodes: tens of thousands of ``rank1`` for the most frequent tokens, i.e. milliseconds).
At build time the 1-grams with at least ``HOT_MIN_ROWS`` occurrences and ``HOT_MIN_DISTINCT`` distinct
followers get their list stored, longest first, within ``HOT_BUDGET`` bytes per text row.  Lists are keyed by
their suffix-array range ``(lo, hi)``: two n-grams with the same range have the same followers.

Encoding (``hot_bytes``, one byte stream; ``hot_offsets[j]`` is where list ``j`` starts, ``hot_sizes[j]`` its
entries).  An entry is a symbol (ascending) and its count (>= 1); its *gap* is the symbol minus the previous
one (the first: minus ``FIRST_SYM - 1``), >= 1.  Long lists are dense (gaps of a few symbols) and most
followers are rare (counts of a few), so an entry with ``gap <= 15`` and ``count <= 15`` is one byte,
``gap << 4 | count``; any other is an *escape* byte below 16, ``(gap bytes - 1) | (count bytes - 1) << 2``,
followed by the gap and the count, little-endian, in 1 to 4 bytes each (a list with a count of 2**32 or more is
not stored).  The stream ends with ``PAD`` zero bytes, so a decoder reads any escaped field as one 4-byte word
and masks it: about 1-4 ns an entry, where LEB128 varints took up to 21 (the longest lists, whose counts are
large, are nearly all escapes).  About 1.3 bytes an entry on Zipf text where a uint16 symbol and a uint16 count
took 4 (format ``genret-fm/2``): three times the lists in the same budget.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _wavelet as wv
from ._suffix_array import FIRST_SYM

HOT_MIN_ROWS = 1024
HOT_MIN_DISTINCT = 384
HOT_BUDGET = 0.08
PAD = 8  # zero bytes after the last list


@njit(**wv.JIT)
def encode_list(syms, counts, first):
    """The bytes of one list (``syms`` ascending, ``>= first``; ``1 <= counts < 2**32``), see the module docstring."""
    buf = np.empty(9 * len(syms), np.uint8)  # worst case: 1 + 4 + 4 bytes an entry
    p, prev = 0, first - 1
    for j in range(len(syms)):
        g, c = syms[j] - prev, counts[j]
        prev = syms[j]
        if g <= 15 and c <= 15:
            buf[p] = np.uint8((g << 4) | c)
            p += 1
        else:
            lg = 1 if g < 256 else 2 if g < 65536 else 3 if g < 16777216 else 4
            lc = 1 if c < 256 else 2 if c < 65536 else 3 if c < 16777216 else 4
            buf[p] = np.uint8((lg - 1) | ((lc - 1) << 2))
            p += 1
            for t in range(lg):
                buf[p + t] = np.uint8((g >> (8 * t)) & 255)
            p += lg
            for t in range(lc):
                buf[p + t] = np.uint8((c >> (8 * t)) & 255)
            p += lc
    return buf[:p].copy()


@njit(inline="always", **wv.JIT)
def _le32(buf, p):
    return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | \
        (np.int64(buf[p + 3]) << 24)


@njit(**wv.JIT)
def decode_list(buf, a, b, size, tok, first):
    """Tokens (``tok[sym - first]``) and counts of the list stored in ``buf[a:b]`` with ``size`` entries.

    Escaped fields are read as 4-byte words and masked (no loop, no branch on their length), so ``buf`` must
    hold ``PAD`` bytes past ``b``.  ValueError when the bytes do not hold exactly ``size`` entries (a corrupt
    index).
    """
    if a < 0 or b + PAD > len(buf):
        raise ValueError("FM-index next-token list is corrupt (outside its byte stream)")
    tokens = np.empty(size, np.int64)
    counts = np.empty(size, np.int64)
    p, s = a, first - 1
    for j in range(size):
        if p >= b:
            raise ValueError("FM-index next-token list is corrupt (too few bytes)")
        x = np.int64(buf[p])
        p += 1
        if x >= 16:
            g, c = x >> 4, x & 15
        else:
            lg, lc = (x & 3) + 1, ((x >> 2) & 3) + 1
            g = _le32(buf, p) & ((1 << (8 * lg)) - 1)
            p += lg
            c = _le32(buf, p) & ((1 << (8 * lc)) - 1)
            p += lc
            if p > b or g < 1 or c < 1:
                raise ValueError("FM-index next-token list is corrupt (bad escaped entry)")
        s += g
        if s - first >= len(tok):
            raise ValueError("FM-index next-token list is corrupt (symbol out of range)")
        tokens[j] = tok[s - first]
        counts[j] = c
    if p != b:
        raise ValueError("FM-index next-token list is corrupt (bytes left over)")
    return tokens, counts


def hot_lists(bits: np.ndarray, ranks: np.ndarray, zeros: np.ndarray, C: np.ndarray,
              pdt: np.dtype) -> dict[str, np.ndarray]:
    """``hot_ranges`` (``[n, 2]``, sorted), ``hot_offsets`` (``n + 1``), ``hot_sizes``, ``hot_bytes`` of the
    wavelet matrix ``bits, ranks, zeros`` of a BWT with cumulative symbol counts ``C`` (boundary symbols left
    out)."""
    counts = np.diff(C)
    cand = [s for s in np.flatnonzero(counts >= HOT_MIN_ROWS).tolist() if s >= FIRST_SYM]
    found = []
    for s in cand:
        lo, hi = int(C[s]), int(C[s + 1])
        out = wv.wm_distinct(bits, ranks, zeros, lo, hi, FIRST_SYM)
        if out.shape[1] >= HOT_MIN_DISTINCT and int(out[1].max()) < 1 << 32:
            found.append((out.shape[1], lo, hi, encode_list(out[0], out[1], FIRST_SYM)))
    found.sort(key=lambda f: -f[0])  # longest first: the slowest walks
    budget, kept = int(int(C[-1]) * HOT_BUDGET), []
    for f in found:
        if len(f[3]) <= budget:
            budget -= len(f[3])
            kept.append(f)
    kept.sort(key=lambda f: f[1])
    sizes = np.array([len(f[3]) for f in kept], dtype=np.int64)
    return {"hot_ranges": np.array([(f[1], f[2]) for f in kept], dtype=pdt).reshape(-1, 2),
            "hot_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "hot_sizes": np.array([f[0] for f in kept], dtype=np.int64),
            "hot_bytes": np.concatenate([f[3] for f in kept] + [np.zeros(PAD, np.uint8)])}


V2_BIG = 0xFFFF


def v2_counts(counts: np.ndarray, big: np.ndarray, a: int) -> np.ndarray:
    """A ``genret-fm/2`` list's true counts of entries ``[a, a + len(counts))`` (uint16, saturated at
    ``V2_BIG``; the larger ones are ``[entry, count]`` rows of ``big``)."""
    out = counts.astype(np.int64)
    if len(big) and (out == V2_BIG).any():
        lo, hi = np.searchsorted(big[:, 0], [a, a + len(out)])
        rows = np.asarray(big[lo:hi])
        out[rows[:, 0] - a] = rows[:, 1]
    return out
