"""The previous FM-index (format genret-fm/1, git 76e8439), kept for bench/fm_index.py's side-by-side runs only.

It needs the ``wavelet-matrix`` package (``pip install -e '.[bench]'``).  Original docstring:

FM-index over token ids: every n-gram of the corpus, counted, extended and located in compressed space.

Layout.  Documents (units) are int arrays of token ids ``0..vocab_size-1``.  Token ids are remapped to
dense *symbols* ``2..n_symbols-1`` (only ids that occur get one, in id order, so the wavelet matrix has as
few bit levels as possible); symbol 1 is the document boundary and 0 a unique end marker.  With
``T = d0 1 d1 1 ... d_{k-1} 1`` the index is built over the **reversed** text ``R = reverse(T) + [0]``:
appending a token to the right of an n-gram is then one backward-search step (two ``rank`` calls), and
the distinct tokens that follow an n-gram are the symbols of one contiguous BWT slice (its suffix-array
range).  No query symbol is a boundary, so an n-gram never matches across two documents.

Arrays (plain ``.npy``, no pickle): ``bwt`` (uint8, or uint16 holding the low 16 bits), ``bwt_hi``
(uint8, high bits, only past 65536 symbols), ``C`` (int64 cumulative symbol counts), ``token_of_sym``
(int32), ``sample_rows``/``sample_pos`` (suffix-array rows whose text position is a multiple of
``sa_sample``, and those positions; uint32 below 2**32 rows) and ``doc_starts`` (start of each document in
``T``, plus ``len(T)``).  The ``wavelet_matrix.WaveletMatrix`` over the BWT cannot be saved without
pickle, so it is rebuilt from ``bwt`` on load (about 0.5 µs per token) and lives in RAM (2 bits per bit
level per token: about 4 bytes/token for 16-bit symbols).

Ranges.  ``FMRange = (lo, hi, length)``: suffix-array rows ``[lo, hi)`` of an n-gram of ``length`` tokens;
``(0, n_rows, 0)`` is the empty n-gram (every position); an n-gram that does not occur has ``lo == hi``.

Costs (r = occurrences, σ = distinct tokens; a ``rank`` call is 1-3 µs at 1e6-5e7 tokens):
``extend`` 2 ranks (1 when r <= 8, none from the root); ``count``/``range_of`` one ``extend`` per token;
``next_tokens_of_range`` O(r) for r <= 32, then ``np.unique``/``np.bincount`` over the BWT slice (the root's
answer is precomputed); ``locate``/``doc_counts`` up to ``sa_sample - 1`` LF steps (one rank each, about
``sa_sample / 2`` on average) per returned occurrence, vectorised over all occurrences of the call.
"""

from __future__ import annotations

import ctypes
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genret.core import IndexFormatError, progress_bar
from genret.indexing.fm._queries import FMQueries, FMRange, Limit, NextTokens, empty_next
from genret.indexing.fm._suffix_array import pos_dtype, suffix_array, sym_width

FM_FORMAT = "genret-fm/1"
END_SYM, SEP_SYM, FIRST_SYM = 0, 1, 2
_CHUNK = 1 << 22
_TINY, _SMALL = 8, 32  # range sizes below which extend / next_tokens read the BWT slice in Python
_ARRAYS = ("bwt", "bwt_hi", "C", "token_of_sym", "sample_rows", "sample_pos", "doc_starts")


