"""Text encoders for dense retrieval: the ``Encoder`` interface and its sentence-transformers backend."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np

from ..core import (
    DEFAULT_DENSE_MODEL,
    loading_model,
    quantize_int8,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    torch_dtype,
)

log = logging.getLogger("genret")

# Texts an encoder batch when none is given.  On a CPU small batches are fastest: bench/encode_batch.py, MiniLM
# over squad paragraphs on one thread, units/s at batch 8 / 16 / 32 / 64: float32 28 / 27 / 24 / 23, bfloat16
# 82 / 86 / 76 / 61 (a batch's activations stay in the cache); an accelerator wants large ones.
CPU_BATCH, ACCELERATOR_BATCH = 16, 64


def encode_batch_size(batch_size: int | None, device: str) -> int:
    """``batch_size``, or the default for ``device`` (a resolved device name) when it is None."""
    return batch_size if batch_size else (CPU_BATCH if device == "cpu" else ACCELERATOR_BATCH)


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension.

    ``encode`` returns an array of shape ``(len(texts), dim)``; equal inputs give equal vectors.  ``batch_size``
    None: the device's default (``encode_batch_size``).
    """

    model_id: str
    dim: int

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by name or local path; cosine similarity via normalised vectors.

    ``dtype`` (``resolve_dtype``: ``auto``, ``float32``, ``bfloat16``, ``float16``, ``int8``) is what the model
    computes in; ``self.dtype`` holds the resolved name.  Vectors come back float32 whatever it is.
    """

    def __init__(self, model: str = DEFAULT_DENSE_MODEL, device: str = "auto", dtype: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar; genret shows its own progress
        self.model_id = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, role="dense encoder")
        path = resolve_model_path(model)
        log.info("dense encoder %s on %s (%s)", model, self.device, self.dtype)
        with loading_model(model, "dense encoder"):
            self._model = SentenceTransformer(path, device=self.device,
                                              model_kwargs={"dtype": torch_dtype(self.dtype)})
            if self.dtype == "int8":
                quantize_int8(self._model)
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim)

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(list(texts), batch_size=encode_batch_size(batch_size, self.device),
                                  show_progress_bar=progress, convert_to_numpy=True, normalize_embeddings=False)
        return normalized(vecs)


def normalized(vecs) -> np.ndarray:
    """float32 rows scaled to unit length in float32 (a bf16 model's own normalisation is off by ~1e-3)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)
