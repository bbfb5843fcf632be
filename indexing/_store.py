"""The unit store: unit texts and their provenance in one SQLite file.

SQLite (not memory-mapped arrays) because units are variable-length text fetched a few at a time
by id, the file must be self-contained and written transactionally, and it can be inspected with
any SQLite client.  Unit ids are dense integers 0..N-1 in corpus order; every vector index row and
every FM-index document number is a unit id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core import IndexFormatError, InputError, NotFoundError
from ._units import Unit

STORE_FILE = "units.sqlite"

_SCHEMA = """
CREATE TABLE pages (
    idx INTEGER PRIMARY KEY, page_id TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    n_paragraphs INTEGER NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL);
CREATE TABLE units (
    id INTEGER PRIMARY KEY, page INTEGER NOT NULL REFERENCES pages(idx),
    start_par INTEGER NOT NULL, start_char INTEGER NOT NULL,
    end_par INTEGER NOT NULL, end_char INTEGER NOT NULL, text TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class StoredUnit:
    """A unit read back from the store, with its id."""

    unit_id: int
    page_id: str
    title: str
    start_paragraph: int
    start_char: int
    end_paragraph: int
    end_char: int
    text: str


class StoreWriter:
    """Appends pages and their units; ``close()`` commits. Duplicate page ids raise ``InputError``."""

    def __init__(self, path: Path, batch: int = 2000, *, append: bool = False) -> None:
        """A new store at ``path``, or with ``append`` an existing one that pages are added to."""
        self._db = sqlite3.connect(path)
        self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + ("" if append else _SCHEMA))
        self._pages: list[tuple] = []
        self._units: list[tuple] = []
        self._batch = batch
        self.n_pages = self._db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        self.n_units = self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0]

    def add(self, page_id: str, title: str, n_paragraphs: int, source: str, line: int,
            units: Iterable[Unit]) -> None:
        idx = self.n_pages
        self._pages.append((idx, page_id, title, n_paragraphs, source, line))
        self.n_pages += 1
        for u in units:
            self._units.append((self.n_units, idx, u.start_paragraph, u.start_char, u.end_paragraph,
                                u.end_char, u.text))
            self.n_units += 1
        if len(self._units) >= self._batch or len(self._pages) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        try:
            self._db.executemany("INSERT INTO pages VALUES (?,?,?,?,?,?)", self._pages)
        except sqlite3.IntegrityError:
            self._raise_duplicate()
        self._db.executemany("INSERT INTO units VALUES (?,?,?,?,?,?,?)", self._units)
        self._pages.clear()
        self._units.clear()

    def _raise_duplicate(self) -> None:
        # executemany stopped at the first duplicate; rows before it may already be in.
        for row in self._pages:
            first = self._db.execute("SELECT idx, source, line FROM pages WHERE page_id=?", (row[1],)).fetchone()
            if first is None:
                self._db.execute("INSERT INTO pages VALUES (?,?,?,?,?,?)", row)
            elif first[0] != row[0]:
                raise InputError(f"duplicate page id {row[1]!r} (first seen at {first[1]}:{first[2]})",
                                 path=row[4], line=row[5], field="id")
        raise AssertionError("integrity error without a duplicate page id")

    def remove_pages(self, page_ids: Iterable[str]) -> tuple[list[int], int]:
        """Remove these pages and their units, the others renumbered in their order (unit ids stay 0..N-1, as
        every component's rows and document numbers need); before anything is added.  Returns the removed
        units' former ids, ascending, and how many paragraphs the removed pages had."""
        self._flush()
        db = self._db
        db.execute("CREATE TEMP TABLE doomed (page_id TEXT PRIMARY KEY)")
        db.executemany("INSERT OR IGNORE INTO temp.doomed VALUES (?)", [(str(p),) for p in page_ids])
        gone = "(SELECT idx FROM pages WHERE page_id IN (SELECT page_id FROM temp.doomed))"
        removed = [r[0] for r in db.execute(f"SELECT id FROM units WHERE page IN {gone} ORDER BY id")]
        paragraphs = db.execute(f"SELECT COALESCE(SUM(n_paragraphs), 0) FROM pages WHERE idx IN {gone}").fetchone()[0]
        db.executescript(f"""
            CREATE TEMP TABLE page_map AS SELECT idx AS old, ROW_NUMBER() OVER (ORDER BY idx) - 1 AS new
                FROM pages WHERE idx NOT IN {gone};
            CREATE TEMP TABLE kept_pages AS SELECT m.new, p.page_id, p.title, p.n_paragraphs, p.source, p.line
                FROM pages p JOIN temp.page_map m ON m.old = p.idx;
            CREATE TEMP TABLE kept_units AS SELECT ROW_NUMBER() OVER (ORDER BY u.id) - 1, m.new, u.start_par,
                u.start_char, u.end_par, u.end_char, u.text FROM units u JOIN temp.page_map m ON m.old = u.page;
            DELETE FROM units;
            DELETE FROM pages;
            INSERT INTO pages SELECT * FROM temp.kept_pages ORDER BY 1;
            INSERT INTO units SELECT * FROM temp.kept_units ORDER BY 1;
            DROP TABLE temp.page_map;
            DROP TABLE temp.kept_pages;
            DROP TABLE temp.kept_units;
            DROP TABLE temp.doomed;
        """)
        self.n_pages = db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        self.n_units = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        return removed, paragraphs

    def close(self) -> None:
        self._flush()
        self._db.execute("CREATE INDEX IF NOT EXISTS units_by_page ON units(page, start_par)")
        self._db.commit()
        self._db.execute("ANALYZE")
        self._db.close()


