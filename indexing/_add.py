"""``add_to_index``: add pages to an existing index directory, atomically.

New pages are cut into units the way the index was built (its manifest's unit kind and parameters) and appended
to the unit store (new unit ids follow the old ones).  A page id already in the index is an error, unless it is
skipped (``skip_existing``) or replaced (``replace``: the old page and its units are removed first, the other units
renumbered in order, their stored embeddings kept, and the new page added like the others).  Then each
component is brought up to date: dense encodes only the new units, appends them to the stored embeddings and
rebuilds its FAISS index from all of them (no re-encoding of the old units); BM25 and the FM-index are rebuilt
from the unit store with their recorded parameters (both are fast next to encoding).  The work happens on a copy
of the directory that replaces the original only when complete, so a failure leaves the index as it was.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core import GenretError, InputError, progress_bar, staged_dir, write_lock
from ._bm25 import BM25Config, build_bm25
from ._build import IndexConfig, ingest
from ._corpus import Page, corpus_file, read_corpus
from ._dense import (
    EMBEDDINGS_FILE,
    build_faiss,
    device_for_faiss,
    encoder_model,
    faiss_params,
    recorded_config,
    unit_text,
)
from ._encoder import SentenceTransformerEncoder
from ._manifest import Component, Manifest, file_entries, read_manifest, write_manifest
from ._memory import ADAPTED_MEMORY, drop_memory_units
from ._store import STORE_FILE, StoreWriter, UnitStore
from ._units import UnitConfig
from ._verify import verify_files
from .fm import FMConfig, build_fm

log = logging.getLogger("genret")


def _add_dense(tmp: Path, comp: Component, store: UnitStore, old: int, device: tuple[str, str],
               progress: bool) -> Component:
    """Encode the new units (with the encoder kept in the index, for an adapted component), append them to the
    stored embeddings and rebuild the FAISS index from all of them."""
    import faiss

    t0 = time.perf_counter()
    p = comp.params
    model = encoder_model(tmp, comp)
    config = recorded_config(comp, model=model, device=device[0], dtype=device[1])
    encoder = SentenceTransformerEncoder(model, config.device, config.dtype)
    embeddings = p.get("embeddings_file", EMBEDDINGS_FILE)
    n = len(store)
    with open(tmp / embeddings, "ab") as fh, progress_bar(n - old, "encoding new units", progress) as bar:
        for start in range(old, n, 1024):
            batch = store.get(list(range(start, min(start + 1024, n))))
            fh.write(encoder.encode([unit_text(u.title, u.text, config.with_title) for u in batch],
                                    batch_size=config.batch_size).tobytes())
            bar.update(len(batch))
    vectors = np.memmap(tmp / embeddings, dtype=np.float32, mode="r", shape=(n, p["dim"]))
    plan = faiss_params(config, p["dim"], n)
    index = build_faiss(vectors, plan, device=device_for_faiss(config), progress=progress)
    faiss_file = p.get("faiss_file", "dense.faiss")
    faiss.write_index(index, str(tmp / faiss_file))
    del vectors, index
    params = {**p, **plan, "count": n}
    files = {**comp.files, **file_entries(tmp, [embeddings, faiss_file])}
    return comp.model_copy(update={"params": params, "files": files,
                                   "build_seconds": round(comp.build_seconds + time.perf_counter() - t0, 3)})


def _rebuild(tmp: Path, name: str, comp: Component, store: UnitStore, progress: bool) -> Component:
    p = comp.params
    if name == "bm25":
        shutil.rmtree(tmp / "bm25", ignore_errors=True)
        return build_bm25(store, tmp, BM25Config(k1=p["k1"], b=p["b"], with_title=p["with_title"]), progress=progress)
    shutil.rmtree(tmp / p.get("dir", "fm"), ignore_errors=True)
    cfg = FMConfig(tokenizer=p["tokenizer"], shards=p["shards"], sa_sample=p["sa_sample"], lowercase=p["lowercase"])
    return build_fm(store, tmp, cfg, progress=progress)


def add_to_index(index_dir: str | Path, corpus: str | Path | Iterable[str | Path], *, skip_bad: bool = False,
                 corpus_format: str = "auto", device: str = "auto", progress: bool = True,
                 field_map: dict[str, str] | None = None, dtype: str = "auto", skip_existing: bool = False,
                 replace: bool = False) -> Manifest:
    """Add the pages of corpus file(s) to the index at ``index_dir``; returns the new manifest.  Holds the
    index's write lock from reading its manifest to replacing it (a concurrent writer waits or fails).
    ``device`` and ``dtype`` are the dense encoder's (``resolve_dtype``).

    A page whose id is already in the index is an error, unless ``skip_existing`` (such pages are left out; when
    every page read is one, the index is left as it is and its manifest returned) or ``replace`` (the index's
    page and its units are removed and the new one added, as a build of the resulting pages would hold them)."""
    if skip_existing and replace:
        raise GenretError("skip_existing=True and replace=True do not go together: skip the pages already in the "
                          "index, or replace them, not both", flags=_FLAGS)
    src = Path(index_dir)
    existing = "skip" if skip_existing else "replace" if replace else "error"
    with write_lock(src):
        return _add(src, corpus, skip_bad, corpus_format, (device, dtype), progress, field_map or {}, existing)


_FLAGS = {"skip_existing=True": "--skip-existing", "replace=True": "--replace"}  # the CLI's spelling


class _NothingNew(Exception):
    """Every page read is in the index already (``skip_existing``): the staged copy is dropped."""


class _Known:
    """``ingest``'s ``keep``: a page whose id the index holds (and that is not being replaced) stays out, counted."""

    def __init__(self, store: UnitStore, replaced: set[str]) -> None:
        self.store, self.replaced = store, replaced
        self.pages = self.paragraphs = 0
        self.first: Page | None = None

    def __call__(self, page: Page) -> bool:
        if page.page_id in self.replaced or not self.store.pages_in([page.page_id]):
            return True
        self.pages += 1
        self.paragraphs += len(page.paragraphs)
        self.first = self.first or page
        return False

    def refuse(self, read: int) -> InputError:
        first = self.first
        return InputError(f"{self.pages} of the {read} pages read are already in the index, e.g. {first.page_id!r} "
                          f"({first.source}:{first.line}); pass skip_existing=True to add only the new pages, or "
                          "replace=True to replace them", flags=_FLAGS)


