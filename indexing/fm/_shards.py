"""The sharded FM-index: contiguous document groups indexed apart, behind the ``FMQueries`` API.

Shard ``i`` holds global documents ``[offset_i, offset_i + n_docs_i)``.  A query runs on every shard: counts
add up, next-token sets are merged (counts added), and located document ids get the shard's offset.  Shards
are built independently (in parallel processes or on other machines) and each is memory-mapped on load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core import IndexFormatError
from ._queries import SA_SAMPLE, FMQueries, FMRange, Limit, NextTokens, merge_next_tokens

if TYPE_CHECKING:
    from ._index import FMIndex

SHARDED_FORMAT = "genret-fm-sharded/1"

def shard_dir(i: int) -> str:
    """Folder name of shard ``i`` inside a sharded index directory."""
    return f"shard-{i:03d}"


def split_balanced(lengths: Sequence[int] | np.ndarray, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous document ranges ``[(start, stop), ...]`` with about equal token counts (some may be empty)."""
    if n_shards < 1:
        raise ValueError("n_shards must be >= 1")
    cum = np.cumsum(np.asarray(lengths, dtype=np.int64) + 1)  # +1: each document also adds a boundary
    total = int(cum[-1]) if len(cum) else 0
    cuts = [0] + [int(np.searchsorted(cum, total * k / n_shards, side="right")) for k in range(1, n_shards)]
    cuts.append(len(cum))
    return list(zip(cuts[:-1], cuts[1:]))


