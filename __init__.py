"""genret: generative retrieval (SEAL/UGR) and RAG next to dense and BM25 retrievers, with KILT-style evaluation.

The few verbs a notebook needs, over four packages that hold the rest::

    import genret

    genret.build_index("corpus.jsonl", "my-index")           # units + FM-index + FAISS + BM25, one directory
    with genret.Index("my-index") as index:
        hits = genret.load_retriever(index, "hybrid").search("who proclaimed the oil embargo", k=5)
    report = genret.evaluate("my-index", "dev.jsonl")        # KILT retrieval metrics

- ``genret.indexing``: corpus → units with KILT provenance → an index directory.
- ``genret.retrieval``: the ``Retriever`` contract, BM25, dense, generative (SEAL/UGR), hybrid; demonstrations; RAG.
- ``genret.eval``: KILT-format predictions, the official KILT metrics, suites.
- ``genret.serving``: the ``genret`` command line and the HTTP API.

Names load on first use, so ``import genret`` (and ``genret --help``) imports neither torch nor FastAPI.
"""

from __future__ import annotations

from importlib import import_module as _import_module

# name → the package that defines it
_EXPORTS = {
    "Index": "indexing", "IndexConfig": "indexing", "build_index": "indexing", "read_corpus": "indexing",
    "Hit": "retrieval", "Retriever": "retrieval", "RetrievalConfig": "retrieval", "load_retriever": "retrieval",
    "RagConfig": "retrieval", "open_pipeline": "retrieval", "load_generator": "retrieval",
    "evaluate": "eval", "predict": "eval", "score": "eval",
    "create_app": "serving",
}

__all__ = sorted(["__version__", *_EXPORTS])


def __getattr__(name: str):
    if name == "__version__":  # read on first use: importlib.metadata costs more than the rest of `import genret`
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("genret")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
            value = "0+unknown"
        globals()[name] = value
        return value
    package = _EXPORTS.get(name)
    if package is None:
        raise AttributeError(f"module 'genret' has no attribute {name!r}")
    value = getattr(_import_module(f"{__name__}.{package}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
