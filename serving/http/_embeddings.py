"""The encoders behind ``POST /v1/embeddings``: an index's dense component names the model that embedded its units;
``Embedder`` loads that model once per (model, device) on first use, in the retrieval section's dtype (as the dense
retriever's query encoder), and encodes with it, one thread at a time per model (as the dense retriever does).
Blocking: call it off the event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from genret.core import model_load_lock, resolve_model_path
from genret.indexing import DenseParams, Index, SentenceTransformerEncoder, dense_component, encoder_model

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class _Loaded:
    """One model: its encoder, its tokenizer's counter, and the lock its use holds."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        with model_load_lock():  # one model load at a time in the process, its imports included (genret.core)
            self.encoder = SentenceTransformerEncoder(model, device, dtype)
            self.count_tokens = _token_counter(model)
        self.lock = threading.Lock()


def _token_counter(model: str) -> Callable[[str], int]:
    """Tokens of a text as the model's tokenizer counts them (special tokens included); an estimate (4
    characters a token) when the tokenizer cannot be loaded."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model_path(model))
    except Exception as exc:  # noqa: BLE001 - usage is informative: estimate rather than fail
        log.warning("no tokenizer for %s (%s): embedding usage is estimated", model, exc)
        return lambda text: max(1, (len(text) + 3) // 4)
    return lambda text: len(tok(text)["input_ids"])


class Embedder:
    """The dense encoders of the served indexes, loaded on first use."""

    def __init__(self, device: str, batch_size: int | None = None, dtype: str = "auto", adapted: bool = True) -> None:
        self.device, self.batch_size, self.dtype, self.adapted = device, batch_size, dtype, adapted
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def dim(self, index: Index) -> int:
        """The dimension of the index's embeddings (from its manifest: nothing is loaded)."""
        return index.component(dense_component(index, self.adapted)).typed_params(DenseParams).dim

    def _model(self, index: Index) -> _Loaded:
        """The encoder the index's dense search uses (the adapted one, where it has one)."""
        model = encoder_model(index.path, index.component(dense_component(index, self.adapted)))
        with self._lock:
            if model not in self._loaded:
                self._loaded[model] = _Loaded(model, self.device, self.dtype)
            return self._loaded[model]

    def embed(self, index: Index, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """``(L2-normalised float32 vectors, one row per text; the texts' tokens)``."""
        loaded = self._model(index)
        with loaded.lock:
            vectors = loaded.encoder.encode(list(texts), batch_size=self.batch_size)
            tokens = sum(loaded.count_tokens(t) for t in texts)
        return vectors, tokens
