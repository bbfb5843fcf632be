"""``open_pipeline``: a RAG pipeline from names — an index's retriever, a demos directory's source, a generator."""

from __future__ import annotations

from genret.indexing import Index

from ._registry import RetrievalConfig, load_retriever
from .demos import load_demo_source
from .rag import Generator, RagConfig, RagPipeline


def open_pipeline(index: Index | None, generator: Generator, *, retriever: str | None = None,
                  retrieval: RetrievalConfig | None = None, demos_dir: str | None = None,
                  config: RagConfig | None = None, device: str = "auto") -> RagPipeline:
    """A pipeline over an opened ``Index`` (None: no retrieval) and a demos directory (None: no demonstrations)."""
    config = config or RagConfig()
    r = load_retriever(index, retriever, retrieval) if index is not None and config.passages > 0 else None
    demo_source = None
    if demos_dir is not None and config.demos > 0:
        demo_source = load_demo_source(demos_dir, config.demo_source, device=device)
    return RagPipeline(generator, r, demo_source, config)
