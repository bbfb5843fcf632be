"""``FMQueries``: the FM-index query API that ``FMIndex`` and ``ShardedFMIndex`` share (n-grams of token ids)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np

FMRange = tuple  # (lo, hi, length) for one shard; a tuple of those for a sharded index
NextTokens = tuple[np.ndarray, np.ndarray]
Limit = int | None | Sequence[int | None]
SA_SAMPLE = 20  # the default suffix-array sampling rate: about sa_sample / 2 LF steps a located occurrence


def empty_next() -> NextTokens:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def merge_next_tokens(parts: list[NextTokens]) -> NextTokens:
    """The next tokens of one n-gram over several shards: the union of the shards' tokens (sorted), counts added."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return empty_next()
    if len(parts) == 1:
        return parts[0]
    tokens, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    counts = np.zeros(len(tokens), np.int64)
    np.add.at(counts, inverse, np.concatenate([p[1] for p in parts]))
    return tokens, counts


class FMQueries(ABC):
    """The query API shared by ``FMIndex`` and ``ShardedFMIndex``; n-grams are sequences of token ids.

    Token ids outside ``[0, vocab_size)`` or absent from the corpus simply do not occur (no exception).
    """

    vocab_size: int
    n_docs: int
    n_tokens: int

    @abstractmethod
    def root(self) -> FMRange: ...
    @abstractmethod
    def extend(self, rng: FMRange, token: int) -> FMRange: ...
    @abstractmethod
    def count_range(self, rng: FMRange) -> int: ...
    @abstractmethod
    def next_tokens_of_range(self, rng: FMRange) -> NextTokens: ...
    @abstractmethod
    def locate_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[list[tuple[int, int]]]: ...
    @abstractmethod
    def doc_counts_ranges(self, rngs: Sequence[FMRange], limit: Limit = None) -> list[dict[int, int]]: ...
    @abstractmethod
    def doc_length(self, doc: int) -> int: ...

    def range_of(self, ngram: Sequence[int]) -> FMRange:
        """The range of ``ngram``, by ``len(ngram)`` calls of ``extend`` from ``root()``."""
        rng = self.root()
        for t in ngram:
            rng = self.extend(rng, int(t))
        return rng

    def count(self, ngram: Sequence[int]) -> int:
        """Occurrences of ``ngram`` in the corpus; the empty n-gram counts every token (boundaries excluded)."""
        return self.count_range(self.range_of(ngram))

    def count_many(self, ngrams: Iterable[Sequence[int]]) -> np.ndarray:
        """``count`` of each n-gram, as an int64 array."""
        return np.array([self.count(g) for g in ngrams], dtype=np.int64)

    def next_tokens(self, prefix: Sequence[int]) -> NextTokens:
        """``(token_ids, counts)``: distinct tokens following ``prefix`` in some document, ascending, with
        how often; empty arrays if ``prefix`` does not occur; the empty prefix gives every token's frequency."""
        return self.next_tokens_of_range(self.range_of(prefix))

    def next_tokens_many(self, prefixes: Iterable[Sequence[int]]) -> list[NextTokens]:
        """``next_tokens`` of each prefix."""
        return [self.next_tokens(p) for p in prefixes]

    def locate_range(self, rng: FMRange, limit: int | None = None) -> list[tuple[int, int]]:
        """Sorted ``(doc, offset)`` of the occurrences of the n-gram of ``rng`` (see ``locate``)."""
        return self.locate_ranges([rng], limit)[0]

    def locate(self, ngram: Sequence[int], limit: int | None = None) -> list[tuple[int, int]]:
        """Sorted ``(doc, token offset)`` of the occurrences of ``ngram``; with ``limit``, of at most that
        many of them (the first rows of its suffix-array range: deterministic, not the smallest positions)."""
        return self.locate_ranges([self.range_of(ngram)], limit)[0]

    def locate_many(self, ngrams: Iterable[Sequence[int]], limit: int | None = None) -> list[list[tuple[int, int]]]:
        """``locate`` of each n-gram (``limit`` applies to each)."""
        return self.locate_ranges([self.range_of(g) for g in ngrams], limit)

    def doc_counts(self, ngram: Sequence[int], limit: int | None = None) -> dict[int, int]:
        """``{doc: occurrences}`` of ``ngram`` (over the same occurrences as ``locate(ngram, limit)``)."""
        return self.doc_counts_ranges([self.range_of(ngram)], limit)[0]

    def doc_counts_many(self, ngrams: Iterable[Sequence[int]], limit: int | None = None) -> list[dict[int, int]]:
        """``doc_counts`` of each n-gram."""
        return self.doc_counts_ranges([self.range_of(g) for g in ngrams], limit)
