"""Dense component: unit embeddings (raw float32, memory-mapped) and a FAISS index over them.

The embeddings file is kept beside the FAISS index so that the index can be rebuilt (another
FAISS type) without re-encoding.  Vectors are L2-normalised, so inner product = cosine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ._encoder import DEFAULT_DENSE_MODEL, Encoder, SentenceTransformerEncoder
from ._manifest import Component, file_entries
from ._progress import progress_bar
from ._store import UnitStore

log = logging.getLogger("genret")

DENSE_KIND = "dense-faiss"
EMBEDDINGS_FILE = "dense.f32"
FAISS_FILE = "dense.faiss"


class DenseConfig(BaseModel):
    """Dense index settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = DEFAULT_DENSE_MODEL
    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    index_type: Literal["flat"] = "flat"
    with_title: bool = Field(True, description="encode 'title\\ntext' rather than the text alone")


def unit_text(title: str, text: str, with_title: bool) -> str:
    return f"{title}\n{text}" if with_title and title else text


def build_dense(store: UnitStore, out_dir: Path, config: DenseConfig, *, progress: bool = True,
                encoder: Encoder | None = None) -> Component:
    """Encode every unit of ``store`` and write the embeddings and a FAISS index into ``out_dir``."""
    import faiss

    t0 = time.perf_counter()
    encoder = encoder or SentenceTransformerEncoder(config.model, config.device)
    emb_path = out_dir / EMBEDDINGS_FILE
    n = 0
    with open(emb_path, "wb") as fh, progress_bar(len(store), "encoding units", progress) as bar:
        for batch in store.iter_units(batch=max(config.batch_size * 8, 256)):
            texts = [unit_text(u.title, u.text, config.with_title) for u in batch]
            vecs = encoder.encode(texts, batch_size=config.batch_size)
            fh.write(vecs.tobytes())
            n += len(batch)
            bar.update(len(batch))
    vectors = np.memmap(emb_path, dtype=np.float32, mode="r", shape=(n, encoder.dim)) if n else \
        np.zeros((0, encoder.dim), np.float32)
    index = faiss.IndexFlatIP(encoder.dim)
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(vectors[start:start + 65536]))
    faiss.write_index(index, str(out_dir / FAISS_FILE))
    del vectors
    log.info("dense: %d vectors of dim %d", n, encoder.dim)
    return Component(
        kind=DENSE_KIND, model=encoder.model_id,
        params={"index_type": config.index_type, "dim": encoder.dim, "metric": "inner_product",
                "normalized": True, "with_title": config.with_title, "count": n},
        files=file_entries(out_dir, [EMBEDDINGS_FILE, FAISS_FILE]),
        build_seconds=round(time.perf_counter() - t0, 3),
    )


def load_embeddings(index_dir: Path, component: Component) -> np.ndarray:
    """The stored unit embeddings as a read-only memory map of shape (units, dim)."""
    n, dim = component.params["count"], component.params["dim"]
    if n == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(index_dir / EMBEDDINGS_FILE, dtype=np.float32, mode="r", shape=(n, dim))


def load_faiss(index_dir: Path, component: Component):
    """Read the component's FAISS index (memory-mapped where FAISS allows it)."""
    import faiss

    return faiss.read_index(str(index_dir / FAISS_FILE), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
