"""Dense component: unit embeddings (raw float32, memory-mapped) and a FAISS index over them.

The embeddings file is kept beside the FAISS index so that the index can be rebuilt (another
FAISS type, other parameters: ``rebuild_dense``) without re-encoding.  Vectors are L2-normalised,
so inner product = cosine.

FAISS index types (``DenseConfig.index_type``):

* ``flat``: exact inner-product search (``IndexFlatIP``), 4·dim bytes a vector.
* ``hnsw``: an HNSW graph over the full vectors (``IndexHNSWFlat``, inner product): ``hnsw_m``
  links a node, ``ef_construction`` candidates while building, ``ef_search`` while searching.
* ``ivfpq``: ``IVF{nlist},PQ{m}x{bits}`` on inner product, trained on a sample of the stored
  embeddings; ``nprobe`` lists are visited a query.  ``pq_m`` bytes a vector (8-bit codes).
* ``factory``: any FAISS factory string (``DenseConfig.factory``, e.g. ``"OPQ64,IVF65536_HNSW32,PQ64"``; see
  ``_faiss``); ``"flat"``, ``"hnsw"`` and ``"ivfpq"`` given as the factory string are the types above.

The effective parameters (after the small-corpus fallbacks, which are logged) are recorded in the
component's ``params``; query-time knobs (``ef_search``, ``nprobe``) are read back from there and
may be overridden by the retriever.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core import (
    DEFAULT_DENSE_MODEL,
    ConfigError,
    IndexFormatError,
    NotFoundError,
    progress_bar,
    sha256_file,
    write_lock,
)
from ._encoder import Encoder, SentenceTransformerEncoder
from ._faiss import (
    MIN_POINTS_PER_CENTROID,
    SHORTCUTS,
    add_in_chunks,
    build_factory_index,
    factory_params,
    place_index,
    train_sample,
)
from ._manifest import Component, Manifest, file_entries, read_manifest, write_manifest
from ._store import UnitStore

log = logging.getLogger("genret")

DENSE_KIND = "dense-faiss"
EMBEDDINGS_FILE = "dense.f32"
FAISS_FILE = "dense.faiss"
ENCODE_CHUNK = 512  # units read and encoded together (sorted by length inside, for less padding)
IndexType = Literal["flat", "hnsw", "ivfpq", "factory"]

# faiss's k-means warns below MIN_POINTS_PER_CENTROID (39) training points a centroid; an IVF list count is capped
# to keep above it.


class DenseConfig(BaseModel):
    """Dense index settings: the encoder (model, device, batch size, text) and the FAISS index type.

    Only the parameters of the chosen ``index_type`` are used; ``rebuild_dense`` uses the FAISS fields
    alone (the vectors are the stored ones).  ``ivf_nlist=None`` means ≈ 4·√n, ``pq_m=None`` means dim/8
    (a divisor of dim), ``train_size=None`` means min(n, max(64·nlist, 39·2^pq_bits)).  ``factory``, a FAISS
    factory string, makes ``index_type`` ``factory`` (``flat``, ``hnsw``, ``ivfpq``: that type instead); the
    index's ``nprobe``, ``ef_search`` and ``train_size`` apply to it where it has inverted lists, a graph or
    something to train.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = DEFAULT_DENSE_MODEL
    device: str = "auto"
    dtype: str = Field("auto", description="what the encoder computes in: auto (bfloat16 where the CPU or GPU has "
                       "it natively, else int8 on a CPU), float32, bfloat16, float16, int8; vectors stay float32")
    batch_size: int | None = Field(None, ge=1, description="texts an encoder batch (default: 16 on a CPU, where "
                                   "small batches are fastest, 64 on a GPU)")
    index_type: IndexType = "flat"
    with_title: bool = Field(True, description="encode 'title\\ntext' rather than the text alone")
    hnsw_m: int = Field(32, ge=2, le=512, description="HNSW: links a node")
    ef_construction: int = Field(200, ge=1, description="HNSW: candidate list size while building")
    ef_search: int = Field(128, ge=1, description="HNSW: candidate list size while searching")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF-PQ: inverted lists (default ≈ 4·sqrt(n))")
    pq_m: int | None = Field(None, ge=1, description="IVF-PQ: sub-quantizers, must divide dim (default dim/8)")
    pq_bits: int = Field(8, ge=1, le=16, description="IVF-PQ: bits a sub-quantizer code")
    nprobe: int = Field(16, ge=1, description="IVF-PQ: lists visited a query")
    train_size: int | None = Field(None, ge=1, description="IVF-PQ: training sample (default: see class doc)")
    factory: str | None = Field(None, description="a FAISS factory string, e.g. 'OPQ64,IVF65536_HNSW32,PQ64' "
                                "(inner product); 'flat', 'hnsw' and 'ivfpq' are the index types")

    @model_validator(mode="before")
    @classmethod
    def _factory_sets_the_type(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("factory") is None:
            if isinstance(data, dict) and data.get("index_type") == "factory":
                raise ValueError("index_type 'factory' needs a factory string (factory=…)")
            return data
        factory = str(data["factory"]).strip()
        if not factory:
            raise ValueError("factory: an empty FAISS factory string")
        if factory.lower() in SHORTCUTS:
            return {**data, "index_type": factory.lower(), "factory": None}
        if data.get("index_type", "factory") not in ("factory", "flat"):  # flat: the field's default, given
            raise ValueError(f"give index_type {data['index_type']!r} or the factory string {factory!r}, not both")
        return {**data, "index_type": "factory", "factory": factory}


def encoder_model(index_dir: str | Path, component: Component) -> str:
    """The model a dense component's units were encoded with: the folder inside the index for an adapted
    component (``params.model_dir``), else its model name or path."""
    model_dir = component.params.get("model_dir")
    return str(Path(index_dir) / model_dir) if model_dir else str(component.model)


def recorded_config(component: Component, **settings: Any) -> DenseConfig:
    """The ``DenseConfig`` a dense component was built with — its text layout and FAISS settings, as its params
    record them — with ``settings`` (the model, device, dtype, batch size to encode with now) given."""
    fields = {k: v for k, v in component.params.items() if k in DenseConfig.model_fields and k not in settings}
    return DenseConfig(**fields, **settings)


def unit_text(title: str, text: str, with_title: bool) -> str:
    """The text the dense encoder (and BM25) reads for a unit: ``title\ntext``, or the text alone."""
    return f"{title}\n{text}" if with_title and title else text


# --------------------------------------------------------------------------------------------- parameters


def _auto_pq_m(dim: int) -> int:
    """dim/8 when 8 divides dim, else the largest divisor of dim not above dim/8 (at least 1)."""
    target = max(1, dim // 8)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


def faiss_params(config: DenseConfig, dim: int, n: int) -> dict[str, Any]:
    """The FAISS parameters an index of ``n`` vectors of dimension ``dim`` gets under ``config``.

    Returns the effective values recorded in the component (``index_type`` plus that type's
    parameters).  Small corpora fall back, with a log line, to fewer IVF lists (at most
    ``n // 39``) and fewer PQ bits (``2^bits ≤ n``).  Raises ``ConfigError`` for impossible
    combinations (``pq_m`` not dividing ``dim``, IVF-PQ over fewer than 2 vectors, a ``train_size``
    below what the lists and codes need).  Cheap: call it before encoding to fail early.
    """
    kind = config.index_type
    params: dict[str, Any] = {"index_type": kind}
    if kind == "flat":
        return params
    if kind == "factory":
        return factory_params(str(config.factory), dim, n, train_size=config.train_size, nprobe=config.nprobe,
                              ef_search=config.ef_search)
    if kind == "hnsw":
        params.update(hnsw_m=config.hnsw_m, ef_construction=config.ef_construction, ef_search=config.ef_search)
        return params
    pq_m = config.pq_m if config.pq_m is not None else _auto_pq_m(dim)
    if dim % pq_m:
        divisors = [d for d in range(1, dim + 1) if dim % d == 0 and d <= 128]
        raise ConfigError(f"pq_m={pq_m} does not divide the embedding dimension {dim}; "
                          f"use one of {divisors} (or leave it unset: {_auto_pq_m(dim)})")
    if n < 2:
        raise ConfigError(f"an IVF-PQ index needs at least 2 vectors to train on, the corpus has {n}: "
                          "use index_type 'flat'")
    wanted = config.ivf_nlist if config.ivf_nlist is not None else max(1, round(4 * math.sqrt(n)))
    nlist = max(1, min(wanted, n // MIN_POINTS_PER_CENTROID))
    if nlist < wanted:
        log.warning("dense ivfpq: %d vectors can train at most %d inverted lists (%d training points a list); "
                    "using ivf_nlist=%d instead of %d", n, nlist, MIN_POINTS_PER_CENTROID, nlist, wanted)
    bits = config.pq_bits
    if 2 ** bits > n:
        bits = int(math.floor(math.log2(n)))
        log.warning("dense ivfpq: %d vectors cannot train 2^%d PQ centroids; using pq_bits=%d", n,
                    config.pq_bits, bits)
    need = max(MIN_POINTS_PER_CENTROID * nlist if nlist > 1 else 1, 2 ** bits)
    if config.train_size is not None:
        if config.train_size < need:
            raise ConfigError(f"train_size={config.train_size} is too small for ivf_nlist={nlist} and "
                              f"pq_bits={bits}: it must be at least {need}")
        train = min(n, config.train_size)
    else:
        train = min(n, max(64 * nlist, MIN_POINTS_PER_CENTROID * 2 ** bits))
    params.update(ivf_nlist=nlist, pq_m=pq_m, pq_bits=bits, nprobe=config.nprobe, train_size=train)
    return params


# --------------------------------------------------------------------------------------------- building


def build_faiss(vectors: np.ndarray, params: dict[str, Any], *, device: str = "cpu", progress: bool = False) -> Any:
    """A CPU FAISS index over ``vectors`` (n × dim, L2-normalised float32; a memory map is fine) as
    ``params`` (from ``faiss_params``) describes, with its search knobs set.  IVF-PQ is trained and
    filled on the GPU when ``device`` is CUDA and faiss can (see ``place_index``), then copied back."""
    import faiss

    dim = int(vectors.shape[1])
    kind = params["index_type"]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        add_in_chunks(index, vectors, "flat index", progress)
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["ef_construction"])
        index.hnsw.efSearch = int(params["ef_search"])
        add_in_chunks(index, vectors, "hnsw graph", progress)
        return index
    if kind == "factory":
        return build_factory_index(vectors, params, device=device, progress=progress)
    if kind != "ivfpq":
        raise ConfigError(f"unknown dense index type {kind!r}: use flat, hnsw, ivfpq or a factory string")
    nlist, m, bits = int(params["ivf_nlist"]), int(params["pq_m"]), int(params["pq_bits"])
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x{bits}", faiss.METRIC_INNER_PRODUCT)
    ivfpq = faiss.downcast_index(index)  # an IndexIVFPQ
    ivfpq.nprobe = int(params["nprobe"])
    ivfpq.do_polysemous_training = False  # the factory's default: minutes of training that only Hamming filters use
    sample = train_sample(vectors, int(params["train_size"]))
    per_centroid = len(sample) // 2 ** bits
    if per_centroid < MIN_POINTS_PER_CENTROID:
        log.warning("dense ivfpq: %d training vectors for 2^%d PQ centroids (faiss advises %d a centroid); "
                    "codes will be coarse", len(sample), bits, MIN_POINTS_PER_CENTROID)
        ivfpq.pq.cp.min_points_per_centroid = max(1, per_centroid)  # one warning, ours, not one a sub-quantizer
    placed = place_index(index, device)
    t0 = time.perf_counter()
    placed.train(sample)
    log.info("dense ivfpq: trained IVF%d,PQ%dx%d on %d vectors in %.1f s", nlist, m, bits, len(sample),
             time.perf_counter() - t0)
    add_in_chunks(placed, vectors, "ivfpq codes", progress)
    return index if placed is index else faiss.index_gpu_to_cpu(placed)


def device_for_faiss(config: DenseConfig) -> str:
    """The device FAISS work may use: only trained indexes (IVF-PQ, factory strings) build on a GPU, so nothing
    else resolves (imports torch)."""
    if config.index_type not in ("ivfpq", "factory"):
        return "cpu"
    from ..core import resolve_device

    return resolve_device(config.device)


def build_dense(store: UnitStore, out_dir: Path, config: DenseConfig, *, progress: bool = True,
                encoder: Encoder | None = None) -> Component:
    """Encode every unit of ``store`` and write the embeddings and a FAISS index into ``out_dir``.

    The FAISS parameters are checked (``faiss_params``) before any encoding; ``ConfigError`` on a bad
    combination.
    """
    import faiss

    t0 = time.perf_counter()
    encoder = encoder or SentenceTransformerEncoder(config.model, config.device, config.dtype)
    plan = faiss_params(config, encoder.dim, len(store))
    emb_path = out_dir / EMBEDDINGS_FILE
    n = 0
    with open(emb_path, "wb") as fh, progress_bar(len(store), "encoding units", progress) as bar:
        for batch in store.iter_units(batch=ENCODE_CHUNK):
            texts = [unit_text(u.title, u.text, config.with_title) for u in batch]
            vecs = encoder.encode(texts, batch_size=config.batch_size)
            fh.write(vecs.tobytes())
            n += len(batch)
            bar.update(len(batch))
    if n != len(store):  # pragma: no cover - the store is read-only here
        plan = faiss_params(config, encoder.dim, n)
    vectors = np.memmap(emb_path, dtype=np.float32, mode="r", shape=(n, encoder.dim)) if n else \
        np.zeros((0, encoder.dim), np.float32)
    t1 = time.perf_counter()
    index = build_faiss(vectors, plan, device=device_for_faiss(config), progress=progress)
    faiss.write_index(index, str(out_dir / FAISS_FILE))
    faiss_seconds = round(time.perf_counter() - t1, 3)
    del vectors, index
    log.info("dense: %d vectors of dim %d, %s index", n, encoder.dim, plan.get("factory") or plan["index_type"])
    return Component(
        kind=DENSE_KIND, model=encoder.model_id,
        params={"dim": encoder.dim, "metric": "inner_product", "normalized": True, "with_title": config.with_title,
                "count": n, "encoder_dtype": getattr(encoder, "dtype", None),
                **plan, "faiss_file": FAISS_FILE, "faiss_seconds": faiss_seconds},
        files=file_entries(out_dir, [EMBEDDINGS_FILE, FAISS_FILE]),
        build_seconds=round(time.perf_counter() - t0, 3),
    )


_BASE_PARAMS = ("dim", "metric", "normalized", "with_title", "count", "encoder_dtype")


def rebuild_dense(index_dir: str | Path, config: DenseConfig, *, progress: bool = False) -> Manifest:
    """Rebuild the FAISS index of the index directory ``index_dir`` from its stored embeddings (no encoding),
    as ``config``'s FAISS fields say (``index_type`` and its parameters; the encoder fields are ignored:
    the vectors, model and title setting stay those recorded).  Returns the new manifest.

    The embeddings file is checked against the manifest first (size and sha256; ``IndexFormatError``)
    and left byte-identical.  The new index is written under a new name (``dense.<generation>.faiss``),
    then the manifest is replaced atomically (``write_manifest``) with the new parameters and
    checksums, and only then is the old FAISS file removed: an interruption leaves the old, consistent
    index (and at worst an unreferenced file).  Processes that already loaded the old index keep
    working; one that read the old manifest but had not yet opened its FAISS file must reopen the
    index.  Holds the index's write lock throughout.  ``ConfigError`` for bad parameters (before any work),
    ``NotFoundError`` when the index has no dense component.
    """
    with write_lock(Path(index_dir)):
        return _rebuild_dense(Path(index_dir), config, progress)


def _rebuild_dense(index_dir: Path, config: DenseConfig, progress: bool) -> Manifest:
    import faiss

    t0 = time.perf_counter()
    manifest = read_manifest(index_dir)
    comp = manifest.components.get("dense")
    if comp is None:
        raise NotFoundError(f"index {index_dir} has no 'dense' component to rebuild; build it with "
                            "`genret index … --dense`")
    if comp.kind != DENSE_KIND:
        raise IndexFormatError(f"{index_dir}: component 'dense' is of kind {comp.kind!r}, not {DENSE_KIND!r}")
    dim, n = int(comp.params["dim"]), int(comp.params["count"])
    plan = faiss_params(config, dim, n)
    if (comp.model and config.model != comp.model) or config.with_title != comp.params.get("with_title", True):
        log.info("rebuild-dense: the stored vectors (model %s, with_title=%s) are reused; the encoder settings "
                 "of the config are ignored", comp.model, comp.params.get("with_title"))
    _check_embeddings(index_dir, comp)
    vectors = load_embeddings(index_dir, comp)
    t1 = time.perf_counter()
    index = build_faiss(vectors, plan, device=device_for_faiss(config), progress=progress)
    del vectors
    old_name = faiss_file(comp)
    generation = int(comp.params.get("faiss_generation", 0)) + 1
    new_name = f"dense.{generation}.faiss"
    tmp = index_dir / f".{new_name}.tmp-{os.getpid()}"
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, index_dir / new_name)
    finally:
        tmp.unlink(missing_ok=True)
    del index
    faiss_seconds = round(time.perf_counter() - t1, 3)
    params = {k: comp.params[k] for k in _BASE_PARAMS if k in comp.params}
    params.update(plan, faiss_file=new_name, faiss_generation=generation, faiss_seconds=faiss_seconds)
    files = {EMBEDDINGS_FILE: comp.files[EMBEDDINGS_FILE], **file_entries(index_dir, [new_name])}
    manifest.components["dense"] = Component(kind=DENSE_KIND, params=params, model=comp.model, files=files,
                                             build_seconds=round(time.perf_counter() - t0, 3))
    try:
        write_manifest(index_dir, manifest)
    except BaseException:
        (index_dir / new_name).unlink(missing_ok=True)
        raise
    if old_name != new_name:
        (index_dir / old_name).unlink(missing_ok=True)
    log.info("rebuild-dense: %s -> %s index (%s) over %d vectors in %.1f s", comp.params.get("index_type"),
             plan["index_type"], new_name, n, faiss_seconds)
    return manifest


def _check_embeddings(index_dir: Path, comp: Component) -> None:
    entry = comp.files.get(EMBEDDINGS_FILE)
    path = index_dir / EMBEDDINGS_FILE
    if entry is None or not path.is_file():
        raise IndexFormatError(f"{index_dir}: the dense embeddings {EMBEDDINGS_FILE} are missing")
    expected = int(comp.params["count"]) * int(comp.params["dim"]) * 4
    size = path.stat().st_size
    if size != entry.size or size != expected:
        raise IndexFormatError(f"{index_dir}: {EMBEDDINGS_FILE} has {size} bytes, the manifest says {entry.size} "
                               f"({expected} for its count × dim)")
    if sha256_file(path) != entry.sha256:
        raise IndexFormatError(f"{index_dir}: {EMBEDDINGS_FILE} checksum mismatch (corrupt or altered)")


# --------------------------------------------------------------------------------------------- loading


def faiss_file(component: Component) -> str:
    """The name of the component's FAISS file (``dense.faiss`` unless rebuilt)."""
    return str(component.params.get("faiss_file", FAISS_FILE))


def load_embeddings(index_dir: Path, component: Component) -> np.ndarray:
    """The stored unit embeddings as a read-only memory map of shape (units, dim)."""
    n, dim = component.params["count"], component.params["dim"]
    if n == 0:
        return np.zeros((0, dim), np.float32)
    name = component.params.get("embeddings_file", EMBEDDINGS_FILE)
    return np.memmap(Path(index_dir) / name, dtype=np.float32, mode="r", shape=(n, dim))


def load_faiss(index_dir: Path, component: Component):
    """Read the component's FAISS index, on the CPU (memory-mapped where FAISS allows it)."""
    import faiss

    return faiss.read_index(str(Path(index_dir) / faiss_file(component)), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
