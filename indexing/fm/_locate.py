"""Locating occurrences: the sampled suffix array as bit-packed fields, and the compiled locate kernels.

An FM-index keeps the text position of every ``sample``-th suffix (those whose position is a multiple of it),
marked in a rank bit vector over the rows (``_wavelet.build_marks``) and stored divided by ``sample`` in
``width``-bit fields of uint64 words (``pack``).  ``locate`` walks each row back by LF steps until a marked row,
all rows in lock step so that their cache misses overlap; ``fm_locate_spans`` turns row spans into (document,
offset) pairs in one call.  Kernels are compiled and cached as in ``_wavelet``, whose rank primitives they use;
``tests/indexing/fm/test_fm_wavelet.py`` checks them against numpy references.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._wavelet import JIT, ONE, bit_at, rank1, split_aux


def packed_words(n: int, width: int) -> int:
    """uint64 words of ``n`` values of ``width`` bits, packed (``pack``), plus one so that reads never overrun."""
    return (n * width + 63) // 64 + 1


def pack_width(max_value: int) -> int:
    return max(1, int(max_value).bit_length())


@njit(**JIT)
def pack(values, width):
    """``values`` (non-negative, below ``2**width``) as consecutive ``width``-bit fields of uint64 words."""
    out = np.zeros((len(values) * width + 63) // 64 + 1, np.uint64)
    for k in range(len(values)):
        bit = k * width
        w, o = bit >> 6, np.uint64(bit & 63)
        v = np.uint64(values[k])
        out[w] |= v << o
        if (bit & 63) + width > 64:
            out[w + 1] |= v >> (np.uint64(64) - o)
    return out


@njit(inline="always", **JIT)
def _unpack(words, k, width):
    bit = k * width
    w, o = bit >> 6, bit & 63
    v = words[w] >> np.uint64(o)
    if o + width > 64:
        v |= words[w + 1] << np.uint64(64 - o)
    return np.int64(v & ((ONE << np.uint64(width)) - ONE))


@njit(**JIT)
def unpack_many(words, width, idx):
    """The ``width``-bit fields ``idx`` of ``pack``ed words (for tests)."""
    out = np.empty(len(idx), np.int64)
    for j in range(len(idx)):
        out[j] = _unpack(words, idx[j], width)
    return out


@njit(inline="always", **JIT)
def _locate(bits, ranks, aux, mbits, mranks, spos, width, rows, max_steps):
    """Text positions of the suffixes at ``rows``: LF steps until a sampled row (-1 if ``max_steps`` pass).

    The sampled positions are multiples of ``max_steps``: ``spos`` holds them divided by it, ``pack``ed in
    ``width``-bit fields, or as they are (an integer array) when ``width`` is 0.  All rows advance in lock step,
    one wavelet level at a time, so the cache misses of the independent walks overlap (one walk alone is a chain
    of ``L`` dependent misses per LF step).
    """
    n_lev = bits.shape[0]
    zeros, delta, _ = split_aux(aux, n_lev)
    n = len(rows)
    out = np.empty(n, np.int64)
    cur = rows.astype(np.int64)
    sym = np.zeros(n, np.int64)
    live = np.arange(n)
    n_live = n
    for step in range(max_steps + 1):
        j = 0
        for t in range(n_live):
            q = live[t]
            r = cur[q]
            if bit_at(mbits, 0, r):
                k = rank1(mbits, mranks, 0, r)
                if width:
                    out[q] = _unpack(spos, k, width) * max_steps + step
                else:
                    out[q] = np.int64(spos[k]) + step
            else:
                live[j] = q
                sym[q] = 0
                j += 1
        n_live = j
        if n_live == 0:
            return out
        for lev in range(n_lev):  # LF of every live row, level by level
            z = zeros[lev]
            one = 1 << (n_lev - 1 - lev)
            for t in range(n_live):
                q = live[t]
                i = cur[q]
                r1 = rank1(bits, ranks, lev, i)
                if bit_at(bits, lev, i):
                    sym[q] |= one
                    cur[q] = z + r1
                else:
                    cur[q] = i - r1
        for t in range(n_live):
            q = live[t]
            cur[q] += delta[sym[q]]
    for t in range(n_live):
        out[live[t]] = -1
    return out


@njit(**JIT)
def fm_locate_spans(bits, ranks, aux, mbits, mranks, spos, width, spans, max_steps, starts):
    """Document and offset of the occurrences in row spans ``spans[j] = (first row, rows, n-gram length)``.

    One call for what took a dozen numpy calls: the rows, the LF walks (``_locate``), then each occurrence's
    start in the un-reversed text ``T`` and the document whose ``starts`` (``T`` offsets) hold it.
    ValueError when a walk passes ``max_steps`` (a corrupt sampled suffix array).
    """
    n_rows = aux[len(aux) - 1]  # C[-1]
    total = 0
    for j in range(spans.shape[0]):
        total += spans[j, 1]
    rows = np.empty(total, np.int64)
    lens = np.empty(total, np.int64)
    k = 0
    for j in range(spans.shape[0]):
        for t in range(spans[j, 1]):
            rows[k] = spans[j, 0] + t
            lens[k] = spans[j, 2]
            k += 1
    rev = _locate(bits, ranks, aux, mbits, mranks, spos, width, rows, max_steps)
    doc = np.empty(total, np.int64)
    off = np.empty(total, np.int64)
    n_docs = len(starts) - 1
    for k in range(total):
        if rev[k] < 0:
            raise ValueError("FM-index locate walked past the sampling rate: corrupt sampled suffix array")
        tpos = n_rows - 1 - rev[k] - lens[k]
        lo, hi = 0, n_docs  # the last document whose start is <= tpos
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if np.int64(starts[mid]) <= tpos:
                lo = mid
            else:
                hi = mid
        doc[k] = lo
        off[k] = tpos - np.int64(starts[lo])
    return doc, off
