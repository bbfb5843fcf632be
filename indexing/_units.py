"""Retrieval units cut from pages, each with exact KILT provenance.

A unit covers the text from ``(start_paragraph, start_char)`` to ``(end_paragraph, end_char)``
(end exclusive, offsets into the raw paragraph strings, paragraphs numbered from 1 as in KILT).
Three splitters: whole paragraphs, fixed word windows (DPR-style, may span paragraphs) and
sentences (rule-based, no model download).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._corpus import Page

UnitKind = Literal["paragraph", "window", "sentence"]


class UnitConfig(BaseModel):
    """How pages are cut into retrieval units."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: UnitKind = "paragraph"
    window_words: int = Field(100, ge=1, description="words per window (kind=window)")
    stride: int | None = Field(None, ge=1, description="words between window starts; default = window_words")

    @model_validator(mode="after")
    def _check(self) -> UnitConfig:
        if self.stride is not None and self.stride > self.window_words:
            raise ValueError("stride larger than window_words would leave words out of every unit")
        return self

    def params(self) -> dict:
        if self.kind == "window":
            return {"window_words": self.window_words, "stride": self.stride or self.window_words}
        return {}


@dataclass(frozen=True, slots=True)
class Unit:
    """A span of a page: the thing that is indexed and retrieved."""

    page_id: str
    title: str
    start_paragraph: int
    start_char: int
    end_paragraph: int
    end_char: int
    text: str


_WORD = re.compile(r"\S+")
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by space and a capital,
# digit, quote or bracket.
_SENT_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9])")
_ABBREV = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e cf al fig no vol ed eds inc ltd co corp approx dept est "
    "jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k".split()
)


def _strip_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace trimmed, empty ones dropped)."""
    spans = []
    start = 0
    for m in _SENT_END.finditer(text):
        word_start = text.rfind(" ", start, m.start()) + 1
        word = text[max(word_start, start):m.start()].lower().lstrip("(\"'")
        if word in _ABBREV or (len(word) == 1 and word.isalpha()):
            continue  # an abbreviation or an initial, not a sentence end
        s, e = _strip_bounds(text, start, m.end())
        if e > s:
            spans.append((s, e))
        start = m.end()
    s, e = _strip_bounds(text, start, len(text))
    if e > s:
        spans.append((s, e))
    return spans


def _paragraph_units(page: Page) -> Iterator[Unit]:
    for pid, para in enumerate(page.paragraphs, start=1):
        s, e = _strip_bounds(para, 0, len(para))
        if e > s:
            yield Unit(page.page_id, page.title, pid, s, pid, e, para[s:e])


def _sentence_units(page: Page) -> Iterator[Unit]:
    for pid, para in enumerate(page.paragraphs, start=1):
        for s, e in sentence_spans(para):
            yield Unit(page.page_id, page.title, pid, s, pid, e, para[s:e])


def _window_units(page: Page, size: int, stride: int) -> Iterator[Unit]:
    words = [(pid, m.start(), m.end())
             for pid, para in enumerate(page.paragraphs, start=1) for m in _WORD.finditer(para)]
    if not words:
        return
    start = 0
    while True:
        chunk = words[start:start + size]
        pieces, cur_pid, cur_s, cur_e = [], chunk[0][0], chunk[0][1], chunk[0][2]
        for pid, s, e in chunk[1:]:
            if pid != cur_pid:
                pieces.append(page.paragraphs[cur_pid - 1][cur_s:cur_e])
                cur_pid, cur_s = pid, s
            cur_e = e
        pieces.append(page.paragraphs[cur_pid - 1][cur_s:cur_e])
        first, last = chunk[0], chunk[-1]
        yield Unit(page.page_id, page.title, first[0], first[1], last[0], last[2], "\n".join(pieces))
        if start + size >= len(words):
            return
        start += stride


def split_page(page: Page, config: UnitConfig) -> Iterator[Unit]:
    """Cut one page into units of the configured kind, in document order."""
    if config.kind == "paragraph":
        return _paragraph_units(page)
    if config.kind == "sentence":
        return _sentence_units(page)
    return _window_units(page, config.window_words, config.stride or config.window_words)
