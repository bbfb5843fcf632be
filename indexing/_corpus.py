"""Streaming corpus readers: JSONL ``{id, title, text}``, KILT knowledge sources, Pyserini JSONL ``{id, contents}``,
BEIR corpora (``corpus.jsonl`` or its folder) and MS MARCO-style TSV (the formats: :mod:`._corpus_records`).

Every format yields :class:`Page` records whose paragraphs are numbered from 1, as in KILT
(paragraph 0 is the title).  Paragraph strings are kept exactly as given, so character offsets
into them stay valid (KILT provenance points into these strings).  Files may be gzip-compressed
(``.gz``).  Records are read one line at a time: memory does not grow with the corpus.

Bad bytes are input errors naming the file and line (skippable with ``skip_bad`` where they spoil one
record): a line that is not UTF-8, JSON nested too deeply to parse, a lone surrogate escape (``"\\ud800"``:
not Unicode, it cannot be stored), a paragraph or title longer than :data:`MAX_FIELD_CHARS`.  A truncated or
corrupt ``.gz`` file is an input error that no ``skip_bad`` skips (the records after the damage are lost).
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core import ConfigError, InputError
from ._corpus_records import (
    FORMATS,
    MAX_FIELD_CHARS,
    Page,
    detect_format,
    is_tsv,
    json_keys,
    parse_field_map,
    parse_keyed_page,
    parse_kilt_page,
    parse_tsv_page,
    tsv_layout,
)

__all__ = ["MAX_FIELD_CHARS", "Page", "ReadStats", "corpus_file", "open_text", "read_corpus"]

BEIR_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")


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


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` per line (``\\n``, ``\\r\\n`` or ``\\r`` ends a line, as in text mode); a
    truncated or corrupt ``.gz`` is an :class:`InputError` naming the last line read whole."""
    line_no = 0
    with _open_binary(path) as fh:
        try:
            for chunk in fh:
                if b"\r" in chunk:
                    if chunk.endswith(b"\r\n"):
                        chunk = chunk[:-2] + b"\n"
                    parts = chunk.split(b"\r")
                    for part in parts[:-1]:
                        line_no += 1
                        yield line_no, part
                    chunk = parts[-1]
                    if not chunk:
                        continue
                line_no += 1
                yield line_no, chunk
        except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            what = "truncated or corrupt gzip data" if path.suffix == ".gz" else "read error"
            raise InputError(f"{what} after line {line_no} ({exc}); the records after it cannot be read",
                             path=str(path)) from None


def corpus_file(path: str | Path) -> Path:
    """The file to read for a corpus path: the path itself, or a BEIR folder's ``corpus.jsonl(.gz)``."""
    p = Path(path)
    if p.is_dir():
        for name in BEIR_CORPUS_FILES:
            if (p / name).is_file():
                return p / name
        raise InputError("a folder must be a BEIR dataset holding corpus.jsonl (or corpus.jsonl.gz)", path=str(p))
    if not p.is_file():
        raise InputError("no such file", path=str(p))
    return p


def _decode(raw: bytes, name: str, line_no: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)",
                         path=name, line=line_no) from None
    if line_no == 1 and text.startswith(codecs.BOM_UTF8.decode()):
        text = text[1:]
    return text


def _parse_line(raw: bytes, name: str, line_no: int) -> object:
    text = _decode(raw, name, line_no)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=name, line=line_no) from None
    except RecursionError:
        raise InputError("invalid JSON (nested too deeply to parse)", path=name, line=line_no) from None


def _json_page(raw: bytes, name: str, line_no: int, fmt: str | None, field_map: Mapping[str, str],
               keys: dict[str, str] | None) -> tuple[Page, str, dict[str, str]]:
    rec = _parse_line(raw, name, line_no)
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object, got {type(rec).__name__}", path=name, line=line_no)
    if fmt is None:
        fmt = detect_format(rec)
    if keys is None:
        keys = json_keys(fmt, field_map, name)
    page = parse_kilt_page(rec, name, line_no) if fmt == "kilt" else parse_keyed_page(rec, fmt, keys, name, line_no)
    return page, fmt, keys


def _iter_file(path: Path, fmt: str, skip_bad: bool, stats: ReadStats, field_map: Mapping[str, str]) -> Iterator[Page]:
    name = str(path)
    file_fmt = None if fmt == "auto" else fmt
    if file_fmt is None and is_tsv(path.name):
        file_fmt = "tsv"
    keys: dict[str, str] | None = None
    layout: dict[str, int] | None = None
    for line_no, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            if file_fmt == "tsv":
                cols = _decode(raw, name, line_no).rstrip("\n").split("\t")
                if layout is None:
                    layout, header = tsv_layout(cols, field_map, name)
                    if header:
                        continue
                page = parse_tsv_page(cols, layout, name, line_no)
            else:
                page, file_fmt, keys = _json_page(raw, name, line_no, file_fmt, field_map, keys)
        except InputError as err:
            if not skip_bad:
                raise
            stats.record_skip(err)
            continue
        stats.pages += 1
        stats.paragraphs += len(page.paragraphs)
        yield page


def read_corpus(paths: str | Path | Iterable[str | Path], *, fmt: str = "auto", skip_bad: bool = False,
                stats: ReadStats | None = None, field_map: str | Mapping[str, str] | None = None) -> Iterator[Page]:
    """Stream the pages of one or more corpus files (a BEIR folder stands for its ``corpus.jsonl``).

    ``fmt`` is ``"auto"`` (per file: TSV by its name, ``.tsv`` or ``.tsv.gz``, else from its first JSON record),
    or one of ``"jsonl"``, ``"kilt"``, ``"pyserini"``, ``"beir"``, ``"tsv"``.  ``field_map`` (``"id=_id,text=body"``
    or a dict) names the keys, or TSV columns, the page's ``id``, ``title`` and ``text`` come from.  A malformed
    record (bad JSON or UTF-8, a missing or mistyped field, a lone surrogate, a paragraph or title over
    :data:`MAX_FIELD_CHARS` characters, too few TSV columns) raises :class:`InputError` naming file, line and
    field, unless ``skip_bad`` is set: then it is counted in ``stats`` and skipped.  A truncated ``.gz`` always
    raises.  Duplicate page ids are detected by the unit store, not here.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown corpus format {fmt!r}; use one of {', '.join(FORMATS)}")
    fields = parse_field_map(field_map)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        yield from _iter_file(corpus_file(path), fmt, skip_bad, stats, fields)
