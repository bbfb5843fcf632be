"""``build_index_ray``: ``build_index`` with Ray as the executor — the same index directory, built by a cluster.

The corpus is read once, on the driver, into the unit store (units and their KILT provenance), exactly as
``build_index`` does; everything after it runs on Ray, concurrently:

- **dense**: a Ray Data pipeline over the unit ids, ``map_batches`` on an actor pool (``workers`` actors, each with
  the encoder loaded once; one GPU each where the cluster has GPUs), batches as ``build_dense`` cuts them; the
  driver writes each batch's vectors at their unit ids into ``dense.f32`` and builds the FAISS index over it;
- **fm**: one Ray task per shard (``shards``): it reads its contiguous unit range from the store, tokenizes it and
  builds that shard's FM-index, written into a private folder and renamed into ``fm/shard-NNN`` (a retried task,
  after a worker died, rewrites its shard whole); shard ``i`` holds the units ``build_fm`` gives it
  (``n·i/shards`` to ``n·(i+1)/shards``), so the arrays are those of ``genret index --fm-shards N``;
- **bm25**: one Ray task over the whole store — built **once**, not per shard: BM25's idf and average length are
  collection statistics, and Lucene keeps them per index, so per-shard indexes would score differently from a
  single one (and Anserini indexes with threads already).

The index directory (staged beside ``out`` and swapped in whole; the unit store, each shard and every file listed
in the manifest with its size and sha256) must be on storage every node sees (NFS, a shared volume); on a local
cluster any folder is.  Its manifest is the one ``build_index`` writes: every loader, ``genret verify`` and
``genret serve`` read it as any other index.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..core import GenretError, progress_bar, resolve_dtype, staged_dir, write_lock
from ._build import STORE_KIND, IndexConfig, check_replaceable, write_build_manifest, write_store
from ._corpus import corpus_file
from ._dense import (
    DENSE_KIND,
    EMBEDDINGS_FILE,
    ENCODE_CHUNK,
    FAISS_FILE,
    build_faiss,
    device_for_faiss,
    faiss_params,
    unit_text,
)
from ._manifest import Component, Manifest, file_entries
from ._ray_cluster import ray_session
from ._store import STORE_FILE, UnitStore
from .fm import FM_DIR, TOKENIZER_DIR, FMConfig, build_shard, encode_range, fm_component, shard_dir

log = logging.getLogger("genret")

RAY_COMPONENTS = ("dense", "bm25", "fm")


def shard_cuts(n_units: int, shards: int) -> list[int]:
    """Unit-id boundaries of ``shards`` contiguous shards (``build_fm``'s)."""
    return [n_units * k // shards for k in range(shards + 1)]


def build_index_ray(corpus: str | Path | Iterable[str | Path], out: str | Path, config: IndexConfig | None = None,
                    *, address: str | None = None, shards: int = 1, workers: int | None = None,
                    num_cpus: int | None = None, force: bool = False, progress: bool = True,
                    max_retries: int = 3) -> Manifest:
    """Build the index of ``corpus`` at ``out`` on Ray (see the module doc): ``address`` of a cluster (None: a
    local one of ``num_cpus`` CPUs, or the session already connected), ``shards`` FM-index shards (one task
    each), ``workers`` encoder actors (default: the cluster's GPUs, else half its CPUs, at least 1).  A task whose
    worker dies is retried up to ``max_retries`` times."""
    config = config or IndexConfig()
    if shards < 1:
        raise GenretError("--shards must be at least 1")
    unknown = [c for c in config.components if c not in RAY_COMPONENTS]
    if unknown:
        raise GenretError(f"unknown index component(s) {unknown}; available: {list(RAY_COMPONENTS)}")
    config = config.model_copy(update={"fm": config.fm.model_copy(update={"shards": shards})})
    paths = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(p) for p in corpus]
    if not paths:
        raise GenretError("no corpus file given")
    for p in paths:
        corpus_file(p)
    out = Path(out)
    with write_lock(out):
        check_replaceable(out, force)
        with ray_session(address, num_cpus=num_cpus) as ray:
            return _build(ray, paths, out, config, workers, progress, max_retries)


def _build(ray: Any, paths: list[str], out: Path, config: IndexConfig, workers: int | None, progress: bool,
           max_retries: int) -> Manifest:
    t0 = time.perf_counter()
    with staged_dir(out, "building") as tmp:
        corpus_info, n_units = write_store(paths, tmp, config, progress)
        components = {"store": Component(kind=STORE_KIND, files=file_entries(tmp, [STORE_FILE]),
                                         params={"units": n_units})}
        cuts = shard_cuts(n_units, config.fm.shards)
        pending: dict[Any, str] = {}
        if "fm" in config.components:
            task = ray.remote(max_retries=max_retries, retry_exceptions=False)(fm_shard_task)
            for i in range(config.fm.shards):
                pending[task.remote(str(tmp), i, cuts[i], cuts[i + 1], config.fm)] = f"fm:{i}"
        if "bm25" in config.components:
            task = ray.remote(max_retries=max_retries)(bm25_task)
            pending[task.remote(str(tmp), config.bm25)] = "bm25"
        per_component = {c: n_units for c in config.components}
        with progress_bar(n_units * len(config.components), "building on ray (units × components)", progress) as bar:
            try:
                if "dense" in config.components:
                    components["dense"] = _dense(ray, tmp, n_units, config, workers, bar)
                fm_parts = _collect(ray, pending, bar, cuts, per_component)
            except BaseException:  # a part failed for good (or ^C): the others would write into a removed folder
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        if "bm25" in config.components:
            components["bm25"] = fm_parts.pop("bm25")
        if "fm" in config.components:
            components["fm"] = _fm_component(tmp, config.fm, n_units, [fm_parts[f"fm:{i}"]
                                                                         for i in range(config.fm.shards)])
        ordered = {"store": components["store"], **{c: components[c] for c in config.components}}
        manifest = write_build_manifest(tmp, config, corpus_info, n_units, ordered, t0)
    log.info("ray build: %d units, %d fm shard(s), %s in %.1f s", n_units, config.fm.shards,
             "+".join(config.components), time.perf_counter() - t0)
    return manifest


def _collect(ray: Any, pending: dict[Any, str], bar: Any, cuts: list[int], per_component: dict) -> dict[str, Any]:
    """Wait for the FM and BM25 tasks, advancing the bar as each finishes."""
    done: dict[str, Any] = {}
    left = list(pending)
    while left:
        ready, left = ray.wait(left, num_returns=1)
        name = pending[ready[0]]
        done[name] = ray.get(ready[0])
        if name.startswith("fm:"):
            i = int(name[3:])
            bar.update(cuts[i + 1] - cuts[i])
        else:
            bar.update(per_component.get(name, 0))
    return done


# --------------------------------------------------------------------------------------------- dense


FAIL_ONCE_ENV = "GENRET_RAY_FAIL_ONCE_DIR"


def fail_once(step: str) -> None:
    """Fault injection for the tests: when ``$GENRET_RAY_FAIL_ONCE_DIR/<step>`` exists, remove it and kill this
    worker process (as a dying node would), once; Ray must retry the work elsewhere."""
    folder = os.environ.get(FAIL_ONCE_ENV)
    if not folder:
        return
    try:
        os.unlink(Path(folder) / step)
    except FileNotFoundError:
        return
    log.warning("fault injection: killing worker pid %d during %s", os.getpid(), step)
    os._exit(1)


class EncodeUnits:
    """A Ray Data actor: the encoder, loaded once; a batch of unit ids in, their vectors out."""

    def __init__(self, store_path: str, model: str, device: str, batch_size: int | None, with_title: bool,
                 dtype: str = "auto") -> None:
        from ._encoder import SentenceTransformerEncoder

        self.store = UnitStore(Path(store_path))
        self.encoder = SentenceTransformerEncoder(model, device, dtype)
        self.batch_size, self.with_title = batch_size, with_title

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fail_once("dense")
        ids = [int(i) for i in batch["data"]]
        texts = [unit_text(u.title, u.text, self.with_title) for u in self.store.get(ids)]
        vecs = self.encoder.encode(texts, batch_size=self.batch_size)
        return {"id": np.asarray(ids, dtype=np.int64), "vec": np.asarray(vecs, dtype=np.float32)}


def _encoder_pool(ray: Any, workers: int | None) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU where there are GPUs, else ``workers`` (default half the CPUs)."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus:
        return (workers or gpus), 1.0
    return (workers or max(1, int(res.get("CPU", 2)) // 2)), 0.0


def _dense(ray: Any, tmp: Path, n_units: int, config: IndexConfig, workers: int | None, bar: Any) -> Component:
    import faiss

    from ._encoder import SentenceTransformerEncoder

    t0 = time.perf_counter()
    cfg = config.dense
    probe = SentenceTransformerEncoder(cfg.model, "cpu")  # the dimension and model id, checked before any work
    dim, model_id = probe.dim, probe.model_id
    del probe
    plan = faiss_params(cfg, dim, n_units)
    actors, gpus = _encoder_pool(ray, workers)
    device = "cuda" if gpus else "cpu"
    chunk = ENCODE_CHUNK  # build_dense's chunks: encoder batches sorted by length inside each
    import ray.data  # noqa: F401 - Ray Data is part of the extra

    # the unit ids as in-memory blocks of whole chunks (no read tasks: an actor pool holding every CPU would starve
    # them), at most ~1,000 blocks
    per_block = chunk * max(1, -(-n_units // (chunk * 1000)))
    ids = np.arange(n_units, dtype=np.int64)
    ds = ray.data.from_numpy([ids[a:a + per_block] for a in range(0, n_units, per_block)])
    gpu_args = {"num_gpus": gpus} if gpus else {}
    # an actor pool restarts a dead actor and retries its batches (Ray Data's defaults for actors)
    ds = ds.map_batches(EncodeUnits, batch_size=chunk, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=actors), **gpu_args,
                        fn_constructor_args=(str(tmp / STORE_FILE), cfg.model, device, cfg.batch_size,
                                             cfg.with_title, cfg.dtype))
    emb_path = tmp / EMBEDDINGS_FILE
    mm = np.memmap(emb_path, dtype=np.float32, mode="w+", shape=(n_units, dim))
    seen = np.zeros(n_units, dtype=bool)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids = batch["id"]
        mm[ids] = batch["vec"]
        seen[ids] = True
        bar.update(len(ids))
    mm.flush()
    del mm
    if not seen.all():
        raise GenretError(f"ray build: {int((~seen).sum())} unit(s) came back without a vector")
    log.info("dense: %d units encoded by %d Ray actor(s) on %s in %.1f s", n_units, actors, device,
             time.perf_counter() - t0)
    vecs = np.memmap(emb_path, dtype=np.float32, mode="r", shape=(n_units, dim))
    t1 = time.perf_counter()
    index = build_faiss(vecs, plan, device=device_for_faiss(cfg), progress=False)
    faiss.write_index(index, str(tmp / FAISS_FILE))
    faiss_seconds = round(time.perf_counter() - t1, 3)
    del vecs, index
    return Component(
        kind=DENSE_KIND, model=model_id,
        params={"dim": dim, "metric": "inner_product", "normalized": True, "with_title": cfg.with_title,
                "count": n_units, "encoder_dtype": resolve_dtype(cfg.dtype, device, role="dense encoder"), **plan,
                "faiss_file": FAISS_FILE, "faiss_seconds": faiss_seconds},
        files=file_entries(tmp, [EMBEDDINGS_FILE, FAISS_FILE]),
        build_seconds=round(time.perf_counter() - t0, 3),
    )


# --------------------------------------------------------------------------------------------- fm and bm25


def _publish(private: Path, final: Path) -> None:
    """Rename a finished folder into place (a retried task's earlier, complete copy is replaced)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(private, final)


def fm_shard_task(out_dir: str, i: int, start: int, stop: int, config: FMConfig) -> dict[str, Any]:
    """Ray task: tokenize units ``[start, stop)`` of the store in ``out_dir`` and write FM-index shard ``i``.
    Returns the shard's params (with its folder) and file names (relative to ``out_dir``)."""
    t0 = time.perf_counter()
    fail_once(f"fm-{i}")
    out = Path(out_dir)
    store = UnitStore(out / STORE_FILE)
    try:
        tokenizer, (start_id, end_id, vocab), flat, lengths = encode_range(store, start, stop, config)
    finally:
        store.close()
    sub = shard_dir(i)
    fm_dir = out / FM_DIR
    fm_dir.mkdir(exist_ok=True)
    private = fm_dir / f".{sub}.{uuid.uuid4().hex}"
    saved, params = build_shard(flat, lengths, vocab, config.sa_sample, private)  # numba loads here
    _publish(private, fm_dir / sub)
    names = [f"{FM_DIR}/{sub}/{n}" for n in saved]
    if i == 0:  # the tokenizer is saved once, by shard 0's task
        tok_private = out / f".tokenizer.{uuid.uuid4().hex}"
        tokenizer.save_pretrained(str(tok_private))
        _publish(tok_private, out / TOKENIZER_DIR)
        names += sorted(p.relative_to(out).as_posix() for p in (out / TOKENIZER_DIR).rglob("*") if p.is_file())
    log.info("fm shard %d: units [%d, %d), %d tokens in %.1f s (pid %d)", i, start, stop, int(lengths.sum()),
             time.perf_counter() - t0, os.getpid())
    return {"params": {"dir": sub, **params}, "files": names, "vocab": vocab, "start": start_id,
            "end": end_id, "tokenizer_size": len(tokenizer), "seconds": time.perf_counter() - t0}


def _fm_component(tmp: Path, config: FMConfig, n_units: int, parts: list[dict[str, Any]]) -> Component:
    first = parts[0]
    names = [n for p in parts for n in p["files"] if not n.startswith(TOKENIZER_DIR)]
    names += [n for n in first["files"] if n.startswith(TOKENIZER_DIR)]
    return fm_component(tmp, config, tokenizer_size=first["tokenizer_size"],
                        markers=(first["start"], first["end"], first["vocab"]), n_units=n_units,
                        shard_params=[p["params"] for p in parts], files=names,
                        seconds=max(p["seconds"] for p in parts))


def bm25_task(out_dir: str, config: Any) -> Component:
    """Ray task: the BM25 (Lucene) index over the whole store, built in a private folder and renamed into place."""
    from ._bm25 import build_bm25

    out = Path(out_dir)
    private = out / f".bm25-ray.{uuid.uuid4().hex}"
    private.mkdir()
    store = UnitStore(out / STORE_FILE)
    try:
        comp = build_bm25(store, private, config, progress=False)
        for entry in list(private.iterdir()):
            _publish(entry, out / entry.name)
    finally:
        store.close()
        shutil.rmtree(private, ignore_errors=True)
    return comp
