"""FAISS around the dense component: where an index runs (``place_index``: CPU or GPU), its query-time knobs
(``configure_search``), indexes made from any FAISS factory string (``DenseConfig.factory``), and what every build
shares (a training sample, adding vectors in chunks with progress).

A factory string is what FAISS users write — ``"HNSW32,Flat"``, ``"IVF4096,PQ48"``, ``"OPQ64,IVF65536_HNSW32,PQ64"``
— always with inner product (the vectors are L2-normalised: inner product = cosine).  ``factory_params`` checks it
by making the empty index (cheap: before any encoding) and records what search needs: ``nprobe`` when the index
has inverted lists, ``ef_search`` when it is an HNSW graph, and the training sample size when it must be trained
(``train_size``, else min(n, max(64·nlist, 39·256)).  ``flat``, ``hnsw`` and ``ivfpq`` stay genret's own types
(``DenseConfig.index_type``), also accepted as factory "strings".
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..core import ConfigError, progress_bar
from ._manifest import Component

log = logging.getLogger("genret")

SHORTCUTS = ("flat", "hnsw", "ivfpq")
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means warns below this many training points a centroid
_ADD_CHUNK = 65536


def place_index(index: Any, device: str) -> Any:
    """``index`` on the GPU when ``device`` (a resolved device: ``cpu``, ``cuda``, ``cuda:N``, ``mps``) is CUDA
    and this faiss has GPU support with a GPU visible; else ``index`` itself, on the CPU.

    HNSW has no GPU version in faiss and stays on the CPU; a failed copy (e.g. PQ parameters the GPU
    does not support) also leaves it there.  Either way one log line says where the index is.  The
    GPU index keeps its ``StandardGpuResources`` alive (``referenced_objects``).  Importable and
    callable without a GPU.
    """
    import faiss

    if not device.startswith("cuda"):
        log.info("faiss index on cpu (device %s)", device)
        return index
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        log.warning("faiss index on cpu: device %s asked for, but this faiss has no GPU support "
                    "(install faiss-gpu for GPU search)", device)
        return index
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        log.info("faiss index on cpu: HNSW has no GPU version in faiss (device %s)", device)
        return index
    gpu = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        res = faiss.StandardGpuResources()
        placed = faiss.index_cpu_to_gpu(res, gpu, index)
    except (RuntimeError, AssertionError) as exc:
        log.warning("faiss index on cpu: moving it to %s failed: %s", device, exc)
        return index
    try:
        placed.referenced_objects = [res]
    except AttributeError:  # pragma: no cover - SWIG proxies take new attributes
        pass
    log.info("faiss index on gpu (%s)", device)
    return placed


def configure_search(index: Any, component: Component, *, ef_search: int | None = None,
                     nprobe: int | None = None) -> dict[str, int]:
    """Set the query-time knobs of a CPU FAISS index: ``ef_search`` (HNSW) or ``nprobe`` (IVF), each the
    given value or, when None, the one recorded in ``component``.  Returns the values set (empty for flat).
    Call before ``place_index`` (a GPU copy takes ``nprobe`` with it)."""
    import faiss

    kind = component.params.get("index_type", "flat")
    if kind == "factory":
        return factory_knobs(index, component.params, ef_search, nprobe)
    if kind == "hnsw":
        ef = int(ef_search if ef_search is not None else component.params.get("ef_search", 16))
        faiss.downcast_index(index).hnsw.efSearch = ef
        return {"ef_search": ef}
    if kind == "ivfpq":
        probe = int(nprobe if nprobe is not None else component.params.get("nprobe", 1))
        faiss.extract_index_ivf(index).nprobe = probe
        return {"nprobe": probe}
    return {}


# --------------------------------------------------------------------------------------------- factory strings


def make_factory_index(factory: str, dim: int) -> Any:
    """The empty FAISS index ``factory`` describes (inner product), or ``ConfigError`` saying why not."""
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS cannot make an index from the factory string {factory!r} (dimension {dim}): "
                          f"{_faiss_reason(exc)}") from None


def _parts(index: Any) -> tuple[Any, Any | None, bool]:
    """``(the index under any pre-transform, its IVF part or None, whether it is an HNSW graph)``."""
    import faiss

    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    return inner, ivf, isinstance(inner, faiss.IndexHNSW)


def factory_params(factory: str, dim: int, n: int, *, train_size: int | None, nprobe: int,
                   ef_search: int) -> dict[str, Any]:
    """The parameters recorded for a factory-string index of ``n`` vectors of dimension ``dim``."""
    index = make_factory_index(factory, dim)
    _, ivf, hnsw = _parts(index)
    params: dict[str, Any] = {"index_type": "factory", "factory": factory}
    if ivf is not None:
        params["nprobe"] = nprobe
    if hnsw:
        params["ef_search"] = ef_search
    if not index.is_trained:
        nlist = int(ivf.nlist) if ivf is not None else 1
        if n < nlist:
            raise ConfigError(f"the FAISS index {factory!r} has {nlist} inverted lists to train and the corpus "
                              f"only {n} vectors: use fewer lists (IVF{max(1, n // MIN_POINTS_PER_CENTROID)},…)")
        if n < 1:
            raise ConfigError(f"the FAISS index {factory!r} must be trained and the corpus has no vectors")
        params["train_size"] = min(n, train_size or max(64 * nlist, MIN_POINTS_PER_CENTROID * 256))
    return params


def factory_knobs(index: Any, params: dict, ef_search: int | None, nprobe: int | None) -> dict[str, int]:
    inner, ivf, hnsw = _parts(index)
    out: dict[str, int] = {}
    if ivf is not None:
        ivf.nprobe = out["nprobe"] = int(nprobe if nprobe is not None else params.get("nprobe", 1))
    if hnsw:
        inner.hnsw.efSearch = out["ef_search"] = int(ef_search if ef_search is not None
                                                     else params.get("ef_search", 16))
    return out


def _train_factory(index: Any, sample, factory: str) -> None:
    """Train a factory-string index (on the device it was placed on) on ``sample``.  FAISS's refusals become
    ``ConfigError``; what its k-means prints on stderr (a line per sub-quantizer and iteration when the sample is
    small) becomes one log line per distinct message."""
    try:
        with _stderr_to_log(f"dense factory {factory}"):
            index.train(sample)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS could not train {factory!r} on {len(sample)} vectors: {_faiss_reason(exc)}") \
            from None


@contextmanager
def _stderr_to_log(what: str) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file while the block runs (C++ code writes there, not to
    ``sys.stderr``); then each distinct line is logged once, with its count."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = [ln.strip() for ln in tmp.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    for line, count in Counter(lines).items():
        log.warning("%s: faiss: %s%s", what, line, f" (×{count})" if count > 1 else "")


def _faiss_reason(exc: BaseException) -> str:
    """The useful end of a FAISS error ("Error in <signature> at <file>:<line>: Error: '<what>' failed: …")."""
    text = " ".join(str(exc).split())
    return text.rsplit("Error: ", 1)[-1] or text


def build_factory_index(vectors: np.ndarray, params: dict[str, Any], *, device: str = "cpu",
                        progress: bool = False) -> Any:
    """The CPU index ``params["factory"]`` describes over ``vectors``, trained (on the GPU when ``device`` is CUDA
    and faiss can) on ``params["train_size"]`` of them where it must be, its search knobs set."""
    import faiss

    factory = str(params["factory"])
    index = make_factory_index(factory, int(vectors.shape[1]))
    factory_knobs(index, params, None, None)
    placed = index if index.is_trained else place_index(index, device)
    if not index.is_trained:
        t0 = time.perf_counter()
        sample = train_sample(vectors, int(params["train_size"]))
        _train_factory(placed, sample, factory)
        log.info("dense factory %s: trained on %d vectors in %.1f s", factory, len(sample), time.perf_counter() - t0)
    add_in_chunks(placed, vectors, f"{factory} index", progress)
    return index if placed is index else faiss.index_gpu_to_cpu(placed)


# --------------------------------------------------------------------------------------------- adding vectors


def train_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` rows of ``vectors`` drawn without replacement (in storage order), as a contiguous array."""
    n = len(vectors)
    if size >= n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def add_in_chunks(index: Any, vectors: np.ndarray, desc: str, progress: bool) -> None:
    n = len(vectors)
    with progress_bar(n, desc, progress and n > _ADD_CHUNK) as bar:
        for start in range(0, n, _ADD_CHUNK):
            chunk = np.ascontiguousarray(vectors[start:start + _ADD_CHUNK], dtype=np.float32)
            index.add(chunk)
            bar.update(len(chunk))
