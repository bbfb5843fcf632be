"""``build_index``: corpus → unit store → components, written atomically into one directory."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..core import GenretError, InputError, progress_bar, staged_dir, write_lock
from ._bm25 import BM25Config, build_bm25
from ._corpus import Page, ReadStats, corpus_file, read_corpus
from ._dense import DenseConfig, build_dense
from ._manifest import Component, CorpusInfo, Manifest, UnitsInfo, file_entries, is_index_dir, write_manifest
from ._store import STORE_FILE, StoreWriter, UnitStore
from ._units import UnitConfig, split_page
from .fm import FMConfig, build_fm, unit_tokens

log = logging.getLogger("genret")

STORE_KIND = "unit-store-sqlite"


class IndexConfig(BaseModel):
    """Everything ``genret index`` needs: units, which components, and each component's section."""

    model_config = ConfigDict(extra="forbid")
    units: UnitConfig = Field(default_factory=UnitConfig)
    components: tuple[str, ...] = Field(default=("dense", "bm25", "fm"), description="components to build")
    dense: DenseConfig = Field(default_factory=DenseConfig)
    bm25: BM25Config = Field(default_factory=BM25Config)
    fm: FMConfig = Field(default_factory=FMConfig)
    corpus_format: str = Field("auto", pattern="^(auto|jsonl|kilt|pyserini|beir|tsv)$")
    field_map: dict[str, str] = Field(default_factory=dict, description="page field -> record key or TSV column")
    skip_bad: bool = False


# Component name -> builder(store, out_dir, config, progress, early) -> Component.  New index kinds register
# here.  ``early`` is what the component's entry in EARLY_WORK made of the units while the store was written
# (None when it has none or declined).
COMPONENT_BUILDERS: dict[str, Callable[[UnitStore, Path, IndexConfig, bool, Any], Component]] = {
    "dense": lambda store, out, cfg, progress, early: build_dense(store, out, cfg.dense, progress=progress),
    "bm25": lambda store, out, cfg, progress, early: build_bm25(store, out, cfg.bm25, progress=progress),
    "fm": lambda store, out, cfg, progress, early: build_fm(store, out, cfg.fm, progress=progress, tokens=early),
}


class EarlyWork(Protocol):
    """Work a component starts on the units while the corpus is read (the FM-index tokenizes them on threads
    that release the GIL, next to the reader): ``add(title, texts)`` gets each page's unit texts in unit order;
    the builder consumes it; ``close()`` frees it, built or not."""

    def add(self, title: str, texts: Iterable[str]) -> None: ...

    def close(self) -> None: ...


# Component name -> factory(config) -> EarlyWork or None (not worth it for this configuration).
EARLY_WORK: dict[str, Callable[[IndexConfig], EarlyWork | None]] = {
    "fm": lambda cfg: unit_tokens(cfg.fm),
}


def available_components() -> tuple[str, ...]:
    return tuple(COMPONENT_BUILDERS)


def _version() -> str:
    from genret import __version__

    return __version__


def ingest(paths: list[str], writer: StoreWriter, config: IndexConfig, progress: bool,
           digest=None, early: Iterable[EarlyWork] = (), keep: Callable[[Page], bool] | None = None) -> ReadStats:
    """Stream corpus pages into ``writer`` (units cut as ``config.units`` says), updating ``digest``; each of
    ``early`` sees every page's unit texts too.  ``keep``: whether a page goes in (the stats count every page
    read)."""
    stats = ReadStats()
    digest = digest if digest is not None else hashlib.sha256()
    with progress_bar(None, "reading corpus", progress) as bar:
        for page in read_corpus(paths, fmt=config.corpus_format, skip_bad=config.skip_bad, stats=stats,
                                field_map=config.field_map):
            if keep is not None and not keep(page):
                bar.update(1)
                continue
            canon = json.dumps([page.page_id, page.title, page.paragraphs], ensure_ascii=False)
            digest.update(canon.encode("utf-8"))
            digest.update(b"\n")
            units = list(split_page(page, config.units))
            writer.add(page.page_id, page.title, len(page.paragraphs), page.source, page.line, units)
            for work in early:
                work.add(page.title, [u.text for u in units])
            bar.update(1)
    if stats.skipped:
        log.warning("skipped %d bad record(s); first: %s", stats.skipped, "; ".join(stats.errors[:3]))
    return stats


