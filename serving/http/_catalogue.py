"""What the server serves, by name, with no knowledge of HTTP: the indexes described (``/v1/indexes``), the
OpenAI-compatible model ids (``/v1/models``) and the embeddings behind them (``/v1/embeddings``).

A model id names an index and a retriever: ``INDEX`` (its default retriever) or ``INDEX/RETRIEVER``
(:meth:`Catalogue.models`, :meth:`Catalogue.resolve_model`).  Embeddings come from an index's dense encoder
(``INDEX`` or ``INDEX/dense``), loaded on first use by ``_embeddings.Embedder``.  Everything but :meth:`embed` is
cheap: read from the manifests, nothing is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from genret.retrieval import TASKS

from ._embeddings import Embedder
from ._errors import ModelNotFound

if TYPE_CHECKING:
    import numpy as np

    from ._pool import IndexPool
    from ._settings import Settings

__all__ = ["Catalogue"]


class Catalogue:
    """The served names of ``pool``'s indexes (and ``demo_tasks``, the demonstration pools), and their embeddings."""

    def __init__(self, settings: Settings, pool: IndexPool, demo_tasks: Sequence[str]) -> None:
        self.settings, self.pool, self.demo_tasks = settings, pool, demo_tasks
        dense = settings.retrieval.dense
        self.embedder = Embedder(dense.device, dense.batch_size, dense.dtype, dense.adapted)

    def describe(self) -> list[dict]:
        """Per served index: its size, unit kind, retrievers, the tasks it takes and the demonstration pools."""
        tasks = sorted({*self.settings.retrieval.generative.prompts, *TASKS})
        return [{"name": name, "units": len(ix.store), "unit_kind": ix.manifest.units.kind,
                 "retrievers": self.pool.offered(ix), "tasks": tasks, "demo_tasks": self.demo_tasks}
                for name, ix in self.pool.indexes.items()]

    # ---- OpenAI-compatible model ids ------------------------------------------------------------------------
    def models(self) -> list[tuple[str, str, str]]:
        """``(model id, index, retriever)``: per served index ``INDEX`` (its default retriever), then
        ``INDEX/RETRIEVER`` for each retriever it offers."""
        out = []
        for index, ix in self.pool.indexes.items():
            names = self.pool.offered(ix)
            out += [(index, index, names[0])] if names else []
            out += [(f"{index}/{name}", index, name) for name in names]
        return out

    def resolve_model(self, model: str | None) -> tuple[str | None, str | None]:
        """``(index, retriever)`` a model id names (None: the defaults); ``ModelNotFound`` for any other name."""
        if model is None:
            return None, None
        index, _, retriever = model.partition("/")
        indexes = self.pool.indexes
        if index in indexes and (not retriever or retriever in self.pool.offered(indexes[index])):
            return index, retriever or None
        ids = [m for m, _, _ in self.models()]
        shown = ", ".join(ids[:20]) + (f" … ({len(ids)} in all)" if len(ids) > 20 else "")
        raise ModelNotFound(f"the model {model!r} does not exist on this server; its models (GET /v1/models) are "
                            f"INDEX or INDEX/RETRIEVER: {shown}")

    # ---- embeddings -----------------------------------------------------------------------------------------
    def embedding_index(self, model: str | None) -> str:
        """The index whose dense encoder a model id names (``INDEX`` or ``INDEX/dense``; None: the default)."""
        index, retriever = self.resolve_model(model)
        index = index or self.pool.default_index
        if not self.pool.indexes[index].has("dense"):
            raise ModelNotFound(f"the model {model or index!r} has no embeddings: index {index!r} has no dense "
                                "component (genret index … --dense)")
        if retriever not in (None, "dense"):
            raise ModelNotFound(f"the model {model!r} does not embed: embeddings come from the index's dense "
                                f"encoder, model {index!r} or '{index}/dense'")
        return index

    def embedding_dim(self, index: str) -> int:
        return self.embedder.dim(self.pool.indexes[index])

    def embed(self, index: str, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """``(vectors, tokens)`` of (checked) texts by the index's dense encoder (loaded on first use); blocking."""
        return self.embedder.embed(self.pool.indexes[index], texts)
