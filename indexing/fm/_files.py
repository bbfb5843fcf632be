"""The FM-index's files: the format versions, the arrays (and their dtypes and shapes) that a shard's parameters
imply, and the checks ``FMIndex.load`` runs on them (``IndexFormatError`` on any mismatch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...core import IndexFormatError
from . import _locate as loc
from . import _wavelet as wv
from ._hot import PAD
from ._suffix_array import FIRST_SYM, pos_dtype, sym_width

FM_FORMAT = "genret-fm/5"
READABLE_FORMATS = ("genret-fm/2",)  # read as it is: plain positions, uint16 next-token lists
OLD_FORMATS = ("genret-fm/1", "genret-fm/3", "genret-fm/4")  # fm/3, fm/4: varint-coded lists (issue 17, a day)


def expected_arrays(directory: Path, params: dict[str, Any]) -> tuple[dict[str, tuple[Any, tuple]], int, int, int]:
    """``{name: (dtype, shape)}`` that ``params`` implies, the vocabulary size, the sampling rate and the width of
    the packed sampled positions (0: plain integers, ``genret-fm/2``)."""
    fmt = params.get("format") if isinstance(params, dict) else None
    if fmt in OLD_FORMATS:
        why = "its wavelet matrix was rebuilt at every open" if fmt == "genret-fm/1" else \
            "its next-token lists were varint-coded"
        raise IndexFormatError(f"{directory}: FM-index format {fmt!r} was written by an older genret ({why}); "
                               f"rebuild the index (`genret index --fm ...`) to get {FM_FORMAT}")
    if fmt != FM_FORMAT and fmt not in READABLE_FORMATS:
        raise IndexFormatError(f"{directory}: FM-index format {fmt!r}, expected {FM_FORMAT}")
    try:
        n_rows, n_docs, n_sym = int(params["n_rows"]), int(params["n_docs"]), int(params["n_symbols"])
        vocab, sample = int(params["vocab_size"]), int(params["sa_sample"])
        n_samples, n_lev = int(params["n_samples"]), int(params["n_levels"])
        n_hot = int(params["n_hot"])
        v2 = fmt == "genret-fm/2"
        n_bytes, n_big = int(params["n_hot_entries" if v2 else "n_hot_bytes"]), int(params.get("n_hot_big", 0))
        if min(vocab, sample, n_rows, n_sym - 1) < 1 or min(n_docs, n_hot, n_bytes, n_big) < 0:
            raise IndexFormatError(f"{directory}: impossible FM-index parameters {params}")
        pdt = pos_dtype(n_rows)
        sdt = {1: np.uint8, 2: np.uint16, 3: np.uint32}[sym_width(n_sym)]
        width = int(params["sample_width"]) if fmt == FM_FORMAT else 0
        if fmt == FM_FORMAT and width != loc.pack_width((n_rows - 1) // sample):
            raise IndexFormatError(f"{directory}: inconsistent FM-index parameters {params}")
        if n_lev != wv.n_levels(n_sym) or params["pos_dtype"] != str(pdt) or \
                params["n_tokens"] != n_rows - n_docs - 1 or n_samples != -(-n_rows // sample):
            raise IndexFormatError(f"{directory}: inconsistent FM-index parameters {params}")
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{directory}: bad FM-index parameters ({exc!r})") from None
    rdt, words, blocks = np.uint16, wv.n_words(n_rows), wv.rank_entries(n_rows)
    expect = {"wm_bits": (np.uint64, (n_lev, words)), "wm_ranks": (rdt, (n_lev, blocks)),
              "wm_zeros": (np.int64, (n_lev,)), "C": (np.int64, (n_sym + 1,)),
              "token_of_sym": (np.int32, (n_sym - FIRST_SYM,)), "sample_bits": (np.uint64, (1, words)),
              "sample_ranks": (rdt, (1, blocks)),
              "sample_pos": (np.uint64, (loc.packed_words(n_samples, width),)) if width else (pdt, (n_samples,)),
              "doc_starts": (pdt, (n_docs + 1,)), "hot_ranges": (pdt, (n_hot, 2)),
              "hot_offsets": (np.int64, (n_hot + 1,)), "hot_sizes": (np.int64, (n_hot,)),
              "hot_bytes": (np.uint8, (n_bytes,))}
    if v2:
        del expect["hot_sizes"], expect["hot_bytes"]
        expect.update({"hot_syms": (sdt, (n_bytes,)), "hot_counts": (np.uint16, (n_bytes,)),
                       "hot_big": (np.int64, (n_big, 2))})
    return expect, vocab, sample, width


def load_array(path: Path, dtype: np.dtype, shape: tuple, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise IndexFormatError(f"FM-index array missing: {path}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFormatError(f"FM-index array {path} is corrupt: {exc}") from None
    if arr.dtype != dtype or arr.shape != tuple(shape):
        raise IndexFormatError(f"FM-index array {path} is {arr.dtype}{list(arr.shape)}, "
                               f"expected {dtype}{list(shape)}")
    return arr


def check_contents(directory: Path, a: dict[str, np.ndarray], n_rows: int, n_docs: int, vocab: int,
                    n_samples: int) -> None:
    """Cheap consistency checks (O(σ + levels + hot lists), nothing proportional to the corpus)."""
    C, tok, starts, zeros = a["C"], np.asarray(a["token_of_sym"]), a["doc_starts"], a["wm_zeros"]
    problems = []
    if C[0] != 0 or C[1] != 1 or C[2] != n_docs + 1 or C[-1] != n_rows or (np.diff(C)[FIRST_SYM:] <= 0).any():
        problems.append("C")
    if len(tok) and (tok[0] < 0 or tok[-1] >= vocab or (np.diff(tok) <= 0).any()):
        problems.append("token_of_sym")
    if starts[0] != 0 or int(starts[-1]) != n_rows - 1:
        problems.append("doc_starts")
    if (zeros < 0).any() or (zeros > n_rows).any():
        problems.append("wm_zeros")
    ranks = a["wm_ranks"]
    if any(wv.total_ones(ranks[lev], n_rows) != n_rows - int(zeros[lev]) for lev in range(len(zeros))):
        problems.append("wm_ranks")
    if wv.total_ones(a["sample_ranks"][0], n_rows) != n_samples:
        problems.append("sample_ranks")
    off = np.asarray(a["hot_offsets"])
    if "hot_syms" in a:  # genret-fm/2: one symbol an entry
        if off[0] != 0 or off[-1] != len(a["hot_syms"]) or (np.diff(off) < 0).any():
            problems.append("hot_offsets")
    else:
        sizes = np.asarray(a["hot_sizes"])
        if off[0] != 0 or off[-1] + PAD != len(a["hot_bytes"]) or (np.diff(off) < sizes).any() or \
                (sizes < 1).any():
            problems.append("hot_offsets")  # every entry takes one byte at least
    if problems:
        raise IndexFormatError(f"{directory}: FM-index arrays {problems} are inconsistent with the parameters")