class ShardedFMIndex(FMQueries):
    """Several ``FMIndex`` shards behind the ``FMIndex`` query API, with global document ids.

    A range is the tuple of the shards' ranges; every query costs the sum of the shards' costs.
    """

    def __init__(self, shards: Sequence[FMIndex]) -> None:
        if not shards:
            raise ValueError("a sharded FM-index needs at least one shard")
        vocab = {s.vocab_size for s in shards}
        if len(vocab) != 1:
            raise ValueError(f"shards have different vocabulary sizes {sorted(vocab)}")
        self.shards = list(shards)
        self.vocab_size = vocab.pop()
        sizes = [s.n_docs for s in self.shards]
        self.doc_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_docs = int(self.doc_offsets[-1])
        self.n_tokens = sum(s.n_tokens for s in self.shards)
        self._root_next: NextTokens | None = None

    @classmethod
    def build(cls, docs: Sequence[Sequence[int] | np.ndarray], vocab_size: int, n_shards: int, *,
              sa_sample: int = SA_SAMPLE, progress: bool = False) -> ShardedFMIndex:
        """Split ``docs`` into ``n_shards`` contiguous, token-balanced groups and index each one."""
        from ._index import FMIndex  # here, not at the top: numba loads only when an index is built or opened

        spans = split_balanced([len(d) for d in docs], n_shards)
        return cls([FMIndex.build(docs[a:b], vocab_size, sa_sample=sa_sample, progress=progress) for a, b in spans])

    # -- persistence ----------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """JSON-able description: totals and each shard's ``FMIndex.params()`` (with its folder)."""
        return {"format": SHARDED_FORMAT, "vocab_size": self.vocab_size, "n_docs": self.n_docs,
                "n_tokens": self.n_tokens,
                "shards": [{"dir": shard_dir(i), **s.params()} for i, s in enumerate(self.shards)]}

    def save(self, directory: str | Path) -> list[str]:
        """Save shard ``i`` into ``directory/shard-00i``; returns the file paths relative to ``directory``."""
        names = []
        for i, s in enumerate(self.shards):
            names += [f"{shard_dir(i)}/{n}" for n in s.save(Path(directory) / shard_dir(i))]
        return names

    @classmethod
    def load(cls, directory: str | Path, params: dict[str, Any], *, mmap: bool = True,
             lazy: bool = False) -> ShardedFMIndex:
        """Open every shard listed in ``params`` (``IndexFormatError`` when anything disagrees)."""
        from ._index import FMIndex

        directory = Path(directory)
        if params.get("format") != SHARDED_FORMAT or not isinstance(params.get("shards"), list) \
                or not params["shards"]:
            raise IndexFormatError(f"{directory}: not a sharded FM-index description ({params.get('format')!r})")
        shards = []
        for p in params["shards"]:
            sub = p.get("dir") if isinstance(p, dict) else None
            if not isinstance(sub, str) or Path(sub).name != sub or sub in (".", ".."):
                raise IndexFormatError(f"{directory}: bad shard folder {sub!r}")
            shards.append(FMIndex.load(directory / sub, p, mmap=mmap, lazy=lazy))
        try:
            index = cls(shards)
        except ValueError as exc:
            raise IndexFormatError(f"{directory}: {exc}") from None
        if (index.vocab_size, index.n_docs, index.n_tokens) != \
                (params.get("vocab_size"), params.get("n_docs"), params.get("n_tokens")):
            raise IndexFormatError(f"{directory}: shard totals do not match the recorded vocab/docs/tokens")
        return index

    def warm(self) -> None:
        """Read every shard's pages once (see ``FMIndex.warm``)."""
        for s in self.shards:
            s.warm()

    def nbytes(self) -> int:
        """Bytes of all shards' stored arrays."""
        return sum(s.nbytes() for s in self.shards)

    # -- primitives -----------------------------------------------------------------------------------
    def doc_length(self, doc: int) -> int:
        """Number of tokens of global document ``doc`` (IndexError when out of range)."""
        if not 0 <= doc < self.n_docs:
            raise IndexError(f"document {doc} not in [0, {self.n_docs})")
        i = int(np.searchsorted(self.doc_offsets, doc, side="right")) - 1
        return self.shards[i].doc_length(doc - int(self.doc_offsets[i]))

    def root(self) -> FMRange:
        """The range of the empty n-gram in every shard."""
        return tuple(s.root() for s in self.shards)

    def range_of(self, ngram: Sequence[int]) -> FMRange:
        """Every shard's range of ``ngram`` (S compiled backward searches)."""
        return tuple(s.range_of(ngram) for s in self.shards)

    def extend(self, rng: FMRange, token: int) -> FMRange:
        """Every shard's range extended by ``token`` (S times ``FMIndex.extend``)."""
        return tuple(s.extend(r, token) for s, r in zip(self.shards, rng, strict=True))

    def count_range(self, rng: FMRange) -> int:
        """Occurrences summed over the shards."""
        return sum(s.count_range(r) for s, r in zip(self.shards, rng, strict=True))

    def next_tokens_of_range(self, rng: FMRange) -> NextTokens:
        """Union of the shards' next tokens (ascending), counts added: S shard calls and a merge."""
        if all(r[2] == 0 for r in rng):  # the root: every token's corpus frequency, merged once
            if self._root_next is None:
                self._root_next = merge_next_tokens([s.next_tokens_of_range(r) for s, r in zip(self.shards, rng)])
            return self._root_next[0].copy(), self._root_next[1].copy()
        return merge_next_tokens([s.next_tokens_of_range(r) for s, r in zip(self.shards, rng, strict=True)])

    def locate_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[list[tuple[int, int]]]:
        """Sorted global ``(doc, offset)`` per range; ``limit`` is global, filled from shard 0 onwards."""
        # shards hold increasing document ids, so concatenating sorted parts keeps the result sorted
        return self._per_shard(rngs, limit, "locate_ranges", _shift_pairs, list.__add__, list)

    def doc_counts_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[dict[int, int]]:
        """Global ``{doc: occurrences}`` per range, over the occurrences ``locate_ranges`` returns."""
        return self._per_shard(rngs, limit, "doc_counts_ranges", _shift_keys, _merge_dicts, dict)

    def _per_shard(self, rngs: Sequence[FMRange], limit: Limit, method: str, shift: Any, merge: Any,
                   empty: Any) -> list[Any]:
        limits = [limit] * len(rngs) if limit is None or isinstance(limit, int) else list(limit)
        results = [empty() for _ in rngs]
        found = [0] * len(rngs)
        for i, shard in enumerate(self.shards):
            mine = [r[i] for r in rngs]
            left = [None if lim is None else max(lim - f, 0) for lim, f in zip(limits, found, strict=True)]
            if all(x == 0 for x in left):
                break
            offset = int(self.doc_offsets[i])
            for j, part in enumerate(getattr(shard, method)(mine, left)):
                found[j] += len(part) if isinstance(part, list) else sum(part.values())
                results[j] = merge(results[j], shift(part, offset))
        return results


def _shift_pairs(pairs: list[tuple[int, int]], offset: int) -> list[tuple[int, int]]:
    return [(d + offset, o) for d, o in pairs] if offset else pairs


def _shift_keys(counts: dict[int, int], offset: int) -> dict[int, int]:
    return {d + offset: c for d, c in counts.items()} if offset else counts


def _merge_dicts(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {**a, **b}  # shards hold disjoint documents


def load_any(directory: str | Path, params: dict[str, Any], *, mmap: bool = True,
             lazy: bool = False) -> FMIndex | ShardedFMIndex:
    """Open a sharded index directory; a single shard comes back as a plain ``FMIndex``."""
    index = ShardedFMIndex.load(directory, params, mmap=mmap, lazy=lazy)
    return index.shards[0] if len(index.shards) == 1 else index

