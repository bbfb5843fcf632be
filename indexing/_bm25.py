"""BM25 component: a Lucene index of the units, built by Anserini (pyserini's Java indexer).

The units are written as an Anserini ``JsonCollection`` (``{"id": str(unit_id), "contents": ...}``,
contents = ``"title\\ntext"`` by default, as in the BM25 baselines) into a temporary directory inside
``out_dir`` and indexed by ``io.anserini.index.IndexCollection`` with the arguments of
``python -m pyserini.index.lucene`` given by ``index_args()`` (the RAM buffer sized to the JVM heap):
Anserini's default English analyzer (Porter stemmer, Lucene's English stop words), no positions, document
vectors or raw documents (BM25 needs none; the unit store holds the text).  The Lucene files go into
``out_dir / "bm25"`` and are listed in the component with paths relative to ``out_dir`` (``bm25/_0.cfs``).
k1 and b are search-time settings (Lucene stores no BM25 weights); the manifest records the build's values
as the retriever's defaults.  Anserini rounds BM25 scores to 4 decimals; equal scores rank by document id
string (``"10"`` before ``"9"``), as in pyserini.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..core import GenretError, progress_bar
from ._dense import unit_text
from ._manifest import Component, file_entries
from ._store import UnitStore

log = logging.getLogger("genret")

BM25_KIND = "bm25-lucene"
BM25_DIR = "bm25"
ANALYZER = "anserini-default-english (porter stemmer, lucene english stopwords)"
GENERATOR = "DefaultLuceneDocumentGenerator"
COLLECTION = "JsonCollection"
# Units per collection file at least: Anserini indexes one file per thread.
MIN_UNITS_PER_FILE = 10_000
# Anserini's JSON reader (Jackson) refuses a string of more UTF-16 units than this, and with it the rest of the
# collection file it is in; a longer unit is refused before Anserini runs, by name.
MAX_CONTENTS_UTF16 = 20_000_000


def _check_size(u, contents: str) -> None:
    if len(contents) * 2 <= MAX_CONTENTS_UTF16:
        return
    size = len(contents.encode("utf-16-le")) // 2
    if size > MAX_CONTENTS_UTF16:
        raise GenretError(f"unit {u.unit_id} (page {u.page_id!r}, paragraphs {u.start_paragraph}-{u.end_paragraph}) "
                          f"has {size:,} UTF-16 characters; Lucene's JSON reader takes at most "
                          f"{MAX_CONTENTS_UTF16:,}: cut the page into smaller units (e.g. a smaller --window-words)")


class BM25Config(BaseModel):
    """BM25 index settings (k1 and b are also the retriever's defaults; they can be overridden at search time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    k1: float = Field(0.9, ge=0, allow_inf_nan=False, description="BM25 term-frequency saturation")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation")
    threads: int = Field(2, ge=1, description="indexing threads")
    with_title: bool = Field(True, description="index 'title\\ntext' rather than the text alone")


def index_args(collection_dir: Path, index_dir: Path, threads: int, memory_buffer_mb: int = 4096) -> list[str]:
    """Anserini ``IndexCollection`` arguments (also valid for ``python -m pyserini.index.lucene``)."""
    return ["-collection", COLLECTION, "-input", str(collection_dir), "-index", str(index_dir),
            "-generator", GENERATOR, "-threads", str(threads), "-memoryBuffer", str(memory_buffer_mb), "-quiet"]


def write_collection(store: UnitStore, directory: Path, *, with_title: bool, files: int = 1,
                     progress: bool = False) -> int:
    """Write every unit of ``store`` as JsonCollection lines into ``files`` files in ``directory``
    (contiguous id ranges); returns the number of units written."""
    n = len(store)
    per_file = max(1, -(-n // max(1, files)))
    written = 0
    handle = None
    try:
        with progress_bar(n, "writing BM25 collection", progress) as bar:
            for batch in store.iter_units(batch=4096):
                for u in batch:
                    if written % per_file == 0:
                        if handle is not None:
                            handle.close()
                        handle = open(directory / f"units-{written // per_file:03d}.jsonl", "w", encoding="utf-8")
                    contents = unit_text(u.title, u.text, with_title)
                    _check_size(u, contents)
                    handle.write(json.dumps({"id": str(u.unit_id), "contents": contents}, ensure_ascii=False))
                    handle.write("\n")
                    written += 1
                bar.update(len(batch))
    finally:
        if handle is not None:
            handle.close()
    return written


def build_bm25(store: UnitStore, out_dir: Path, config: BM25Config, *, progress: bool = True) -> Component:
    """Index every unit of ``store`` with Anserini into ``out_dir / "bm25"`` (replaced if present).

    Raises ``GenretError`` when Java ≥ 21 / pyserini are missing or Anserini rejects or fails to
    index documents.  The temporary collection directory is removed in every case.
    """
    from ._java import import_pyserini, java_error_line, java_list, max_heap_mb

    t0 = time.perf_counter()
    ps = import_pyserini()
    index_dir = out_dir / BM25_DIR
    shutil.rmtree(index_dir, ignore_errors=True)
    n = len(store)
    files = max(1, min(config.threads, -(-n // MIN_UNITS_PER_FILE)))
    collection = Path(tempfile.mkdtemp(prefix=".bm25-collection-", dir=out_dir))
    try:
        written = write_collection(store, collection, with_title=config.with_title, files=files, progress=progress)
        log.info("bm25: indexing %d units with Anserini %s (Lucene %s, Java %s), %d thread(s)", written,
                 ps.anserini_version, ps.lucene_version, ps.java.version_str, files)
        # Anserini's default 4 GiB RAM buffer overflows a smaller heap before Lucene flushes it
        buffer_mb = max(64, min(4096, max_heap_mb() // 2))
        args = ps.IndexCollectionArgs()
        try:
            ps.CmdLineParser(args).parseArgument(java_list(index_args(collection, index_dir, files, buffer_mb)))
            indexer = ps.IndexCollection(args)
            indexer.run()
        except ps.JavaException as exc:
            raise GenretError(f"Anserini could not build the BM25 index in {index_dir}: "
                              f"{java_error_line(exc)}") from None
        counters = indexer.getCounters()
        indexed, empty = int(counters.indexed.get()), int(counters.empty.get())
        failed = {name: int(getattr(counters, name).get()) for name in ("unindexable", "skipped", "errors")}
    finally:
        shutil.rmtree(collection, ignore_errors=True)
    if any(failed.values()) or indexed + empty != written:
        raise GenretError(f"Anserini indexed {indexed} of {written} units (empty {empty}, {failed}); "
                          f"see the Java log above")
    if empty:
        log.warning("bm25: %d unit(s) with empty contents were not indexed", empty)
    (index_dir / "write.lock").unlink(missing_ok=True)  # Lucene leaves the (released) lock file behind
    names = sorted(f"{BM25_DIR}/{p.name}" for p in index_dir.iterdir() if p.is_file())
    log.info("bm25: %d documents, %d files", indexed, len(names))
    return Component(
        kind=BM25_KIND, model=None,
        params={"k1": config.k1, "b": config.b, "with_title": config.with_title, "analyzer": ANALYZER,
                "directory": BM25_DIR, "count": indexed, "empty": empty, "generator": GENERATOR,
                "pyserini_version": ps.pyserini_version, "anserini_version": ps.anserini_version,
                "lucene_version": ps.lucene_version, "java_version": ps.java.version_str},
        files=file_entries(out_dir, names),
        build_seconds=round(time.perf_counter() - t0, 3),
    )

