"""Compiled (numba) kernels over plain arrays: rank bit vectors and a wavelet matrix, built and queried.

A *bit vector* is ``bits`` (uint64 words, bit ``i`` is bit ``i % 64`` of word ``i // 64``) plus a two-level
rank directory ``ranks`` (uint16): first, per superblock of 65,536 bits, the ones before it as 4 uint16
(little-endian 64-bit); then, per 512-bit block (and a last entry past the end), the ones before the block
within its superblock.  ``rank1(i)`` reads one superblock (cached: 1 per 8 KiB of bits) and one block entry,
and popcounts at most 8 words.  Overhead: 3.1 % (2 bytes per 512 bits).

A *wavelet matrix* over a sequence of ``n`` symbols of ``L`` bits is ``L`` such bit vectors stacked as 2-D arrays
(``bits[L, W]``, ``ranks[L, rank_entries(n)]``) and ``zeros[L]`` (zeros of each level): level ``l`` holds bit
``L - 1 - l`` of every symbol, in the order left by stably partitioning the previous level by its bit (zeros
first).  ``rank(c, i)`` walks ``i`` down the levels (one ``rank1`` per level); the walk of ``i`` ends at
``start(c) + rank(c, i)``, where ``start(c)`` (the bottom position of symbol ``c``'s block) depends only on the
symbol counts (``bottom_starts``).  Everything is a plain array: saved as ``.npy`` and memory-mapped on open.

Every kernel is ``nogil`` and cached on disk (``cache=True``): the first use in a fresh checkout compiles them
(a few seconds), later processes load the machine code.  ``tests/indexing/fm/test_fm_wavelet.py`` checks each one
against a numpy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK_WORDS = 8  # 512-bit rank blocks
SUPER_BLOCKS = 128  # blocks per superblock (65,536 bits: block counts fit uint16)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
ONE = np.uint64(1)
_U1, _U2, _U4, _U56, _U63 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56), np.uint64(63)
JIT = {"cache": True, "nogil": True}


def n_words(n_bits: int) -> int:
    return (n_bits + 63) // 64


def n_blocks(n_bits: int) -> int:
    """Block entries: one per 512-bit block and a last one (past the end)."""
    return -(-n_words(n_bits) // BLOCK_WORDS) + 1


def rank_entries(n_bits: int) -> int:
    """uint16 entries of a rank directory: 4 per superblock, then the block entries."""
    nb = n_blocks(n_bits)
    return 4 * ((nb - 1) // SUPER_BLOCKS + 1) + nb


def total_ones(ranks_row: np.ndarray, n_bits: int) -> int:
    """Ones of a whole bit vector, read off its directory (its last block entry and that one's superblock)."""
    nb = n_blocks(n_bits)
    sb = (nb - 1) // SUPER_BLOCKS
    sup = ranks_row[4 * sb:4 * sb + 4].astype(np.int64)
    base = int(sup[0] | (sup[1] << 16) | (sup[2] << 32) | (sup[3] << 48))
    return base + int(ranks_row[-1])


def n_levels(n_symbols: int) -> int:
    """Bits per symbol for symbols ``0..n_symbols-1`` (at least 1)."""
    return max(1, int(n_symbols - 1).bit_length())


@njit(inline="always", **JIT)
def _popcount(x):  # the SWAR idiom, which LLVM compiles to one popcnt instruction
    x = x - ((x >> _U1) & _M1)
    x = (x & _M2) + ((x >> _U2) & _M2)
    x = (x + (x >> _U4)) & _M4
    return (x * _H01) >> _U56


@njit(inline="always", **JIT)
def rank1(bits, ranks, lev, i):
    """Ones among bits ``[0, i)`` of level ``lev``."""
    w = i >> 6
    b = w >> 3
    o = 4 * (b >> 7)
    r = np.int64(ranks[lev, o]) | (np.int64(ranks[lev, o + 1]) << 16) | (np.int64(ranks[lev, o + 2]) << 32) \
        | (np.int64(ranks[lev, o + 3]) << 48)
    n_super = (((bits.shape[1] + 7) >> 3) >> 7) + 1  # (n_blocks - 1) // 128 + 1
    r += np.int64(ranks[lev, 4 * n_super + b])
    for k in range(w & ~7, w):
        r += np.int64(_popcount(bits[lev, k]))
    rem = i & 63
    if rem:
        r += np.int64(_popcount(bits[lev, w] & ((ONE << np.uint64(rem)) - ONE)))
    return r


@njit(inline="always", **JIT)
def _rank1_pair(bits, ranks, lev, a, b):
    """``(rank1(a), rank1(b))`` for ``a <= b``: the second by popcounting ``[a, b)`` when it spans <= 8 words."""
    ra = rank1(bits, ranks, lev, a)
    wa, wb = a >> 6, b >> 6
    if wb - wa > 8:
        return ra, rank1(bits, ranks, lev, b)
    ea, eb = np.uint64(a & 63), np.uint64(b & 63)
    if wa == wb:
        if eb == ea:
            return ra, ra
        return ra, ra + np.int64(_popcount((bits[lev, wa] >> ea) & ((ONE << (eb - ea)) - ONE)))
    c = np.int64(_popcount(bits[lev, wa] >> ea))
    for k in range(wa + 1, wb):
        c += np.int64(_popcount(bits[lev, k]))
    if eb:
        c += np.int64(_popcount(bits[lev, wb] & ((ONE << eb) - ONE)))
    return ra, ra + c


@njit(inline="always", **JIT)
def bit_at(bits, lev, i):
    return np.int64((bits[lev, i >> 6] >> np.uint64(i & 63)) & ONE)


@njit(**JIT)
def fill_ranks(bits, ranks):
    """Fill the rank directory of every level of ``bits`` (2-D) into ``ranks``."""
    n_lev, n_w = bits.shape
    nb = (n_w + 7) // 8 + 1
    n_super = (nb - 1) // 128 + 1
    for lev in range(n_lev):
        acc = 0
        base = 0
        for b in range(nb):
            if b % 128 == 0:
                base = acc
                for q in range(4):
                    ranks[lev, 4 * (b // 128) + q] = (base >> (16 * q)) & 0xFFFF
            ranks[lev, 4 * n_super + b] = acc - base
            for k in range(b * 8, min(b * 8 + 8, n_w)):
                acc += np.int64(_popcount(bits[lev, k]))


@njit(**JIT)
def rank1_many(bits, ranks, lev, idx):
    """``rank1`` of level ``lev`` at each position of ``idx`` (for tests and batch use)."""
    out = np.empty(len(idx), np.int64)
    for j in range(len(idx)):
        out[j] = rank1(bits, ranks, lev, idx[j])
    return out


@njit(**JIT)
def rank1_pairs(bits, ranks, lev, a, b):
    """``_rank1_pair`` at each ``(a[j], b[j])`` (for tests): an int64 ``[n, 2]`` array."""
    out = np.empty((len(a), 2), np.int64)
    for j in range(len(a)):
        out[j, 0], out[j, 1] = _rank1_pair(bits, ranks, lev, a[j], b[j])
    return out


@njit(**JIT)
def build_levels(vals, n_lev, bits, zeros):
    """Write the bit planes of the wavelet matrix of ``vals`` (consumed: used as scratch) into ``bits``."""
    n = len(vals)
    cur = vals
    tmp = np.empty_like(vals)
    for lev in range(n_lev):
        shift = n_lev - 1 - lev
        nz = 0
        for i in range(n):
            if (cur[i] >> shift) & 1:
                bits[lev, i >> 6] |= ONE << np.uint64(i & 63)
            else:
                nz += 1
        zeros[lev] = nz
        a, b = 0, nz
        for i in range(n):
            v = cur[i]
            if (v >> shift) & 1:
                tmp[b] = v
                b += 1
            else:
                tmp[a] = v
                a += 1
        cur, tmp = tmp, cur


@njit(**JIT)
def set_bits(bits, positions):
    """Set the given bit positions of a 1-row bit array ``bits[0, :]``."""
    for p in positions:
        bits[0, p >> 6] |= ONE << np.uint64(p & 63)


@njit(**JIT)
def wm_range(bits, ranks, zeros, c, lo, hi):
    """Bottom positions ``(lo', hi')`` of the walk of ``[lo, hi)`` for symbol ``c`` (``hi' - lo'``: count)."""
    n_lev = bits.shape[0]
    for lev in range(n_lev):
        r_lo, r_hi = _rank1_pair(bits, ranks, lev, lo, hi)
        if (c >> (n_lev - 1 - lev)) & 1:
            lo = zeros[lev] + r_lo
            hi = zeros[lev] + r_hi
        else:
            lo -= r_lo
            hi -= r_hi
        if lo >= hi:
            return 0, 0
    return lo, hi


def fm_aux(zeros: np.ndarray, delta: np.ndarray, C: np.ndarray) -> np.ndarray:
    """The small int64 arrays of an FM-index in one (fewer kernel arguments: each costs ~0.3 µs to pass)."""
    return np.concatenate([zeros, delta, C]).astype(np.int64)


@njit(inline="always", **JIT)
def split_aux(aux, n_lev):
    n_sym = (len(aux) - n_lev - 1) // 2
    return aux[:n_lev], aux[n_lev:n_lev + n_sym], aux[n_lev + n_sym:]


@njit(inline="always", **JIT)
def _search(bits, ranks, aux, syms, lo, hi, length):
    zeros, delta, C = split_aux(aux, bits.shape[0])
    for s in syms:
        if s < 0 or lo >= hi:
            return 0, 0
        if length == 0:
            lo, hi = C[s], C[s + 1]
        else:
            a, b = wm_range(bits, ranks, zeros, s, lo, hi)
            if a >= b:
                return 0, 0
            lo, hi = a + delta[s], b + delta[s]
        length += 1
    return lo, hi


@njit(**JIT)
def fm_range(bits, ranks, aux, syms, lo, hi, length):
    """Backward search: the FM range ``(lo, hi)`` after appending each symbol of ``syms`` (< 0: absent)."""
    return _search(bits, ranks, aux, syms, lo, hi, length)


@njit(**JIT)
def fm_next(bits, ranks, aux, syms, lo, hi, length, first, hot_min):
    """``fm_range``, then the distinct symbols ``>= first`` of the result with counts (``out[0]``, ``out[1]``).

    When the range has ``hot_min`` rows or more, ``out`` is empty (the caller looks for a precomputed list).
    """
    lo, hi = _search(bits, ranks, aux, syms, lo, hi, length)
    n_sym = (len(aux) - bits.shape[0] - 1) // 2
    if hi - lo >= hot_min or lo >= hi:
        return lo, hi, np.empty((2, 0), np.int64)
    out = np.empty((2, min(hi - lo, n_sym)), np.int64)
    k = _distinct(bits, ranks, aux[:bits.shape[0]], lo, hi, out, first)
    if k < 0:
        raise ValueError("FM-index wavelet matrix is corrupt: more distinct symbols than rows")
    return lo, hi, out[:, :k]


@njit(**JIT)
def wm_access(bits, ranks, zeros, i):
    """``(symbol at i, bottom position of i)``: one ``rank1`` per level."""
    n_lev = bits.shape[0]
    c = 0
    for lev in range(n_lev):
        r1 = rank1(bits, ranks, lev, i)
        if bit_at(bits, lev, i):
            c |= 1 << (n_lev - 1 - lev)
            i = zeros[lev] + r1
        else:
            i -= r1
    return c, i


@njit(**JIT)
def wm_access_many(bits, ranks, zeros, idx):
    """Symbols at each position of ``idx``."""
    out = np.empty(len(idx), np.int64)
    for j in range(len(idx)):
        out[j] = wm_access(bits, ranks, zeros, idx[j])[0]
    return out


@njit(**JIT)
def _distinct(bits, ranks, zeros, lo, hi, out, first):
    """Breadth-first: the nodes of one level are independent, so their cache misses overlap."""
    n_lev = bits.shape[0]
    if lo >= hi:
        return 0
    cap = min(hi - lo, 1 << n_lev)
    f_lo, f_hi, f_sym = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)
    g_lo, g_hi, g_sym = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)
    f_lo[0], f_hi[0], f_sym[0] = lo, hi, 0
    n_f = 1
    for lev in range(n_lev):
        z = zeros[lev]
        one = 1 << (n_lev - 1 - lev)
        n_g = 0
        for t in range(n_f):
            a, b = f_lo[t], f_hi[t]
            r_a, r_b = _rank1_pair(bits, ranks, lev, a, b)
            if (b - r_b) > (a - r_a):  # zeros child first: ascending symbols
                g_lo[n_g], g_hi[n_g], g_sym[n_g] = a - r_a, b - r_b, f_sym[t]
                n_g += 1
            if r_b > r_a:
                g_lo[n_g], g_hi[n_g], g_sym[n_g] = z + r_a, z + r_b, f_sym[t] | one
                n_g += 1
        f_lo, g_lo = g_lo, f_lo
        f_hi, g_hi = g_hi, f_hi
        f_sym, g_sym = g_sym, f_sym
        n_f = n_g
    k = 0
    for t in range(n_f):
        if f_sym[t] >= first:
            if k >= out.shape[1]:  # only a corrupt index gets here
                return -1
            out[0, k] = f_sym[t]
            out[1, k] = f_hi[t] - f_lo[t]
            k += 1
    return k


@njit(**JIT)
def wm_distinct(bits, ranks, zeros, lo, hi, first):
    """Distinct symbols ``>= first`` of ``[lo, hi)``, ascending, and their counts: ``int64[2, k]``.

    A breadth-first walk of the levels: 2 ``rank1`` per visited node, about ``k (L - log2 k + 2)`` nodes for
    ``k`` distinct symbols.
    """
    out = np.empty((2, max(min(hi - lo, 1 << bits.shape[0]), 0)), np.int64)
    k = _distinct(bits, ranks, zeros, lo, hi, out, first)
    if k < 0:
        raise ValueError("FM-index wavelet matrix is corrupt: more distinct symbols than rows")
    return out[:, :k]


def bottom_starts(counts: np.ndarray, n_lev: int) -> np.ndarray:
    """``start(c)`` for every symbol: where its block begins at the bottom of the wavelet matrix.

    The bottom level orders symbols by their bit-reversed values (stable partitions from the top bit down).
    """
    counts = np.asarray(counts, dtype=np.int64)
    syms = np.arange(len(counts), dtype=np.int64)
    rev = np.zeros(len(counts), np.int64)
    for b in range(n_lev):
        rev |= ((syms >> b) & 1) << (n_lev - 1 - b)
    order = np.argsort(rev, kind="stable")
    starts = np.empty(len(counts), np.int64)
    starts[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
    return starts


def build_wavelet(vals: np.ndarray, n_lev: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bits, ranks, zeros)`` of the wavelet matrix of ``vals`` (uint8/16/32; ``vals`` is overwritten)."""
    n = len(vals)
    bits = np.zeros((n_lev, n_words(n)), np.uint64)
    zeros = np.zeros(n_lev, np.int64)
    if n:
        build_levels(vals, n_lev, bits, zeros)
    ranks = np.zeros((n_lev, rank_entries(n)), np.uint16)
    fill_ranks(bits, ranks)
    return bits, ranks, zeros


def build_marks(n: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 1-row bit vector of length ``n`` with ones at ``positions``, and its rank directory."""
    bits = np.zeros((1, n_words(n)), np.uint64)
    if len(positions):
        set_bits(bits, np.asarray(positions, dtype=np.int64))
    ranks = np.zeros((1, rank_entries(n)), np.uint16)
    fill_ranks(bits, ranks)
    return bits, ranks