def _add(src: Path, corpus: str | Path | Iterable[str | Path], skip_bad: bool, corpus_format: str,
         device: tuple[str, str], progress: bool, field_map: dict[str, str], existing: str) -> Manifest:
    manifest = read_manifest(src)
    verify_files(src, manifest)
    paths = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(c) for c in corpus]
    for path in paths:
        corpus_file(path)  # a file, or a BEIR folder holding corpus.jsonl
    # the adapted reranker reads unit text, not vectors: it is kept as it is; the query memory's unit ids are
    # renumbered where replaced pages' units leave
    unknown = set(manifest.components) - {"store", "dense", "dense-adapted", "bm25", "fm", "rerank-adapted",
                                          ADAPTED_MEMORY}
    if unknown:
        raise GenretError(f"cannot add to an index with component(s) {sorted(unknown)}")
    t0 = time.perf_counter()
    config = IndexConfig(units=UnitConfig(kind=manifest.units.kind, **manifest.units.params), components=(),
                         corpus_format=corpus_format, skip_bad=skip_bad, field_map=field_map)
    index_store = UnitStore(src / STORE_FILE)
    try:
        replaced = _replaced(paths, config, index_store) if existing == "replace" else set()
        known = _Known(index_store, replaced)
        with staged_dir(src, "adding", copy_from=src) as tmp:
            new = _stage(tmp, manifest, paths, config, device, progress, replaced, known, existing, t0)
    except _NothingNew:
        log.info("nothing to add: all %d pages read are already in the index", known.pages)
        return manifest
    finally:
        index_store.close()
    if replaced:
        log.info("replaced %d page(s) already in the index", len(replaced))
    if known.pages:
        log.info("skipped %d page(s) already in the index", known.pages)
    return new


