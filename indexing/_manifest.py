"""``manifest.json``: what an index directory holds, and the checks made when it is opened.

The manifest records the format version, every component's ``kind`` (the key of the backend
registry), parameters, model ids and file checksums, the corpus hash and the unit counts.  It is
written atomically (temporary file + rename); on load, a missing, corrupt or foreign manifest, a
format-version mismatch, or a missing/truncated/altered file raises ``IndexFormatError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import IndexFormatError, read_versioned_json, sha256_file, write_json_atomic
from ._hashing import sample_sha256
from ._params import PARAMS_BY_KIND

P = TypeVar("P", bound=BaseModel)

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "genret-index"
FORMAT_VERSION = 1
# Files up to this size are hashed on every load; larger ones are size-checked (``verify="full"`` hashes all).
HASH_ON_LOAD_MAX_BYTES = 256 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int
    sha256: str
    sample_sha256: str | None = None  # size + ~1 MiB of sampled blocks (``_hashing``); older indexes: none


class Component(BaseModel):
    """One part of an index (unit store, dense vectors, BM25, FM-index)."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    files: dict[str, FileEntry] = Field(default_factory=dict)
    build_seconds: float = 0.0

    def typed_params(self, model: type[P]) -> P:
        """``params`` as ``model`` (e.g. ``BM25Params``), which must be the model of this component's kind."""
        if PARAMS_BY_KIND.get(self.kind) is not model:
            raise IndexFormatError(f"a component of kind {self.kind!r} has no {model.__name__}")
        try:
            return model.model_validate(self.params)
        except ValidationError as exc:
            raise IndexFormatError(f"{self.kind} parameters: {_first_error(exc)}") from None


class CorpusInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[str]
    sha256: str
    pages: int
    paragraphs: int
    skipped: int = 0


class UnitsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    count: int


class Manifest(BaseModel):
    """The contents of ``manifest.json``."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["genret-index"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    genret_version: str
    created: str
    build_seconds: float
    corpus: CorpusInfo
    units: UnitsInfo
    components: dict[str, Component]


def file_entries(directory: Path, names: list[str]) -> dict[str, FileEntry]:
    """Size and sha256 of files in ``directory`` (for a component's ``files``)."""
    return {n: FileEntry(size=(directory / n).stat().st_size, sha256=sha256_file(directory / n),
                         sample_sha256=sample_sha256(directory / n)) for n in names}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    write_json_atomic(directory / MANIFEST_FILE, manifest.model_dump(mode="json"))


def is_index_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a genret index manifest (even one this version cannot read)."""
    try:
        text = (directory / MANIFEST_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    try:
        return json.loads(text).get("format") == FORMAT_NAME
    except (ValueError, AttributeError):
        return f'"{FORMAT_NAME}"' in text  # a damaged manifest of an index


def read_manifest(directory: str | Path) -> Manifest:
    """Read and validate ``manifest.json`` (format name and version); files are not checked here."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise IndexFormatError(f"no index at {directory}: not a directory")
    if not path.is_file():
        raise IndexFormatError(f"no index at {directory}: {MANIFEST_FILE} is missing")
    fix = "rebuild the index with `genret index … --force`"
    manifest = read_versioned_json(path, Manifest, tag_field="format", tag=FORMAT_NAME,
                                   what="a genret index manifest", version=FORMAT_VERSION, fix=fix,
                                   version_of=directory)
    for name, comp in manifest.components.items():
        model = PARAMS_BY_KIND.get(comp.kind)
        if model is not None:
            try:
                model.model_validate(comp.params)
            except ValidationError as exc:
                raise IndexFormatError(f"{path} is corrupt: component {name!r} ({comp.kind}): {_first_error(exc)}: "
                                       f"{fix}") from None
    return manifest


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'params'}: {first['msg']}"
