"""Streaming corpus readers: JSONL ``{id, title, text}`` and the KILT knowledge-source format.

Both formats yield :class:`Page` records whose paragraphs are numbered from 1, as in KILT
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
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import InputError

_BLANK_LINE = re.compile(r"\n\s*\n")
_SURROGATE = re.compile("[\ud800-\udfff]")

# The longest paragraph (or title) a corpus record may hold, in characters.  Lucene's JSON reader (Anserini's
# JsonCollection, Jackson) refuses a document of more than 20,000,000 UTF-16 units and takes the rest of its
# collection file down with it; half of that leaves room for the title and for characters outside the BMP.
MAX_FIELD_CHARS = 10_000_000


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


def _check_text(value: str, path: str, line: int, name: str, what: str = "", *, unicode: bool = True,
                limit: bool = True) -> str:
    """``value`` if it is storable Unicode (no lone surrogate) of at most ``MAX_FIELD_CHARS`` characters."""
    bad = _SURROGATE.search(value) if unicode else None
    if bad is not None:
        raise InputError(f"{what}lone surrogate \\u{ord(bad.group()):04x} at character {bad.start()} (not valid "
                         "Unicode)", path=path, line=line, field=name)
    if limit and len(value) > MAX_FIELD_CHARS:
        raise InputError(f"{what}{len(value):,} characters, more than the {MAX_FIELD_CHARS:,} a paragraph or "
                         "title may hold (split it into paragraphs)", path=path, line=line, field=name)
    return value


def _text_field(value: object, path: str, line: int, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=name)
    return _check_text(value, path, line, name)


def _id_field(value: object, path: str, line: int, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string or integer id, got {type(value).__name__}",
                         path=path, line=line, field=name)
    text = str(value).strip()
    if not text:
        raise InputError("empty id", path=path, line=line, field=name)
    return _check_text(text, path, line, name)


def _paragraph_list(value: object, path: str, line: int, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(f"expected a list of strings, got {type(value).__name__}",
                         path=path, line=line, field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"item {i} is {type(item).__name__}, expected a string",
                             path=path, line=line, field=name)
        _check_text(item, path, line, name, f"item {i}: ")
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
        _check_text(text, path, line, "text", limit=False)
        paragraphs = tuple(p for p in _BLANK_LINE.split(text) if p.strip())
        for i, para in enumerate(paragraphs, start=1):
            _check_text(para, path, line, "text", f"paragraph {i}: ", unicode=False)
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


def _parse_line(raw: bytes, name: str, line_no: int) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)",
                         path=name, line=line_no) from None
    if line_no == 1 and text.startswith(codecs.BOM_UTF8.decode()):
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=name, line=line_no) from None
    except RecursionError:
        raise InputError("invalid JSON (nested too deeply to parse)", path=name, line=line_no) from None


def _iter_file(path: Path, fmt: str, skip_bad: bool, stats: ReadStats) -> Iterator[Page]:
    name = str(path)
    file_fmt = None if fmt == "auto" else fmt
    for line_no, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            rec = _parse_line(raw, name, line_no)
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
    record (bad JSON or UTF-8, a missing or mistyped field, a lone surrogate, a paragraph or title over
    :data:`MAX_FIELD_CHARS` characters) raises :class:`InputError` naming file, line and field, unless
    ``skip_bad`` is set: then it is counted in ``stats`` and skipped.  A truncated ``.gz`` always raises.
    Duplicate page ids are detected by the unit store, not here.
    """
    if fmt not in ("auto", "jsonl", "kilt"):
        raise ValueError(f"unknown corpus format {fmt!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        yield from _iter_file(Path(path), fmt, skip_bad, stats)
