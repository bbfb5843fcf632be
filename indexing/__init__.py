"""Indexing: read a corpus, cut it into units with provenance, build an index directory."""

from ._bm25 import BM25Config
from ._build import IndexConfig, available_components, build_index
from ._corpus import Page, ReadStats, read_corpus
from ._dense import DenseConfig
from ._device import resolve_device
from ._encoder import Encoder, SentenceTransformerEncoder
from ._errors import ConfigError, GenretError, IndexFormatError, InputError, NotFoundError
from ._fm_build import FMConfig
from ._index import Index
from ._manifest import Manifest, read_versioned_json, write_json_atomic
from ._store import StoredUnit
from ._units import Unit, UnitConfig

__all__ = [
    "BM25Config", "ConfigError", "DenseConfig", "Encoder", "FMConfig", "GenretError", "Index", "IndexConfig",
    "IndexFormatError", "InputError", "Manifest", "NotFoundError", "Page", "ReadStats",
    "SentenceTransformerEncoder", "StoredUnit", "Unit", "UnitConfig", "available_components", "build_index",
    "read_corpus", "read_versioned_json", "resolve_device", "write_json_atomic",
]
