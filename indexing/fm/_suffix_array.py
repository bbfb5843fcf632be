"""Suffix arrays of token texts (libdivsufsort through pydivsufsort), the texts' symbols, and the integer widths
the FM-index stores."""

from __future__ import annotations

import numpy as np

# the FM-index's symbols (see ``_index``): 0 the end marker, 1 the document boundary, from 2 on the tokens that
# occur (in id order)
END_SYM, SEP_SYM, FIRST_SYM = 0, 1, 2
_CHUNK = 1 << 22


def pos_dtype(n: int) -> np.dtype:
    return np.dtype(np.uint32 if n < 2**32 else np.uint64)


def sym_width(n_symbols: int) -> int:
    """Bytes per symbol: 1, 2 or 3 (the BWT is stored as uint8, uint16, or uint16 + uint8)."""
    return 1 if n_symbols <= 256 else 2 if n_symbols <= 65536 else 3


def suffix_array(text: np.ndarray, width: int) -> np.ndarray:
    """Suffix array of an unsigned int text whose values fit in ``width`` bytes, via libdivsufsort.

    The text is written as big-endian ``width``-byte groups, whose byte order equals the symbol order, and
    sorted as bytes; only suffixes starting on a group boundary are kept (compacted in place, so the peak is
    the byte text plus one int32 per byte).
    """
    from pydivsufsort import divsufsort

    n = len(text)
    if width == 1:
        return divsufsort(np.ascontiguousarray(text, dtype=np.uint8))
    raw = np.empty((n, width), np.uint8)
    for k in range(width):
        raw[:, k] = (text >> (8 * (width - 1 - k))) & 0xFF
    sa = divsufsort(raw.reshape(-1))
    del raw
    j = 0
    for a in range(0, len(sa), _CHUNK):
        part = sa[a:a + _CHUNK]
        keep = part[part % width == 0] // width
        sa[j:j + len(keep)] = keep
        j += len(keep)
    if j != n:
        raise AssertionError(f"suffix array compaction kept {j} of {n} suffixes")
    return sa[:n]
