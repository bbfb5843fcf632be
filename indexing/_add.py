"""``add_to_index``: add pages to an existing index directory, atomically.

New pages are cut into units the way the index was built (its manifest's unit kind and parameters) and appended
to the unit store (new unit ids follow the old ones; a page id already in the index is an error).  Then each
component is brought up to date: dense encodes only the new units, appends them to the stored embeddings and
rebuilds its FAISS index from all of them (no re-encoding of the old units); BM25 and the FM-index are rebuilt
from the unit store with their recorded parameters (both are fast next to encoding).  The work happens on a copy
of the directory that replaces the original only when complete, so a failure leaves the index as it was.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core import GenretError, InputError, progress_bar, staged_dir, write_lock
from ._bm25 import BM25Config, build_bm25
from ._build import IndexConfig, ingest
from ._corpus import corpus_file
from ._dense import EMBEDDINGS_FILE, DenseConfig, build_faiss, device_for_faiss, faiss_params, unit_text
from ._encoder import SentenceTransformerEncoder
from ._manifest import Component, Manifest, file_entries, read_manifest, write_manifest
from ._store import STORE_FILE, StoreWriter, UnitStore
from ._units import UnitConfig
from ._verify import verify_files
from .fm import FMConfig, build_fm


def _add_dense(tmp: Path, comp: Component, store: UnitStore, old: int, device: tuple[str, str],
               progress: bool) -> Component:
    """Encode the new units (with the encoder kept in the index, for an adapted component), append them to the
    stored embeddings and rebuild the FAISS index from all of them."""
    import faiss

    t0 = time.perf_counter()
    p = comp.params
    fields = {k: p[k] for k in DenseConfig.model_fields if k in p and k not in ("model", "device", "dtype")}
    model = str(tmp / p["model_dir"]) if p.get("model_dir") else comp.model
    config = DenseConfig(model=model, device=device[0], dtype=device[1], **fields)
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
                 field_map: dict[str, str] | None = None, dtype: str = "auto") -> Manifest:
    """Add the pages of corpus file(s) to the index at ``index_dir``; returns the new manifest.  Holds the
    index's write lock from reading its manifest to replacing it (a concurrent writer waits or fails).
    ``device`` and ``dtype`` are the dense encoder's (``resolve_dtype``)."""
    src = Path(index_dir)
    with write_lock(src):
        return _add(src, corpus, skip_bad, corpus_format, (device, dtype), progress, field_map or {})


def _add(src: Path, corpus: str | Path | Iterable[str | Path], skip_bad: bool, corpus_format: str,
         device: tuple[str, str],
         progress: bool, field_map: dict[str, str]) -> Manifest:
    manifest = read_manifest(src)
    verify_files(src, manifest)
    paths = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(c) for c in corpus]
    for path in paths:
        corpus_file(path)  # a file, or a BEIR folder holding corpus.jsonl
    unknown = set(manifest.components) - {"store", "dense", "dense-adapted", "bm25", "fm"}
    if unknown:
        raise GenretError(f"cannot add to an index with component(s) {sorted(unknown)}")
    t0 = time.perf_counter()
    with staged_dir(src, "adding", copy_from=src) as tmp:
        config = IndexConfig(units=UnitConfig(kind=manifest.units.kind, **manifest.units.params), components=(),
                             corpus_format=corpus_format, skip_bad=skip_bad, field_map=field_map)
        digest = hashlib.sha256(manifest.corpus.sha256.encode())  # the new hash chains the old one
        writer = StoreWriter(tmp / STORE_FILE, append=True)
        old_units = writer.n_units
        try:
            stats = ingest(paths, writer, config, progress, digest)
        finally:
            writer.close()
        if writer.n_units == old_units:
            raise InputError(f"no new units ({stats.pages} pages read)", path=", ".join(paths))
        components = dict(manifest.components)
        components["store"] = components["store"].model_copy(
            update={"files": file_entries(tmp, [STORE_FILE]), "params": {"units": writer.n_units}})
        store = UnitStore(tmp / STORE_FILE)
        try:
            for name, comp in manifest.components.items():
                if name in ("dense", "dense-adapted"):
                    components[name] = _add_dense(tmp, comp, store, old_units, device, progress)
                elif name in ("bm25", "fm"):
                    components[name] = _rebuild(tmp, name, comp, store, progress)
        finally:
            store.close()
        c = manifest.corpus
        corpus_info = c.model_copy(update={
            "sources": c.sources + [str(Path(p).resolve()) for p in paths], "sha256": digest.hexdigest(),
            "pages": c.pages + stats.pages, "paragraphs": c.paragraphs + stats.paragraphs,
            "skipped": c.skipped + stats.skipped})
        new = manifest.model_copy(update={
            "corpus": corpus_info, "components": components,
            "units": manifest.units.model_copy(update={"count": writer.n_units}),
            "build_seconds": round(manifest.build_seconds + time.perf_counter() - t0, 3)})
        write_manifest(tmp, new)
    return new