def write_store(paths: list[str], tmp: Path, config: IndexConfig, progress: bool,
                early: Iterable[EarlyWork] = ()) -> tuple[CorpusInfo, int]:
    """Read the corpus once into ``tmp``'s unit store (``InputError`` when it yields no unit): its info and its
    unit count; ``early`` see the units on the way."""
    digest = hashlib.sha256()
    writer = StoreWriter(tmp / STORE_FILE)
    try:
        stats = ingest(paths, writer, config, progress, digest, early)
    finally:
        writer.close()
    if writer.n_units == 0:
        raise InputError(f"the corpus yielded no units ({stats.pages} pages read)", path=", ".join(paths))
    info = CorpusInfo(sources=[str(Path(p).resolve()) for p in paths], sha256=digest.hexdigest(),
                      pages=stats.pages, paragraphs=stats.paragraphs, skipped=stats.skipped)
    return info, writer.n_units


def build_index(corpus: str | Path | Iterable[str | Path], out: str | Path, config: IndexConfig | None = None,
                *, force: bool = False, progress: bool = True) -> Manifest:
    """Build an index directory at ``out`` from corpus file(s).

    Everything is written into a temporary sibling directory that is renamed to ``out`` only when
    complete, so a failed or interrupted build leaves no half index.  An existing ``out`` is replaced
    only with ``force``.
    """
    config = config or IndexConfig()
    paths = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(p) for p in corpus]
    if not paths:
        raise GenretError("no corpus file given")
    unknown = [c for c in config.components if c not in COMPONENT_BUILDERS]
    if unknown:
        raise GenretError(f"unknown index component(s) {unknown}; available: {list(COMPONENT_BUILDERS)}")
    out = Path(out)
    for p in paths:
        corpus_file(p)  # a file, or a BEIR folder holding corpus.jsonl
    with write_lock(out):
        check_replaceable(out, force)
        return _build(paths, out, config, progress)


def check_replaceable(out: Path, force: bool) -> None:
    """``out`` may be written: it does not exist, or ``force`` is given and it is an empty folder or an index."""
    if not out.exists() and not out.is_symlink():
        return
    flags = {"force=True": "--force"}  # the CLI's spelling (GenretError.cli_message)
    if not force:
        raise GenretError(f"{out} already exists; pass force=True to replace it", flags=flags)
    if not out.is_dir() or out.is_symlink():
        raise GenretError(f"{out} is not a folder; force=True replaces only a genret index or an empty folder",
                          flags=flags)
    entries = sorted(p.name for p in out.iterdir())
    if entries and not is_index_dir(out):
        shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
        raise GenretError(f"{out} is not a genret index (it holds {shown}); force=True replaces only a genret index "
                          "or an empty folder: remove it yourself or write the index elsewhere", flags=flags)


def _build(paths: list[str], out: Path, config: IndexConfig, progress: bool) -> Manifest:
    t0 = time.perf_counter()
    early: dict[str, EarlyWork] = {}
    with staged_dir(out, "building") as tmp:
        try:
            for name in config.components:
                work = EARLY_WORK[name](config) if name in EARLY_WORK else None
                if work is not None:
                    early[name] = work
            corpus_info, n_units = write_store(paths, tmp, config, progress, early.values())
            components = {"store": Component(kind=STORE_KIND, files=file_entries(tmp, [STORE_FILE]),
                                             params={"units": n_units})}
            store = UnitStore(tmp / STORE_FILE)
            built: dict[str, Component] = {}
            try:
                # components with early work first: what it holds (the FM-index's tokens) is freed sooner
                for name in sorted(config.components, key=lambda n: n not in early):
                    log.info("building component %s", name)
                    built[name] = COMPONENT_BUILDERS[name](store, tmp, config, progress, early.get(name))
                    if name in early:
                        early.pop(name).close()
            finally:
                store.close()
            components.update((name, built[name]) for name in config.components)
        finally:
            for work in early.values():
                work.close()
        manifest = write_build_manifest(tmp, config, corpus_info, n_units, components, t0)
    return manifest


def write_build_manifest(tmp: Path, config: IndexConfig, corpus: CorpusInfo, n_units: int,
                         components: dict[str, Component], t0: float) -> Manifest:
    """The manifest of a build started at ``t0`` (``time.perf_counter``), written into its staging folder."""
    manifest = Manifest(
        genret_version=_version(), created=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - t0, 3), corpus=corpus,
        units=UnitsInfo(kind=config.units.kind, params=config.units.params(), count=n_units),
        components=components,
    )
    write_manifest(tmp, manifest)
    return manifest
