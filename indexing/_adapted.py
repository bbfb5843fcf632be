"""``dense-adapted``: a dense component whose encoder was fine-tuned on a task and lives inside the index.

``genret train dense`` fine-tunes the index's dense encoder (``genret.retrieval``: pairs from a task's training
file, hard negatives) and hands the model folder to ``write_adapted_dense``, which copies it into the index as
``adapted/dense-model/``, encodes every unit with it into ``adapted/dense.f32``, builds the FAISS index the
``dense`` component has (same type and parameters) as ``adapted/dense.faiss``, and records the component
``dense-adapted`` (kind ``dense-faiss``; ``params.model_dir`` names the model folder, ``params.trained`` says
what it was trained on) with the checksums of every file, the model's included.  The base ``dense`` component
is left as it is: the dense retriever reads the adapted one by default and the base one when asked
(``DenseSearchConfig.adapted``).  All of it is written on a staged copy under the index's write lock and swapped
in whole, as ``add`` does; ``add`` encodes new units with the adapted encoder too.

``rerank-adapted`` (kind ``cross-encoder``): a cross-encoder ``genret adapt`` trained on the task, as
``adapted/rerank-model/``, with what it was fitted over (``params.over``: the retriever whose hits it re-orders
by default), the depth and the blend weight fitted on the held-out fold (``write_adapted_reranker``).  It reads
unit text, not vectors, so ``add`` keeps it as it is.  Kind ``sentence-encoder`` instead: no model of its own —
``genret adapt`` found a passage's best sentence under the index's dense encoder the better second stage
(``retrieval``'s sentence reranker); the component holds only its fit.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..core import NotFoundError, staged_dir, write_lock
from ._dense import DENSE_KIND, EMBEDDINGS_FILE, build_dense, recorded_config
from ._manifest import ADAPTED_DENSE, ADAPTED_DIR, Component, Manifest, file_entries, read_manifest, write_manifest
from ._memory import ADAPTED_MEMORY, reembed_memory
from ._store import STORE_FILE, UnitStore
from ._verify import verify_files

ADAPTED_RERANK = "rerank-adapted"
MODEL_DIR = f"{ADAPTED_DIR}/dense-model"
RERANK_KIND = "cross-encoder"
SENTENCE_RERANK_KIND = "sentence-encoder"
SENTENCE_RERANK_MODEL = "sentences"  # the reranker's name at query time (``RerankConfig.model``)
RERANK_MODEL_DIR = f"{ADAPTED_DIR}/rerank-model"


def dense_component(index, adapted: bool = True) -> str:
    """The dense component a search of ``index`` reads: ``dense-adapted`` where the index has one and ``adapted``
    (the default: the encoder fine-tuned on the task), else ``dense`` (the one it was built with).  The dense
    retriever, its Ray counterpart and the server's embeddings all choose here."""
    return ADAPTED_DENSE if adapted and index.has(ADAPTED_DENSE) else "dense"


def write_adapted_dense(index_dir: str | Path, model_dir: str | Path, *, trained: dict[str, Any],
                        device: str = "auto", dtype: str = "auto", batch_size: int | None = None,
                        progress: bool = True) -> Manifest:
    """Put the fine-tuned sentence-transformers model in ``model_dir`` into the index at ``index_dir`` as its
    ``dense-adapted`` component (replacing an earlier one); returns the new manifest.  ``trained``: what the
    model was trained on and how (recorded in the component).  ``NotFoundError`` when the index has no ``dense``
    component (its FAISS settings and text layout are the ones the adapted component keeps)."""
    src = Path(index_dir)
    with write_lock(src):
        manifest = read_manifest(src)
        base = manifest.components.get("dense")
        if base is None or base.kind != DENSE_KIND:
            raise NotFoundError(f"index {src} has no dense component to adapt; build it with `genret index … --dense`")
        verify_files(src, manifest)
        t0 = time.perf_counter()
        with staged_dir(src, "adapting", copy_from=src) as tmp:
            old = manifest.components.get(ADAPTED_DENSE)
            for name in old.files if old is not None else ():  # an earlier adapted encoder; the reranker stays
                (tmp / name).unlink(missing_ok=True)
            shutil.rmtree(tmp / MODEL_DIR, ignore_errors=True)
            (tmp / ADAPTED_DIR).mkdir(exist_ok=True)
            shutil.copytree(model_dir, tmp / MODEL_DIR)
            config = recorded_config(base, model=str(tmp / MODEL_DIR), device=device, dtype=dtype,
                                     batch_size=batch_size)
            store = UnitStore(tmp / STORE_FILE)
            try:
                built = build_dense(store, tmp / ADAPTED_DIR, config, progress=progress)
            finally:
                store.close()
            model_files = sorted(str(f.relative_to(tmp)) for f in (tmp / MODEL_DIR).rglob("*") if f.is_file())
            params = {**built.params, "faiss_file": f"{ADAPTED_DIR}/{built.params['faiss_file']}",
                      "embeddings_file": f"{ADAPTED_DIR}/{EMBEDDINGS_FILE}", "model_dir": MODEL_DIR,
                      "base_model": base.model, "trained": trained}
            files = {f"{ADAPTED_DIR}/{name}": entry for name, entry in built.files.items()}
            files.update(file_entries(tmp, model_files))
            component = Component(kind=DENSE_KIND, params=params, model=MODEL_DIR, files=files,
                                  build_seconds=round(time.perf_counter() - t0, 3))
            components = {**manifest.components, ADAPTED_DENSE: component}
            if ADAPTED_MEMORY in components:  # a query memory follows the encoder the index searches with
                components[ADAPTED_MEMORY] = reembed_memory(tmp, components[ADAPTED_MEMORY], ADAPTED_DENSE, component,
                                                            device=device, dtype=dtype)
            new = manifest.model_copy(update={"components": components})
            write_manifest(tmp, new)
        return new