def _replaced(paths: list[str], config: IndexConfig, store: UnitStore) -> set[str]:
    """The page ids of the corpus that the index holds (a first read of the corpus: ids only)."""
    ids = {page.page_id for page in read_corpus(paths, fmt=config.corpus_format, skip_bad=config.skip_bad,
                                                   field_map=config.field_map)}
    return store.pages_in(ids)


def _stage(tmp: Path, manifest: Manifest, paths: list[str], config: IndexConfig, device: tuple[str, str],
           progress: bool, replaced: set[str], known: _Known, existing: str, t0: float) -> Manifest:
    """Add the pages in the staged copy ``tmp`` and write its manifest (see ``add_to_index``)."""
    digest = hashlib.sha256(manifest.corpus.sha256.encode())  # the new hash chains the old one
    writer = StoreWriter(tmp / STORE_FILE, append=True)
    try:
        removed, removed_paragraphs = writer.remove_pages(replaced) if replaced else ([], 0)
        old_units = writer.n_units
        stats = ingest(paths, writer, config, progress, digest, keep=known)
    finally:
        writer.close()
    if known.pages and existing == "error":
        raise known.refuse(stats.pages)
    if writer.n_units == old_units:
        if known.pages:
            raise _NothingNew
        raise InputError(f"no new units ({stats.pages} pages read)", path=", ".join(paths))
    components = dict(manifest.components)
    components["store"] = components["store"].model_copy(
        update={"files": file_entries(tmp, [STORE_FILE]), "params": {"units": writer.n_units}})
    store = UnitStore(tmp / STORE_FILE)
    try:
        for name, comp in manifest.components.items():
            if name in ("dense", "dense-adapted"):
                if removed:
                    _drop_rows(tmp / comp.params.get("embeddings_file", EMBEDDINGS_FILE), comp.params["dim"],
                               old_units + len(removed), removed)
                components[name] = _add_dense(tmp, comp, store, old_units, device, progress)
            elif name in ("bm25", "fm"):
                components[name] = _rebuild(tmp, name, comp, store, progress)
            elif name == ADAPTED_MEMORY and removed:
                components[name] = drop_memory_units(tmp, comp, removed)
    finally:
        store.close()
    c = manifest.corpus
    pages = stats.pages - known.pages
    corpus_info = c.model_copy(update={
        "sources": c.sources + [str(Path(p).resolve()) for p in paths], "sha256": digest.hexdigest(),
        "pages": c.pages - len(replaced) + pages,
        "paragraphs": c.paragraphs - removed_paragraphs + stats.paragraphs - known.paragraphs,
        "skipped": c.skipped + stats.skipped})
    new = manifest.model_copy(update={
        "corpus": corpus_info, "components": components,
        "units": manifest.units.model_copy(update={"count": writer.n_units}),
        "build_seconds": round(manifest.build_seconds + time.perf_counter() - t0, 3)})
    write_manifest(tmp, new)
    return new


def _drop_rows(path: Path, dim: int, n: int, removed: list[int]) -> None:
    """Remove the rows ``removed`` of the ``n`` × ``dim`` float32 matrix in ``path`` (the stored embeddings of
    units that are gone), in place, a block at a time."""
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    vectors = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
    out = path.with_name(path.name + ".kept")
    with open(out, "wb") as fh:
        for start in range(0, n, 65536):
            fh.write(np.ascontiguousarray(vectors[start:start + 65536][keep[start:start + 65536]]).tobytes())
    del vectors
    out.replace(path)
