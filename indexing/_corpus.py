"""Streaming corpus readers: JSONL ``{id, title, text}`` and the KILT knowledge-source format.

Both formats yield :class:`Page` records whose paragraphs are numbered from 1, as in KILT
(paragraph 0 is the title).  Paragraph strings are kept exactly as given, so character offsets
into them stay valid (KILT provenance points into these strings).  Files may be gzip-compressed
(``.gz``).  Records are read one line at a time: memory does not grow with the corpus.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import InputError

_BLANK_LINE = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the corpus; ``paragraphs[i]`` is KILT paragraph ``i + 1``."""

    page_id: str
    title: str
    paragraphs: tuple[str, ...]
    source: str = ""
    line: int = 0


@dataclass(slots=True)
class ReadStats:
    """What a read saw: pages yielded, records skipped (with ``skip_bad``) and their first errors."""

    pages: int = 0
    paragraphs: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def record_skip(self, err: InputError, keep: int = 20) -> None:
        self.skipped += 1
        if len(self.errors) < keep:
            self.errors.append(str(err))


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a UTF-8 text file, transparently decompressing ``.gz``."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", path=str(p))
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, encoding="utf-8")


def _text_field(value: object, path: str, line: int, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=name)
    return value


def _id_field(value: object, path: str, line: int, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string or integer id, got {type(value).__name__}",
                         path=path, line=line, field=name)
    text = str(value).strip()
    if not text:
        raise InputError("empty id", path=path, line=line, field=name)
    return text


def _paragraph_list(value: object, path: str, line: int, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(f"expected a list of strings, got {type(value).__name__}",
                         path=path, line=line, field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"item {i} is {type(item).__name__}, expected a string",
                             path=path, line=line, field=name)
    return tuple(value)


def _parse_jsonl_page(rec: dict, path: str, line: int) -> Page:
    if "id" not in rec:
        raise InputError("missing", path=path, line=line, field="id")
    if "text" not in rec:
        raise InputError("missing", path=path, line=line, field="text")
    page_id = _id_field(rec["id"], path, line, "id")
    title = _text_field(rec.get("title", ""), path, line, "title")
    text = rec["text"]
    if isinstance(text, str):
        paragraphs = tuple(p for p in _BLANK_LINE.split(text) if p.strip())
    else:
        paragraphs = _paragraph_list(text, path, line, "text")
    return Page(page_id, title, paragraphs, path, line)


def _parse_kilt_page(rec: dict, path: str, line: int) -> Page:
    for name in ("wikipedia_id", "text"):
        if name not in rec:
            raise InputError("missing", path=path, line=line, field=name)
    page_id = _id_field(rec["wikipedia_id"], path, line, "wikipedia_id")
    text = _paragraph_list(rec["text"], path, line, "text")
    if not text:
        raise InputError("empty list: text[0] must be the title", path=path, line=line, field="text")
    title = rec.get("wikipedia_title", text[0])
    title = _text_field(title, path, line, "wikipedia_title").strip()
    return Page(page_id, title, text[1:], path, line)


def detect_format(rec: dict) -> str:
    """``"kilt"`` for knowledge-source records (``wikipedia_id``), else ``"jsonl"``."""
    return "kilt" if "wikipedia_id" in rec else "jsonl"


def _iter_file(path: Path, fmt: str, skip_bad: bool, stats: ReadStats) -> Iterator[Page]:
    name = str(path)
    file_fmt = None if fmt == "auto" else fmt
    with open_text(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})",
                                     path=name, line=line_no) from None
                if not isinstance(rec, dict):
                    raise InputError(f"expected a JSON object, got {type(rec).__name__}",
                                     path=name, line=line_no)
                if file_fmt is None:
                    file_fmt = detect_format(rec)
                parse = _parse_kilt_page if file_fmt == "kilt" else _parse_jsonl_page
                page = parse(rec, name, line_no)
            except InputError as err:
                if not skip_bad:
                    raise
                stats.record_skip(err)
                continue
            stats.pages += 1
            stats.paragraphs += len(page.paragraphs)
            yield page


def read_corpus(paths: str | Path | Iterable[str | Path], *, fmt: str = "auto", skip_bad: bool = False,
                stats: ReadStats | None = None) -> Iterator[Page]:
    """Stream the pages of one or more corpus files.

    ``fmt`` is ``"auto"`` (per file, from its first record), ``"jsonl"`` or ``"kilt"``.  A malformed
    record raises :class:`InputError` naming file, line and field, unless ``skip_bad`` is set: then it
    is counted in ``stats`` and skipped.  Duplicate page ids are detected by the unit store, not here.
    """
    if fmt not in ("auto", "jsonl", "kilt"):
        raise ValueError(f"unknown corpus format {fmt!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        yield from _iter_file(Path(path), fmt, skip_bad, stats)