class FMIndex(FMQueries):
    """A succinct n-gram index over the documents of one shard (see the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], vocab_size: int, sa_sample: int,
                 bwt_path: Path | None = None) -> None:
        """Wrap validated arrays (use ``build``/``from_flat``/``load``); the wavelet matrix is built lazily."""
        self.vocab_size, self.sa_sample = int(vocab_size), int(sa_sample)
        self._a = arrays
        self._bwt, self._bwt_hi = arrays["bwt"], arrays.get("bwt_hi")
        self._C = np.asarray(arrays["C"], dtype=np.int64)
        self._C_list: list[int] = self._C.tolist()
        self._tok = np.asarray(arrays["token_of_sym"], dtype=np.int64)
        sym = np.full(self.vocab_size, -1, np.int64)
        sym[self._tok] = np.arange(FIRST_SYM, FIRST_SYM + len(self._tok))
        self._sym: list[int] = sym.tolist()
        self._srows, self._spos = arrays["sample_rows"], arrays["sample_pos"]
        self._starts = arrays["doc_starts"]
        self.n_rows = len(self._bwt)
        self.n_docs = len(self._starts) - 1
        self.n_tokens = self.n_rows - self.n_docs - 1
        self.n_symbols = len(self._C) - 1
        self._root_next = (self._tok.copy(), np.diff(self._C)[FIRST_SYM:].astype(np.int64))
        self._bwt_path = bwt_path
        self._wm: Any = None
        self._wm_lock = threading.Lock()

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Iterable[Sequence[int] | np.ndarray], vocab_size: int, *, sa_sample: int = 32,
              progress: bool = False) -> FMIndex:
        """Index ``docs`` (token-id arrays, document ``i`` gets id ``i``); ids must be in ``[0, vocab_size)``."""
        arrays = [np.asarray(d).ravel() for d in docs]
        arrays = [a if a.size else a.astype(np.int64) for a in arrays]  # [] is float64 to numpy
        lengths = np.array([len(d) for d in arrays], dtype=np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls.from_flat(flat, lengths, vocab_size, sa_sample=sa_sample, progress=progress)

    @classmethod
    def from_flat(cls, tokens: np.ndarray, lengths: np.ndarray, vocab_size: int, *, sa_sample: int = 32,
                  progress: bool = False) -> FMIndex:
        """Index the concatenated ``tokens`` of documents of the given ``lengths`` (ValueError on bad input)."""
        tokens, lengths = np.asarray(tokens), np.asarray(lengths, dtype=np.int64)
        tokens = tokens if tokens.size else tokens.astype(np.int64)
        if tokens.ndim != 1 or (tokens.size and tokens.dtype.kind not in "iu"):
            raise ValueError("tokens must be a 1-D integer array")
        if sa_sample < 1 or vocab_size < 1:
            raise ValueError("sa_sample and vocab_size must be >= 1")
        if lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != tokens.size:
            raise ValueError("document lengths must be >= 0 and sum to the number of tokens")
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        n_docs, n_tok = len(lengths), tokens.size
        n_rows = n_tok + n_docs + 1
        with progress_bar(5, "FM-index", progress) as bar:
            present = np.flatnonzero(np.bincount(tokens, minlength=vocab_size)) if n_tok else np.zeros(0, np.int64)
            n_sym = len(present) + FIRST_SYM
            width = sym_width(n_sym)
            sdt = np.dtype(np.uint8 if width == 1 else np.uint16 if width == 2 else np.uint32)
            remap = np.zeros(vocab_size, sdt)
            remap[present] = np.arange(FIRST_SYM, n_sym)
            text = np.insert(remap[tokens], np.cumsum(lengths), sdt.type(SEP_SYM))  # T = d0 1 d1 1 ...
            del remap
            rev = np.empty(n_rows, sdt)
            rev[:-1] = text[::-1]
            rev[-1] = END_SYM
            del text
            counts = np.bincount(rev, minlength=n_sym)
            bar.update(1)
            sa = suffix_array(rev, width)
            bar.update(1)
            bwt = np.empty(n_rows, sdt)
            pdt = pos_dtype(n_rows)
            rows, pos = [], []
            for a in range(0, n_rows, _CHUNK):
                part = sa[a:a + _CHUNK]
                bwt[a:a + len(part)] = rev[part - 1]  # row of position 0 gets rev[-1] = END
                hit = part % sa_sample == 0
                rows.append((np.flatnonzero(hit) + a).astype(pdt))
                pos.append(part[hit].astype(pdt))
            del sa, rev
            bar.update(2)
            starts = np.zeros(n_docs + 1, pdt)
            starts[1:] = np.cumsum(lengths + 1)
            arrays = {"bwt": bwt if width < 3 else (bwt & 0xFFFF).astype(np.uint16),
                      "C": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                      "token_of_sym": present.astype(np.int32), "sample_rows": np.concatenate(rows),
                      "sample_pos": np.concatenate(pos), "doc_starts": starts}
            if width == 3:
                arrays["bwt_hi"] = (bwt >> 16).astype(np.uint8)
            bar.update(1)
        return cls(arrays, vocab_size, sa_sample)

    # -- persistence ----------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """JSON-able description of the arrays, for the manifest; ``load`` checks the files against it."""
        return {"format": FM_FORMAT, "text": "reversed", "vocab_size": self.vocab_size,
                "n_tokens": self.n_tokens, "n_docs": self.n_docs, "n_rows": self.n_rows,
                "n_symbols": len(self._C) - 1, "sa_sample": self.sa_sample, "n_samples": len(self._srows),
                "bwt_bits": 8 * sym_width(len(self._C) - 1), "pos_dtype": str(self._srows.dtype)}

    def save(self, directory: str | Path) -> list[str]:
        """Write the arrays as ``<name>.npy`` into ``directory`` (created); returns the file names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for name in _ARRAYS:
            if name in self._a:
                np.save(directory / f"{name}.npy", np.ascontiguousarray(self._a[name]), allow_pickle=False)
                names.append(f"{name}.npy")
        return names

    @classmethod
    def load(cls, directory: str | Path, params: dict[str, Any], *, mmap: bool = True,
             lazy: bool = False) -> FMIndex:
        """Open a saved index, checking every array against ``params`` (``IndexFormatError`` on mismatch).

        ``mmap`` memory-maps the arrays; the wavelet matrix is built now unless ``lazy``.
        """
        directory = Path(directory)
        try:
            if params.get("format") != FM_FORMAT:
                raise IndexFormatError(f"{directory}: FM-index format {params.get('format')!r}, expected {FM_FORMAT}")
            n_rows, n_docs, n_sym = int(params["n_rows"]), int(params["n_docs"]), int(params["n_symbols"])
            vocab, sample = int(params["vocab_size"]), int(params["sa_sample"])
            if min(vocab, sample, n_rows, n_sym - 1) < 1 or n_docs < 0:
                raise IndexFormatError(f"{directory}: impossible FM-index parameters {params}")
            width, pdt = sym_width(n_sym), pos_dtype(n_rows)
            expect = {"bwt": (np.uint8 if width == 1 else np.uint16, n_rows), "C": (np.int64, n_sym + 1),
                      "token_of_sym": (np.int32, n_sym - FIRST_SYM), "sample_rows": (pdt, params["n_samples"]),
                      "sample_pos": (pdt, params["n_samples"]), "doc_starts": (pdt, n_docs + 1)}
            if width == 3:
                expect["bwt_hi"] = (np.uint8, n_rows)
            if params["bwt_bits"] != 8 * width or params["pos_dtype"] != str(pdt) or \
                    params["n_tokens"] != n_rows - n_docs - 1 or params["n_samples"] != -(-n_rows // sample):
                raise IndexFormatError(f"{directory}: inconsistent FM-index parameters {params}")
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: bad FM-index parameters ({exc!r})") from None
        arrays = {name: _load_array(directory / f"{name}.npy", np.dtype(dt), int(n), mmap)
                  for name, (dt, n) in expect.items()}
        _check_contents(directory, arrays, n_rows, n_docs, vocab)
        index = cls(arrays, vocab, sample, bwt_path=directory / "bwt.npy" if mmap else None)
        if not lazy:
            index.warm()
        return index

    def warm(self) -> None:
        """Build the wavelet matrix now (otherwise it is built by the first query that needs it)."""
        _ = self.wm

    @property
    def wm(self) -> Any:
        """The ``wavelet_matrix.WaveletMatrix`` over the BWT symbols."""
        if self._wm is None:
            with self._wm_lock:
                if self._wm is None:
                    self._wm = self._build_wm()
        return self._wm

    def _build_wm(self) -> Any:
        from wavelet_matrix import WaveletMatrix

        # a private map of the file, dropped afterwards, so the pages read here leave this process's RSS
        src = np.load(self._bwt_path, mmap_mode="r") if self._bwt_path is not None else self._bwt
        vals = src if self._bwt_hi is None else src.astype(np.uint32) | (self._bwt_hi.astype(np.uint32) << 16)
        wm = WaveletMatrix(memoryview(np.ascontiguousarray(vals)))
        del src, vals
        _release_freed_memory()  # the constructor's temporaries (~4 bytes/token) would otherwise stay in RSS
        return wm

    def nbytes(self) -> int:
        """Bytes of the stored arrays (what the index takes on disk)."""
        return sum(int(a.nbytes) for a in self._a.values())

    # -- primitives -----------------------------------------------------------------------------------
    def doc_length(self, doc: int) -> int:
        """Number of tokens of document ``doc`` (IndexError when out of range)."""
        if not 0 <= doc < self.n_docs:
            raise IndexError(f"document {doc} not in [0, {self.n_docs})")
        return int(self._starts[doc + 1]) - int(self._starts[doc]) - 1

    def root(self) -> FMRange:
        """The range of the empty n-gram."""
        return (0, self.n_rows, 0)

    def extend(self, rng: FMRange, token: int) -> FMRange:
        """The range of the n-gram of ``rng`` followed by ``token`` (empty for unknown tokens): O(log σ)."""
        lo, hi, length = rng
        s = self._sym[token] if 0 <= token < self.vocab_size else -1
        if s < 0 or lo >= hi:
            return (0, 0, length + 1)
        c, rank = self._C_list[s], self.wm.rank
        if length == 0:  # root: the rows of the suffixes starting with s
            return (c, self._C_list[s + 1], 1)
        if hi - lo <= _TINY:  # one rank call: the new range's size is read off the BWT slice
            k = self._bwt_slice(lo, hi).tolist().count(s)
            if not k:
                return (0, 0, length + 1)
            new_lo = c + rank(s, lo)
            return (new_lo, new_lo + k, length + 1)
        return (c + rank(s, lo), c + rank(s, hi), length + 1)

    def count_range(self, rng: FMRange) -> int:
        """Occurrences of the n-gram of ``rng`` (the empty n-gram: ``n_tokens``)."""
        return self.n_tokens if rng[2] == 0 else max(rng[1] - rng[0], 0)

    def next_tokens_of_range(self, rng: FMRange) -> NextTokens:
        """Distinct tokens that follow the n-gram of ``rng``, ascending, with counts.

        They are the symbols of the contiguous BWT slice ``[lo, hi)``: counted in Python for tiny ranges,
        with ``np.unique`` (O(r log r)) or ``np.bincount`` (O(r + σ)) above.  This is 2-30x faster than the
        wavelet matrix's ``range_list``, which builds a Python dict per distinct value (see bench/README_fm.md).
        """
        lo, hi, length = rng
        if length == 0:
            return self._root_next[0].copy(), self._root_next[1].copy()
        if lo >= hi:
            return empty_next()
        syms = self._bwt_slice(lo, hi)
        if hi - lo <= _SMALL:
            counter = Counter(syms.tolist())
            keys = sorted(k for k in counter if k >= FIRST_SYM)
            if not keys:
                return empty_next()
            return self._tok[np.array(keys) - FIRST_SYM], np.array([counter[k] for k in keys], dtype=np.int64)
        if hi - lo < self.n_symbols:
            u, c = np.unique(syms, return_counts=True)
            keep = u >= FIRST_SYM
            return self._tok[u[keep].astype(np.int64) - FIRST_SYM], c[keep].astype(np.int64)
        counts = np.bincount(syms, minlength=self.n_symbols)[FIRST_SYM:]
        nz = np.flatnonzero(counts)
        return self._tok[nz], counts[nz].astype(np.int64)

    def locate_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[list[tuple[int, int]]]:
        """``locate_range`` of each range (``limit``: one for all, or one per range), in one vectorised walk.

        Cost: about ``sa_sample / 2`` LF steps (a ``rank`` call each) per located occurrence.
        """
        docs, offs, bounds = self._positions(rngs, limit)
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            d, o = docs[a:b], offs[a:b]
            order = np.lexsort((o, d))
            out.append(list(zip(d[order].tolist(), o[order].tolist())))
        return out

    def doc_counts_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[dict[int, int]]:
        """``{doc: occurrences}`` of each range, over the occurrences ``locate_ranges`` would return."""
        docs, _, bounds = self._positions(rngs, limit)
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            u, c = np.unique(docs[a:b], return_counts=True)
            out.append(dict(zip(u.tolist(), c.tolist())))
        return out

    # -- internals ------------------------------------------------------------------------------------
    def _positions(self, rngs: Sequence[FMRange], limit: Limit) -> tuple[np.ndarray, np.ndarray, list[int]]:
        limits = [limit] * len(rngs) if limit is None or isinstance(limit, int) else list(limit)
        rows, lens, bounds = [], [], [0]
        for (lo, hi, length), lim in zip(rngs, limits, strict=True):
            if length == 0:
                lo, length = self.n_docs + 1, 1  # token rows; each token is a 1-gram occurrence
            hi = hi if lim is None else min(hi, lo + max(lim, 0))
            n = max(hi - lo, 0)
            rows.append(np.arange(lo, lo + n, dtype=np.int64))
            lens.append(np.full(n, length, np.int64))
            bounds.append(bounds[-1] + n)
        if bounds[-1] == 0:
            z = np.zeros(0, np.int64)
            return z, z, bounds
        rev_pos = self._resolve(np.concatenate(rows))
        tpos = (self.n_rows - 1) - rev_pos - np.concatenate(lens)  # start in T of the (un-reversed) n-gram
        doc = np.searchsorted(self._starts, tpos.astype(self._starts.dtype), side="right") - 1
        return doc, tpos - self._starts[doc].astype(np.int64), bounds

    def _bwt_slice(self, lo: int, hi: int) -> np.ndarray:
        if self._bwt_hi is None:
            return self._bwt[lo:hi]
        return self._bwt[lo:hi].astype(np.int64) | (self._bwt_hi[lo:hi].astype(np.int64) << 16)

    def _bwt_at(self, rows: np.ndarray) -> np.ndarray:
        sym = self._bwt[rows].astype(np.int64)
        if self._bwt_hi is not None:
            sym |= self._bwt_hi[rows].astype(np.int64) << 16
        return sym

    def _resolve(self, rows: np.ndarray) -> np.ndarray:
        """Positions in the reversed text of the suffixes at ``rows``: LF-walks to the nearest sample."""
        out = np.empty(len(rows), np.int64)
        idx, cur = np.arange(len(rows)), rows
        srows, spos, last = self._srows, self._spos, len(self._srows) - 1
        rank = self.wm.rank
        for step in range(self.sa_sample):
            k = np.minimum(np.searchsorted(srows, cur.astype(srows.dtype)), last)
            hit = srows[k] == cur
            if hit.any():
                out[idx[hit]] = spos[k[hit]].astype(np.int64) + step
                miss = ~hit
                idx, cur = idx[miss], cur[miss]
                if not len(cur):
                    return out
            sym = self._bwt_at(cur)
            cur = self._C[sym] + np.fromiter(map(rank, sym.tolist(), cur.tolist()), np.int64, len(cur))
        raise IndexFormatError("FM-index locate walked past the sampling rate: corrupt sampled suffix array")


def _release_freed_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _load_array(path: Path, dtype: np.dtype, n: int, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise IndexFormatError(f"FM-index array missing: {path}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFormatError(f"FM-index array {path} is corrupt: {exc}") from None
    if arr.dtype != dtype or arr.shape != (n,):
        raise IndexFormatError(f"FM-index array {path} is {arr.dtype}{list(arr.shape)}, expected {dtype}[{n}]")
    return arr


def _check_contents(directory: Path, a: dict[str, np.ndarray], n_rows: int, n_docs: int, vocab: int) -> None:
    """Cheap consistency checks (O(σ + docs/…)): a mismatched or hand-edited array set fails here."""
    C, tok, starts = a["C"], np.asarray(a["token_of_sym"]), a["doc_starts"]
    problems = []
    if C[0] != 0 or C[1] != 1 or C[2] != n_docs + 1 or C[-1] != n_rows or (np.diff(C)[FIRST_SYM:] <= 0).any():
        problems.append("C")
    if len(tok) and (tok[0] < 0 or tok[-1] >= vocab or (np.diff(tok) <= 0).any()):
        problems.append("token_of_sym")
    if starts[0] != 0 or int(starts[-1]) != n_rows - 1 or (starts[1:] <= starts[:-1]).any():
        problems.append("doc_starts")
    if len(a["sample_rows"]) and int(a["sample_rows"][-1]) >= n_rows:
        problems.append("sample_rows")
    if problems:
        raise IndexFormatError(f"{directory}: FM-index arrays {problems} are inconsistent with the parameters")
