"""One corpus record → one :class:`Page`, for every corpus format, and the field checks they share.

The formats and the fields a page is read from (``--field-map`` / ``field_map`` names other keys or columns):

========== =========================================== ===========================================================
format     record                                      text becomes
========== =========================================== ===========================================================
jsonl      ``{"id", "title"?, "text"}``                paragraphs: a list as given, a string split at blank lines
kilt       ``{"wikipedia_id", "wikipedia_title"?,      ``text[1:]`` (``text[0]`` is the title)
           "text": [title, p1, …]}``
pyserini   ``{"id", "contents"}`` (JsonCollection)     one paragraph (a list: one paragraph per item)
beir       ``{"_id", "title", "text"}`` (corpus.jsonl) one paragraph (a list: one paragraph per item)
tsv        ``id<TAB>text``, ``id<TAB>title<TAB>text``, one paragraph
           ``id<TAB>url<TAB>title<TAB>text`` (MS MARCO
           passages / documents), or a header line
========== =========================================== ===========================================================

Paragraph strings are kept exactly as given (KILT offsets point into them); a blank text gives a page without
paragraphs (no units).  A JSON file's format is detected from its first record (``wikipedia_id``: kilt, ``_id``:
beir, ``contents`` without ``text``: pyserini, else jsonl); a TSV file's from its name (``.tsv``, ``.tsv.gz``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..core import ConfigError, InputError

# The longest paragraph (or title) a corpus record may hold, in characters.  Lucene's JSON reader (Anserini's
# JsonCollection, Jackson) refuses a document of more than 20,000,000 UTF-16 units and takes the rest of its
# collection file down with it; half of that leaves room for the title and for characters outside the BMP.
MAX_FIELD_CHARS = 10_000_000

FORMATS = ("auto", "jsonl", "kilt", "pyserini", "beir", "tsv")
FIELDS = ("id", "title", "text")
# the keys each JSON format reads its fields from (title optional everywhere)
DEFAULT_KEYS: dict[str, dict[str, str]] = {
    "jsonl": {"id": "id", "title": "title", "text": "text"},
    "pyserini": {"id": "id", "title": "title", "text": "contents"},
    "beir": {"id": "_id", "title": "title", "text": "text"},
}
# a TSV first line is a header when it names an id column and a text column
TSV_ID_NAMES = ("id", "_id", "docid", "doc_id", "pid", "passage_id")
TSV_TEXT_NAMES = ("text", "contents", "passage", "body")
# header-less TSV: the layout by column count (MS MARCO passages, passages with titles, MS MARCO documents)
TSV_COLUMNS = {2: {"id": 0, "text": 1}, 3: {"id": 0, "title": 1, "text": 2},
               4: {"id": 0, "title": 2, "text": 3}}

_BLANK_LINE = re.compile(r"\n\s*\n")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the corpus; ``paragraphs[i]`` is KILT paragraph ``i + 1``."""

    page_id: str
    title: str
    paragraphs: tuple[str, ...]
    source: str = ""
    line: int = 0