def write_adapted_reranker(index_dir: str | Path, model_dir: str | Path | None, *, over: str, depth: int,
                           weight: float, trained: dict[str, Any]) -> Manifest:
    """Put the cross-encoder in ``model_dir`` (None: the sentence reranker, which reads with the index's dense
    encoder) into the index at ``index_dir`` as its ``rerank-adapted`` component (replacing an earlier one), to
    re-order the first ``depth`` hits of retriever ``over`` with blend ``weight``; returns the new manifest."""
    src = Path(index_dir)
    with write_lock(src):
        manifest = read_manifest(src)
        verify_files(src, manifest)
        t0 = time.perf_counter()
        with staged_dir(src, "adapting", copy_from=src) as tmp:
            shutil.rmtree(tmp / RERANK_MODEL_DIR, ignore_errors=True)
            params = {"over": over, "depth": int(depth), "weight": float(weight), "trained": trained}
            if model_dir is None:
                component = Component(kind=SENTENCE_RERANK_KIND, model=SENTENCE_RERANK_MODEL, files={},
                                      params=params, build_seconds=round(time.perf_counter() - t0, 3))
            else:
                (tmp / ADAPTED_DIR).mkdir(exist_ok=True)
                shutil.copytree(model_dir, tmp / RERANK_MODEL_DIR)
                model_files = sorted(str(f.relative_to(tmp)) for f in (tmp / RERANK_MODEL_DIR).rglob("*")
                                     if f.is_file())
                component = Component(kind=RERANK_KIND, model=RERANK_MODEL_DIR, files=file_entries(tmp, model_files),
                                      params={"model_dir": RERANK_MODEL_DIR, **params},
                                      build_seconds=round(time.perf_counter() - t0, 3))
            new = manifest.model_copy(update={"components": {**manifest.components, ADAPTED_RERANK: component}})
            write_manifest(tmp, new)
        return new


def drop_adapted_reranker(index_dir: str | Path) -> bool:
    """Remove the index's ``rerank-adapted`` component and its files (a new adaptation that kept no reranker:
    the earlier one was fitted over the earlier first stage); returns whether there was one."""
    src = Path(index_dir)
    with write_lock(src):
        manifest = read_manifest(src)
        if ADAPTED_RERANK not in manifest.components:
            return False
        with staged_dir(src, "adapting", copy_from=src) as tmp:
            shutil.rmtree(tmp / RERANK_MODEL_DIR, ignore_errors=True)
            components = {k: v for k, v in manifest.components.items() if k != ADAPTED_RERANK}
            write_manifest(tmp, manifest.model_copy(update={"components": components}))
        return True


def adapted_reranker(index) -> dict[str, Any] | None:
    """``{"model", "over", "depth", "weight"}`` of the index's ``rerank-adapted`` component (None when it has
    none); ``model``: the cross-encoder's folder, or ``sentences`` for the sentence reranker."""
    if not index.has(ADAPTED_RERANK):
        return None
    comp = index.component(ADAPTED_RERANK)
    if comp.kind not in (RERANK_KIND, SENTENCE_RERANK_KIND):
        raise NotFoundError(f"index {index.path}: component {ADAPTED_RERANK!r} has kind {comp.kind!r}, not "
                            f"{RERANK_KIND!r} or {SENTENCE_RERANK_KIND!r}")
    model = (SENTENCE_RERANK_MODEL if comp.kind == SENTENCE_RERANK_KIND
             else str(Path(index.path) / comp.params["model_dir"]))
    return {"model": model, "over": comp.params["over"], "depth": int(comp.params["depth"]),
            "weight": float(comp.params["weight"])}
