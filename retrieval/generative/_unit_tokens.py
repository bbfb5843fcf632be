"""Token ids of units, titles and texts exactly as the index's FM-index holds them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genret.indexing import Component, FMParams
from genret.indexing.fm import encode_texts, load_fm_tokenizer


class UnitEncoder:
    """``[title_start] title [title_end] text`` with the tokenizer saved in the index (see ``indexing.fm._build``)."""

    def __init__(self, tokenizer, params: FMParams) -> None:
        self.tokenizer = tokenizer
        self.title_start = params.title_start_id
        self.title_end = params.title_end_id
        self.lowercase = params.lowercase
        self._described: dict[tuple[int, ...], str] = {}  # describe's answers (keys recur within and across queries)

    @classmethod
    def from_component(cls, index_dir: str | Path, component: Component) -> UnitEncoder:
        return cls(load_fm_tokenizer(index_dir, component), component.typed_params(FMParams))

    def texts(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, list(texts), lowercase=self.lowercase)

    def text_tokens(self, text: str) -> list[int]:
        return self.texts([text])[0]

    def title_tokens(self, title: str) -> list[int]:
        """A complete title identifier: start marker, title, end marker."""
        return [self.title_start, *self.text_tokens(title), self.title_end]

    def encode(self, units: Sequence[tuple[str, str]]) -> list[list[int]]:
        """Token ids of ``(title, text)`` units, in the index's layout."""
        if not units:
            return []
        ids = self.texts([t for t, _ in units] + [x for _, x in units])
        n = len(units)
        return [[self.title_start, *ids[i], self.title_end, *ids[n + i]] for i in range(n)]

    def describe(self, ngram: Sequence[int]) -> str:
        """Readable form of a key: titles as ``title: …`` (complete or partial), body n-grams as text (cached)."""
        key = tuple(ngram)
        text = self._described.get(key)
        if text is None:
            if len(self._described) >= 200_000:
                self._described.clear()
            text = self._described[key] = self._describe(list(key))
        return text

    def _describe(self, ngram: list[int]) -> str:
        if ngram and ngram[0] == self.title_start:
            body = [t for t in ngram[1:] if t != self.title_end]
            return "title: " + self.tokenizer.decode(body).strip() + ("" if ngram[-1] == self.title_end else "…")
        return self.tokenizer.decode(ngram).strip()