# ------------------------------------------------------------------------------------------------ field checks
def check_text(value: str, path: str, line: int, name: str, what: str = "", *, unicode: bool = True,
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


def text_field(value: object, path: str, line: int, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=name)
    return check_text(value, path, line, name)


def id_field(value: object, path: str, line: int, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"expected a string or integer id, got {type(value).__name__}",
                         path=path, line=line, field=name)
    text = str(value).strip()
    if not text:
        raise InputError("empty id", path=path, line=line, field=name)
    return check_text(text, path, line, name)


def paragraph_list(value: object, path: str, line: int, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(f"expected a list of strings, got {type(value).__name__}",
                         path=path, line=line, field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"item {i} is {type(item).__name__}, expected a string",
                             path=path, line=line, field=name)
        check_text(item, path, line, name, f"item {i}: ")
    return tuple(value)


def _one_paragraph(text: str, path: str, line: int, name: str) -> tuple[str, ...]:
    check_text(text, path, line, name)
    return (text,) if text.strip() else ()


# ------------------------------------------------------------------------------------------------ field maps
def parse_field_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"id=_id,title=title,text=body"`` (or a dict) → ``{field: key}``; a key is a JSON key or, for TSV, a
    0-based column number or a header name.  ``title=`` (empty) reads no title."""
    if not spec:
        return {}
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            name, eq, key = item.partition("=")
            if not eq:
                raise ConfigError(f"field map item {item.strip()!r} is not FIELD=KEY (e.g. id=_id,text=body)")
            pairs.append((name.strip(), key.strip()))
    else:
        pairs = [(str(name), str(key)) for name, key in spec.items()]
    out: dict[str, str] = {}
    for name, key in pairs:
        if name not in FIELDS:
            raise ConfigError(f"field map: unknown field {name!r}; map {', '.join(FIELDS)}")
        if name in out:
            raise ConfigError(f"field map: {name!r} mapped twice")
        if not key and name != "title":
            raise ConfigError(f"field map: {name!r} needs a key")
        out[name] = key
    return out


def detect_format(rec: dict) -> str:
    """The JSON format of a first record: ``kilt`` (``wikipedia_id``), ``beir`` (``_id``), ``pyserini``
    (``contents`` and no ``text``), else ``jsonl``."""
    if "wikipedia_id" in rec:
        return "kilt"
    if "_id" in rec:
        return "beir"
    if "contents" in rec and "text" not in rec:
        return "pyserini"
    return "jsonl"


def json_keys(fmt: str, field_map: Mapping[str, str], path: str) -> dict[str, str]:
    """The keys a JSON file of format ``fmt`` is read with: the format's own, overridden by ``field_map``."""
    if fmt == "kilt":
        if field_map:
            raise ConfigError(f"{path}: a field map does not apply to a KILT knowledge source")
        return {}
    return {**DEFAULT_KEYS[fmt], **field_map}


# ------------------------------------------------------------------------------------------------ JSON records
def parse_keyed_page(rec: dict, fmt: str, keys: Mapping[str, str], path: str, line: int) -> Page:
    """A jsonl / pyserini / beir record, its fields read from ``keys`` (see :func:`json_keys`)."""
    for name in ("id", "text"):
        if keys[name] not in rec:
            raise InputError("missing", path=path, line=line, field=keys[name])
    page_id = id_field(rec[keys["id"]], path, line, keys["id"])
    title_key = keys.get("title") or ""
    title = text_field(rec[title_key], path, line, title_key) if title_key and title_key in rec else ""
    text, name = rec[keys["text"]], keys["text"]
    if not isinstance(text, str):
        paragraphs = paragraph_list(text, path, line, name)
    elif fmt != "jsonl":
        paragraphs = _one_paragraph(text, path, line, name)
    else:
        check_text(text, path, line, name, limit=False)
        paragraphs = tuple(p for p in _BLANK_LINE.split(text) if p.strip())
        for i, para in enumerate(paragraphs, start=1):
            check_text(para, path, line, name, f"paragraph {i}: ", unicode=False)
    return Page(page_id, title, paragraphs, path, line)


def parse_kilt_page(rec: dict, path: str, line: int) -> Page:
    for name in ("wikipedia_id", "text"):
        if name not in rec:
            raise InputError("missing", path=path, line=line, field=name)
    page_id = id_field(rec["wikipedia_id"], path, line, "wikipedia_id")
    text = paragraph_list(rec["text"], path, line, "text")
    if not text:
        raise InputError("empty list: text[0] must be the title", path=path, line=line, field="text")
    title = rec.get("wikipedia_title", text[0])
    title = text_field(title, path, line, "wikipedia_title").strip()
    return Page(page_id, title, text[1:], path, line)


# ------------------------------------------------------------------------------------------------ TSV lines
def is_tsv(name: str) -> bool:
    return name.endswith((".tsv", ".tsv.gz"))


def tsv_layout(first: list[str], field_map: Mapping[str, str], path: str) -> tuple[dict[str, int], bool]:
    """``({field: column}, first line is a header)`` from a TSV file's first line and the field map."""
    names = [c.strip().lower() for c in first]
    header = any(n in TSV_ID_NAMES for n in names) and any(n in TSV_TEXT_NAMES for n in names)
    if not field_map:
        if header:
            layout = {"id": next(i for i, n in enumerate(names) if n in TSV_ID_NAMES),
                      "text": next(i for i, n in enumerate(names) if n in TSV_TEXT_NAMES)}
            if "title" in names:
                layout["title"] = names.index("title")
            return layout, True
        if len(first) not in TSV_COLUMNS:
            raise ConfigError(f"{path}: {len(first)} tab-separated columns; say which hold what with "
                              "--field-map id=0,title=1,text=2 (0-based columns)")
        return dict(TSV_COLUMNS[len(first)]), False
    layout = {}
    for name, key in field_map.items():
        if not key:
            continue
        if key.isdigit():
            layout[name] = int(key)
        elif header and key.strip().lower() in names:
            layout[name] = names.index(key.strip().lower())
        else:
            raise ConfigError(f"{path}: field map {name}={key}: not a column number" +
                              (" nor a header name" if header else " (the file has no header line)"))
    for name in ("id", "text"):
        if name not in layout:
            raise ConfigError(f"{path}: the field map names no {name!r} column")
    return layout, header


def parse_tsv_page(cols: list[str], layout: Mapping[str, int], path: str, line: int) -> Page:
    need = max(layout.values()) + 1
    if len(cols) < need:
        raise InputError(f"expected at least {need} tab-separated columns, got {len(cols)}", path=path, line=line)
    page_id = id_field(cols[layout["id"]], path, line, f"column {layout['id']}")
    title = check_text(cols[layout["title"]].strip(), path, line, f"column {layout['title']}") \
        if "title" in layout else ""
    paragraphs = _one_paragraph(cols[layout["text"]], path, line, f"column {layout['text']}")
    return Page(page_id, title, paragraphs, path, line)