class UnitStore:
    """Read access to a unit store; safe to share between threads (calls are serialised)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise IndexFormatError(f"unit store missing: {path}")
        # the path percent-encoded (``as_uri``): unescaped, ``%41``, ``?`` or ``#`` in it would open another file
        uri = f"{Path(path).absolute().as_uri()}?mode=ro&immutable=1"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.n_units = self._db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
            self.n_pages = self._db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"unit store {path} is corrupt: {exc}") from None

    def __len__(self) -> int:
        return self.n_units

    _SELECT = ("SELECT u.id, p.page_id, p.title, u.start_par, u.start_char, u.end_par, u.end_char, u.text "
               "FROM units u JOIN pages p ON p.idx = u.page")

    def get(self, ids: Sequence[int]) -> list[StoredUnit]:
        """Units by id, in the order asked; an unknown id raises ``NotFoundError``."""
        if not ids:
            return []
        wanted = [int(i) for i in ids]
        marks = ",".join("?" * len(set(wanted)))
        with self._lock:
            rows = self._db.execute(f"{self._SELECT} WHERE u.id IN ({marks})", sorted(set(wanted))).fetchall()
        by_id = {r[0]: StoredUnit(*r) for r in rows}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise NotFoundError(f"unit id(s) {missing[:5]} not in the store ({self.n_units} units)")
        return [by_id[i] for i in wanted]

    def units_of(self, page_id: str, paragraph: int | None = None) -> list[StoredUnit]:
        """The units of a page (that overlap ``paragraph``, when given), in order."""
        sql = f"{self._SELECT} WHERE p.page_id = ?"
        args: list = [str(page_id)]
        if paragraph is not None:
            sql += " AND u.start_par <= ? AND u.end_par >= ?"
            args += [int(paragraph), int(paragraph)]
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY u.id", args).fetchall()
        return [StoredUnit(*r) for r in rows]

    def pages_in(self, page_ids: Iterable[str]) -> set[str]:
        """Which of ``page_ids`` are pages of the store."""
        wanted = sorted({str(p) for p in page_ids})
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            with self._lock:
                rows = self._db.execute(f"SELECT page_id FROM pages WHERE page_id IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
            found.update(r[0] for r in rows)
        return found

    def iter_units(self, batch: int = 1024) -> Iterator[list[StoredUnit]]:
        """All units in id order, in lists of ``batch``."""
        cur = self._db.execute(f"{self._SELECT} ORDER BY u.id")
        while rows := cur.fetchmany(batch):
            yield [StoredUnit(*r) for r in rows]

    def close(self) -> None:
        self._db.close()
