"""FM-index over token ids: every n-gram of the corpus, counted, extended and located in compressed space.

Layout.  Documents (units) are int arrays of token ids ``0..vocab_size-1``.  Token ids are remapped to
dense *symbols* ``2..n_symbols-1`` (only ids that occur get one, in id order, so the wavelet matrix has as
few bit levels as possible); symbol 1 is the document boundary and 0 a unique end marker.  With
``T = d0 1 d1 1 ... d_{k-1} 1`` the index is built over the **reversed** text ``R = reverse(T) + [0]``:
appending a token to the right of an n-gram is then one backward-search step, and the distinct tokens that
follow an n-gram are the distinct symbols of one contiguous BWT slice (its suffix-array range).  No query
symbol is a boundary, so an n-gram never matches across two documents.

Arrays (plain ``.npy``, no pickle, all memory-mapped on open: opening reads only the headers and the small
per-symbol arrays; nothing is rebuilt).  The BWT is held only as a wavelet matrix (``_wavelet``):
``wm_bits`` (uint64 ``[L, W]``, ``L = ceil(log2 n_symbols)`` bit planes), ``wm_ranks`` (rank directory, one
uint16 per 512 bits, two-level) and ``wm_zeros``; ``C`` (int64 cumulative symbol counts), ``token_of_sym`` (int32);
``sample_bits``/``sample_ranks`` (a bit vector marking the suffix-array rows whose text position is a multiple
of ``sa_sample``) and ``sample_pos`` (those positions divided by ``sa_sample``, in row order, bit-packed in
``sample_width = bit_length((n_rows - 1) // sa_sample)``-bit fields: ``_locate.pack``);
``doc_starts`` (start of each document in ``T``, plus ``len(T)``); ``hot_ranges``/``hot_offsets``/
``hot_sizes``/``hot_bytes``: the next-token lists of the 1-grams whose list is long, byte-coded (see ``_hot``).
Bytes per token for 16-bit symbols and ``sa_sample=20``: 2 (bit planes) + 0.0625 (ranks) + 0.129 (marks) +
``sample_width / 160`` (positions: 0.14 at 50M tokens, 0.15 at 200M) + documents + hot lists.  Format
``genret-fm/2`` (next-token lists as uint16 pairs, positions as plain integers) is read as it is.

Ranges.  ``FMRange = (lo, hi, length)``: suffix-array rows ``[lo, hi)`` of an n-gram of ``length`` tokens;
``(0, n_rows, 0)`` is the empty n-gram (every position); an n-gram that does not occur has ``lo == hi``.

Costs (compiled kernels; r = occurrences, k = distinct next tokens, L = bit levels): ``extend`` 2L
``rank1`` (none from the root); ``count``/``range_of`` one compiled call for the whole n-gram;
``next_tokens_of_range`` a walk of about ``k (L - log2 k + 2)`` wavelet nodes (2 ``rank1`` each), or a
precomputed list for long ones; ``locate``/``doc_counts`` up to ``sa_sample - 1`` LF steps (L ``rank1``
each, about ``sa_sample / 2`` on average) per returned occurrence, all occurrences of a call in lock step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core import IndexFormatError, progress_bar
from . import _locate as loc
from . import _wavelet as wv
from ._files import FM_FORMAT, check_contents, expected_arrays, load_array
from ._hot import decode_list, hot_lists, v2_counts
from ._queries import SA_SAMPLE, FMQueries, FMRange, Limit, NextTokens, empty_next
from ._suffix_array import END_SYM, FIRST_SYM, SEP_SYM, pos_dtype, suffix_array, sym_width

_CHUNK = 1 << 22


class FMIndex(FMQueries):
    """A succinct n-gram index over the documents of one shard (see the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], vocab_size: int, sa_sample: int,
                 sample_width: int = 0) -> None:
        """Wrap validated arrays (use ``build``/``from_flat``/``load``); ``sample_width`` 0: plain positions."""
        self.vocab_size, self.sa_sample, self.sample_width = int(vocab_size), int(sa_sample), int(sample_width)
        self._a = arrays
        self._bits, self._ranks = arrays["wm_bits"], arrays["wm_ranks"]
        self._zeros = np.ascontiguousarray(arrays["wm_zeros"], dtype=np.int64)
        self._C = np.ascontiguousarray(arrays["C"], dtype=np.int64)
        self._tok = np.asarray(arrays["token_of_sym"], dtype=np.int64)
        sym = np.full(self.vocab_size, -1, np.int32)  # numpy, not lists: a few bytes per vocabulary entry
        sym[self._tok] = np.arange(FIRST_SYM, FIRST_SYM + len(self._tok))
        self._sym = sym
        self._mbits, self._mranks, self._spos = arrays["sample_bits"], arrays["sample_ranks"], arrays["sample_pos"]
        self._starts = arrays["doc_starts"]
        self.n_rows = int(self._C[-1])
        self.n_docs = len(self._starts) - 1
        self.n_tokens = self.n_rows - self.n_docs - 1
        self.n_symbols = len(self._C) - 1
        self.n_levels = self._bits.shape[0]
        counts = np.diff(self._C)
        # bottom position of each symbol's block in the wavelet matrix -> LF(i) = bottom(i) + delta[sym]
        self._delta = self._C[:-1] - wv.bottom_starts(counts, self.n_levels)
        self._aux = wv.fm_aux(self._zeros, self._delta, self._C)
        self._root_next = (self._tok.copy(), counts[FIRST_SYM:].astype(np.int64))
        hot = arrays["hot_ranges"]
        self._hot_lo = np.ascontiguousarray(hot[:, 0]) if len(hot) else np.zeros(0, np.int64)
        sizes = hot[:, 1].astype(np.int64) - hot[:, 0].astype(np.int64)
        self._hot_min = int(sizes.min()) if len(hot) else self.n_rows + 1
        self._no_syms = np.zeros(0, np.int64)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Iterable[Sequence[int] | np.ndarray], vocab_size: int, *, sa_sample: int = SA_SAMPLE,
              progress: bool = False) -> FMIndex:
        """Index ``docs`` (token-id arrays, document ``i`` gets id ``i``); ids must be in ``[0, vocab_size)``."""
        arrays = [np.asarray(d).ravel() for d in docs]
        arrays = [a if a.size else a.astype(np.int64) for a in arrays]  # [] is float64 to numpy
        lengths = np.array([len(d) for d in arrays], dtype=np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls.from_flat(flat, lengths, vocab_size, sa_sample=sa_sample, progress=progress)

    @classmethod
    def from_flat(cls, tokens: np.ndarray, lengths: np.ndarray, vocab_size: int, *, sa_sample: int = SA_SAMPLE,
                  progress: bool = False) -> FMIndex:
        """Index the concatenated ``tokens`` of documents of the given ``lengths`` (ValueError on bad input).

        Peak memory: the suffix-array phase, about 15 bytes/token with 16-bit symbols (input 2, reversed text
        2, byte text 2, byte-level suffix array 8 below 2**31 bytes); the wavelet matrix is built afterwards
        from the BWT (BWT 2 + scratch 2 + bit planes 2).
        """
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
        with progress_bar(6, "FM-index", progress) as bar:
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
                pos.append((part[hit] // sa_sample).astype(pdt))
            del sa, rev, part
            bar.update(1)
            sample_rows = np.concatenate(rows)
            del rows
            sample_bits, sample_ranks = wv.build_marks(n_rows, sample_rows)
            del sample_rows
            n_lev = wv.n_levels(n_sym)
            bits, ranks, zeros = wv.build_wavelet(bwt, n_lev)  # consumes bwt as scratch
            del bwt
            bar.update(2)
            starts = np.zeros(n_docs + 1, pdt)
            starts[1:] = np.cumsum(lengths + 1)
            C = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            arrays = {"wm_bits": bits, "wm_ranks": ranks, "wm_zeros": zeros, "C": C,
                      "token_of_sym": present.astype(np.int32), "sample_bits": sample_bits,
                      "sample_ranks": sample_ranks, "doc_starts": starts}
            width = loc.pack_width((n_rows - 1) // sa_sample)
            arrays["sample_pos"] = loc.pack(np.concatenate(pos), width)
            del pos
            arrays.update(hot_lists(bits, ranks, zeros, C, pdt))
            bar.update(1)
        return cls(arrays, vocab_size, sa_sample, width)

    # -- persistence ----------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """JSON-able description of the arrays, for the manifest; ``load`` checks the files against it."""
        if "hot_syms" in self._a:  # a genret-fm/2 index, opened as it is
            hot = {"format": "genret-fm/2", "n_hot_entries": len(self._a["hot_syms"]),
                   "n_hot_big": len(self._a["hot_big"])}
        else:
            hot = {"format": FM_FORMAT, "n_hot_bytes": len(self._a["hot_bytes"]), "sample_width": self.sample_width}
        return {"format": hot.pop("format"), "text": "reversed", "vocab_size": self.vocab_size,
                "n_tokens": self.n_tokens, "n_docs": self.n_docs, "n_rows": self.n_rows,
                "n_symbols": self.n_symbols, "sa_sample": self.sa_sample,
                "n_samples": -(-self.n_rows // self.sa_sample), "n_levels": self.n_levels,
                "pos_dtype": str(self._starts.dtype),
                "n_hot": len(self._a["hot_ranges"]), **hot}

    def save(self, directory: str | Path) -> list[str]:
        """Write the arrays as ``<name>.npy`` into ``directory`` (created); returns the file names."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for name in self._a:
            np.save(directory / f"{name}.npy", np.ascontiguousarray(self._a[name]), allow_pickle=False)
            names.append(f"{name}.npy")
        return names

    @classmethod
    def load(cls, directory: str | Path, params: dict[str, Any], *, mmap: bool = True,
             lazy: bool = False) -> FMIndex:
        """Open a saved index, checking every array against ``params`` (``IndexFormatError`` on mismatch).

        ``mmap`` memory-maps the arrays (O(1) in the index size: nothing is read but headers and per-symbol
        arrays); without it they are read into memory.  ``lazy`` is accepted for compatibility (no effect).
        """
        directory = Path(directory)
        expect, vocab, sample, width = expected_arrays(directory, params)
        arrays = {name: load_array(directory / f"{name}.npy", np.dtype(dt), shape, mmap)
                  for name, (dt, shape) in expect.items()}
        check_contents(directory, arrays, int(params["n_rows"]), int(params["n_docs"]), vocab,
                        int(params["n_samples"]))
        return cls(arrays, vocab, sample, width)

    def warm(self) -> None:
        """Read every page of the arrays once (page cache), so that the first queries do not wait on disk."""
        for a in self._a.values():
            if a.size:
                np.add.reduce(a.reshape(-1).view(np.uint8)[::4096])

    def nbytes(self) -> int:
        """Bytes of the stored arrays (what the index takes on disk, and in RAM when all of it is touched)."""
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
        """The range of the n-gram of ``rng`` followed by ``token`` (empty for unknown tokens): 2L ``rank1``."""
        lo, hi, length = rng
        s = int(self._sym[token]) if 0 <= token < self.vocab_size else -1
        if s < 0 or lo >= hi:
            return (0, 0, length + 1)
        if length == 0:  # root: the rows of the suffixes starting with s
            return (int(self._C[s]), int(self._C[s + 1]), 1)
        a, b = wv.wm_range(self._bits, self._ranks, self._zeros, s, lo, hi)
        if a >= b:
            return (0, 0, length + 1)
        d = int(self._delta[s])
        return (a + d, b + d, length + 1)

    def _syms(self, ngram: Sequence[int]) -> np.ndarray:
        sym, vocab = self._sym, self.vocab_size
        return np.array([sym[t] if 0 <= t < vocab else -1 for t in map(int, ngram)], dtype=np.int64)

    def range_of(self, ngram: Sequence[int]) -> FMRange:
        """The range of ``ngram``: one compiled backward search over all its tokens."""
        if not len(ngram):
            return self.root()
        lo, hi = wv.fm_range(self._bits, self._ranks, self._aux, self._syms(ngram), 0, self.n_rows, 0)
        return (int(lo), int(hi), len(ngram))

    def next_tokens(self, prefix: Sequence[int]) -> NextTokens:
        """``FMQueries.next_tokens`` in one compiled call (backward search + the distinct next symbols)."""
        if not len(prefix):
            return self.next_tokens_of_range(self.root())
        return self._next(self._syms(prefix), 0, self.n_rows, 0)

    def count_range(self, rng: FMRange) -> int:
        """Occurrences of the n-gram of ``rng`` (the empty n-gram: ``n_tokens``)."""
        return self.n_tokens if rng[2] == 0 else max(rng[1] - rng[0], 0)

    def next_tokens_of_range(self, rng: FMRange) -> NextTokens:
        """Distinct tokens that follow the n-gram of ``rng``, ascending, with counts.

        They are the distinct symbols of the BWT slice ``[lo, hi)``: a walk down the wavelet matrix that
        visits only the symbols present (about ``k (L - log2 k + 2)`` nodes for ``k`` of them), or the list
        precomputed at build time for the long ones (the root's comes from ``C``).
        """
        lo, hi, length = rng
        if length == 0:
            return self._root_next[0].copy(), self._root_next[1].copy()
        return self._next(self._no_syms, lo, hi, length)

    def _next(self, syms: np.ndarray, lo: int, hi: int, length: int) -> NextTokens:
        lo, hi, out = wv.fm_next(self._bits, self._ranks, self._aux, syms, lo, hi, length, FIRST_SYM, self._hot_min)
        if lo >= hi:
            return empty_next()
        if hi - lo >= self._hot_min:
            found = self._hot(lo, hi)
            if found is not None:
                return found
            out = wv.wm_distinct(self._bits, self._ranks, self._zeros, lo, hi, FIRST_SYM)
        return self._tok[out[0] - FIRST_SYM], out[1].copy()

    def _hot(self, lo: int, hi: int) -> NextTokens | None:
        j = int(np.searchsorted(self._hot_lo, lo))
        ranges = self._a["hot_ranges"]
        if j < len(ranges) and int(ranges[j, 0]) == lo and int(ranges[j, 1]) == hi:
            a, b = int(self._a["hot_offsets"][j]), int(self._a["hot_offsets"][j + 1])
            if "hot_syms" in self._a:  # genret-fm/2
                syms = self._a["hot_syms"][a:b].astype(np.int64)
                return self._tok[syms - FIRST_SYM], v2_counts(self._a["hot_counts"][a:b], self._a["hot_big"], a)
            try:
                return decode_list(self._a["hot_bytes"], a, b, int(self._a["hot_sizes"][j]), self._tok, FIRST_SYM)
            except ValueError as exc:
                raise IndexFormatError(str(exc)) from None
        return None

    def locate_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[list[tuple[int, int]]]:
        """``locate_range`` of each range (``limit``: one for all, or one per range), in one compiled walk.

        Cost: about ``sa_sample / 2`` LF steps (L ``rank1`` each) per located occurrence.
        """
        docs, offs, bounds = self._positions(rngs, limit)
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            d, o = docs[a:b], offs[a:b]
            if b - a <= 32:  # a few: sorting the tuples beats numpy's per-call cost
                out.append(sorted(zip(d.tolist(), o.tolist())))
            else:
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
    def bwt_symbols(self, rows: np.ndarray) -> np.ndarray:
        """BWT symbols at ``rows`` (decoded from the wavelet matrix; for tests and tools)."""
        return wv.wm_access_many(self._bits, self._ranks, self._zeros, np.asarray(rows, dtype=np.int64))

    def _positions(self, rngs: Sequence[FMRange], limit: Limit) -> tuple[np.ndarray, np.ndarray, list[int]]:
        limits = [limit] * len(rngs) if limit is None or isinstance(limit, int) else list(limit)
        spans, bounds = [], [0]
        for (lo, hi, length), lim in zip(rngs, limits, strict=True):
            if length == 0:
                lo, length = self.n_docs + 1, 1  # token rows; each token is a 1-gram occurrence
            hi = hi if lim is None else min(hi, lo + max(lim, 0))
            n = max(hi - lo, 0)
            spans.append((lo, n, length))
            bounds.append(bounds[-1] + n)
        if bounds[-1] == 0:
            z = np.zeros(0, np.int64)
            return z, z, bounds
        try:
            doc, off = loc.fm_locate_spans(self._bits, self._ranks, self._aux, self._mbits, self._mranks, self._spos,
                                          self.sample_width, np.array(spans, dtype=np.int64).reshape(-1, 3),
                                          self.sa_sample, self._starts)
        except ValueError as exc:
            raise IndexFormatError(str(exc)) from None
        return doc, off, bounds
