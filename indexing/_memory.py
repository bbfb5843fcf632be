"""``memory-adapted``: the training questions of a task, with their gold units, embedded for neighbour search.

``genret adapt`` (and ``genret train memory``) hands the training file's questions, each with the unit ids of its
gold passages in this index, and their embeddings under the index's dense encoder to ``write_query_memory``, which
writes them into the index as ``adapted/memory.f32`` (float32, one row a question) and ``adapted/memory.jsonl``
(``{"query", "units"}`` a line, in row order) and records the component ``memory-adapted`` (kind ``query-memory``)
with the files' checksums, the encoder it was embedded with (the dense component's name and a fingerprint of its
model: ``encoder_fingerprint``) and what it was built from.  At query time ``genret.retrieval``'s memory retriever
embeds a query with the same encoder and scores the gold units of its nearest training questions.  Written on a
staged copy under the index's write lock and swapped in whole, like the other adapted components; ``add`` keeps it
and renumbers its unit ids where replaced pages' units leave (``drop_memory_units``); ``write_adapted_dense``
embeds it again with a new encoder (``reembed_memory``).  ``read_query_memory`` checks the rows against the record
and the encoder against the one the index searches with now: a memory embedded with another is an error that says how
to rebuild it, not a silent mismatch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import IndexFormatError, NotFoundError, staged_dir, write_lock
from ._manifest import ADAPTED_DENSE, ADAPTED_DIR, Component, Manifest, file_entries, read_manifest, write_manifest
from ._verify import verify_files

ADAPTED_MEMORY = "memory-adapted"
MEMORY_KIND = "query-memory"
MEMORY_VECTORS = f"{ADAPTED_DIR}/memory.f32"
MEMORY_ROWS = f"{ADAPTED_DIR}/memory.jsonl"


@dataclass(frozen=True)
class QueryMemory:
    """Training questions (``queries``), the gold unit ids of each (``units``), their embeddings (``vectors``,
    float32, one row a question) and the dense component whose encoder embedded them (``encoder``)."""

    queries: tuple[str, ...]
    units: tuple[tuple[int, ...], ...]
    vectors: np.ndarray
    encoder: str

    def __post_init__(self) -> None:
        if not (len(self.queries) == len(self.units) == self.vectors.shape[0]):
            raise ValueError(f"a query memory needs one row a question: {len(self.queries)} queries, "
                             f"{len(self.units)} unit lists, {self.vectors.shape[0]} vectors")
        if self.vectors.ndim != 2:
            raise ValueError(f"memory vectors must be 2-D, got shape {self.vectors.shape}")


def encoder_fingerprint(component: Component) -> str:
    """A sha256 of what decides a dense component's embeddings of a text: its model's name and, for a model kept in
    the index (``dense-adapted``), its files' checksums — not the unit embeddings, which ``add`` extends."""
    model_dir = component.params.get("model_dir")
    files = {n: e.sha256 for n, e in component.files.items() if model_dir and n.startswith(f"{model_dir}/")}
    canonical = json.dumps({"model": component.model, "files": files}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_query_memory(index_dir: str | Path, memory: QueryMemory, *, trained: dict[str, Any]) -> Manifest:
    """Put ``memory`` into the index at ``index_dir`` as its ``memory-adapted`` component (replacing an earlier
    one); returns the new manifest.  ``memory.encoder`` must be the dense component the index searches with now
    (``dense_component``), whose fingerprint is recorded; ``trained``: what it was built from."""
    src = Path(index_dir)
    with write_lock(src):
        manifest = read_manifest(src)
        verify_files(src, manifest)
        current = _searched_encoder(manifest)
        if memory.encoder != current:
            raise ValueError(f"the memory was embedded with the {memory.encoder!r} encoder, but the index searches "
                             f"with {current!r}")
        n_units = manifest.components["store"].params.get("units")
        bad = sorted({u for row in memory.units for u in row if u < 0 or (n_units is not None and u >= n_units)})
        if bad:
            raise ValueError(f"memory unit ids outside the index ({n_units} units): {bad[:5]}")
        t0 = time.perf_counter()
        with staged_dir(src, "adapting", copy_from=src) as tmp:
            (tmp / ADAPTED_DIR).mkdir(exist_ok=True)
            files = _save(tmp, memory.queries, memory.units, memory.vectors)
            params = {"count": len(memory.queries), "dim": int(memory.vectors.shape[1]), "encoder": memory.encoder,
                      "encoder_fingerprint": encoder_fingerprint(manifest.components[memory.encoder]),
                      "trained": trained}
            component = Component(kind=MEMORY_KIND, params=params, model=manifest.components[memory.encoder].model,
                                  files=files, build_seconds=round(time.perf_counter() - t0, 3))
            new = manifest.model_copy(update={"components": {**manifest.components, ADAPTED_MEMORY: component}})
            write_manifest(tmp, new)
        return new


def read_query_memory(index) -> QueryMemory:
    """The ``memory-adapted`` component of the open ``index`` (its files were checked when it was opened).
    ``NotFoundError`` when it has none; ``IndexFormatError`` when the rows disagree with the record or the memory
    was embedded with an encoder other than the one the index searches with now (e.g. after ``genret train
    dense``): rebuild it with ``genret train memory`` or ``genret adapt --force``."""
    if not index.has(ADAPTED_MEMORY):
        raise NotFoundError(f"index {index.path} has no query memory (`genret adapt` or `genret train memory` "
                            "builds one)")
    comp = index.component(ADAPTED_MEMORY)
    if comp.kind != MEMORY_KIND:
        raise IndexFormatError(f"index {index.path}: component {ADAPTED_MEMORY!r} has kind {comp.kind!r}, not "
                               f"{MEMORY_KIND!r}")
    encoder = comp.params.get("encoder")
    current = _searched_encoder(index.manifest)
    fix = f"rebuild it: `genret train memory {index.path} TRAIN.jsonl` (or `genret adapt --force`)"
    if encoder != current or encoder_fingerprint(index.component(current)) != comp.params.get("encoder_fingerprint"):
        raise IndexFormatError(f"index {index.path}: the query memory was embedded with another encoder than the "
                               f"index's {current!r} searches with now; {fix}")
    count, dim = int(comp.params["count"]), int(comp.params["dim"])
    queries, units, vectors = _load(Path(index.path))
    if vectors.size != count * dim or len(queries) != count:
        raise IndexFormatError(f"index {index.path}: the query memory holds {len(queries)} rows and {vectors.size} "
                               f"floats, its record says {count} × {dim}; {fix}")
    return QueryMemory(queries, units, vectors.reshape(count, dim), encoder)


def _load(directory: Path) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], np.ndarray]:
    """``(questions, gold unit ids of each, vectors as one flat float32 array)`` of the memory files in
    ``directory``."""
    with open(directory / MEMORY_ROWS, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return (tuple(str(r["query"]) for r in rows), tuple(tuple(int(u) for u in r["units"]) for r in rows),
            np.fromfile(directory / MEMORY_VECTORS, dtype=np.float32))


def _save(directory: Path, queries: Sequence[str], units: Sequence[Sequence[int]], vectors: np.ndarray) -> dict:
    """Write the memory files into ``directory`` (a staged copy of the index); returns their manifest entries."""
    np.ascontiguousarray(vectors, dtype=np.float32).tofile(directory / MEMORY_VECTORS)
    with open(directory / MEMORY_ROWS, "w", encoding="utf-8") as f:
        for q, ids in zip(queries, units):
            f.write(json.dumps({"query": q, "units": list(ids)}, ensure_ascii=False) + "\n")
    return file_entries(directory, [MEMORY_VECTORS, MEMORY_ROWS])


def _searched_encoder(manifest: Manifest) -> str:
    """The dense component a search of an index with ``manifest`` reads by default (as ``dense_component``)."""
    if "dense" not in manifest.components:
        raise NotFoundError("the index has no dense component: a query memory is embedded with its encoder")
    return ADAPTED_DENSE if ADAPTED_DENSE in manifest.components else "dense"


def drop_memory_units(directory: Path, component: Component, removed: list[int]) -> Component:
    """The memory in ``directory`` (a staged copy of its index) after units ``removed`` left the index and the units
    after them moved up (``add`` replacing pages): each question's gold ids renumbered, removed ones dropped, and a
    question left with none dropped with its vector; returns the updated component."""
    gone = np.asarray(sorted(removed), dtype=np.int64)
    queries, units, vectors = _load(directory)
    vectors = vectors.reshape(len(queries), int(component.params["dim"]))
    kept: list[tuple[int, list[int]]] = []  # (row, its renumbered ids)
    for i, row in enumerate(units):
        ids = np.asarray(row, dtype=np.int64)
        ids = ids[~np.isin(ids, gone)]
        if len(ids):
            kept.append((i, (ids - np.searchsorted(gone, ids)).tolist()))
    files = _save(directory, [queries[i] for i, _ in kept], [ids for _, ids in kept], vectors[[i for i, _ in kept]])
    return component.model_copy(update={"params": {**component.params, "count": len(kept)}, "files": files})


def reembed_memory(directory: Path, component: Component, encoder_name: str, encoder: Component, *,
                   device: str = "auto", dtype: str = "auto") -> Component:
    """The memory in ``directory`` (a staged copy of its index) embedded again with the encoder of dense component
    ``encoder`` (named ``encoder_name``; its model files already in ``directory``) — ``write_adapted_dense`` calls
    this when it replaces the encoder a memory was embedded with; returns the updated component."""
    from ._dense import encoder_model
    from ._query_encoder import query_encoder

    queries, units, _ = _load(directory)
    model = query_encoder(encoder_model(directory, encoder), device, dtype)
    vectors = np.asarray(model.encode(list(queries)), dtype=np.float32) if queries else \
        np.zeros((0, model.dim), dtype=np.float32)
    files = _save(directory, queries, units, vectors)
    params = {**component.params, "count": len(queries), "dim": int(model.dim), "encoder": encoder_name,
              "encoder_fingerprint": encoder_fingerprint(encoder)}
    return component.model_copy(update={"params": params, "model": encoder.model, "files": files})
