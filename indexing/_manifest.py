"""``manifest.json``: what an index directory holds, and the checks made when it is opened.

The manifest records the format version, every component's ``kind`` (the key of the backend
registry), parameters, model ids and file checksums, the corpus hash and the unit counts, and its own
checksum: the sha256 of every other field (``manifest_checksum``), so that an altered value (a BM25 ``k1``, a
file's recorded sha256) is caught on open and by ``verify`` and blamed on the manifest, not on a data file.  It is
written atomically (temporary file + rename); on load, a missing, corrupt, altered or foreign manifest, a
format-version mismatch, an out-of-range parameter, or a missing/truncated/altered file raises
``IndexFormatError``.  Format version 1 (before the checksum) is still read; any write (``genret add``,
``seal_manifest``) upgrades it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import (
    IndexFormatError,
    read_versioned_json,
    restore_interrupted,
    sha256_file,
    write_json_atomic,
    write_lock,
)
from ._hashing import sample_sha256
from ._params import PARAMS_BY_KIND, IndexPath

P = TypeVar("P", bound=BaseModel)

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "genret-index"
FORMAT_VERSION = 2
OLDER_VERSIONS = (1,)  # read too: version 1 is version 2 without the checksum
CHECKSUM_FIELD = "checksum"
_FIX = "rebuild the index with `genret index … --force`"
# Files up to this size are hashed on every load; larger ones are size-checked (``verify="full"`` hashes all).
HASH_ON_LOAD_MAX_BYTES = 256 << 20
# what ``genret adapt`` and ``genret train`` add to an index: the folder their files go in, the adapted dense
# component's name (``_adapted``; the query memory, ``_memory``, is embedded with its encoder where it exists)
ADAPTED_DIR = "adapted"
ADAPTED_DENSE = "dense-adapted"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    sample_sha256: str | None = None  # size + ~1 MiB of sampled blocks (``_hashing``); older indexes: none


class Component(BaseModel):
    """One part of an index (unit store, dense vectors, BM25, FM-index)."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    files: dict[IndexPath, FileEntry] = Field(default_factory=dict)
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
    checksum: str | None = None  # ``manifest_checksum`` of the file as written (set by ``write_manifest``)


def file_entries(directory: Path, names: list[str]) -> dict[str, FileEntry]:
    """Size and sha256 of files in ``directory`` (for a component's ``files``)."""
    return {n: FileEntry(size=(directory / n).stat().st_size, sha256=sha256_file(directory / n),
                         sample_sha256=sample_sha256(directory / n)) for n in names}


def manifest_checksum(raw: dict) -> str:
    """``"sha256:…"`` of every field of a manifest but its checksum (key order and formatting do not count)."""
    fields = {k: v for k, v in raw.items() if k != CHECKSUM_FIELD}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write ``manifest`` (in the current format version) with its checksum, atomically; ``manifest`` is updated to
    what was written (``format_version``, ``checksum``)."""
    raw = manifest.model_dump(mode="json", exclude={CHECKSUM_FIELD})
    raw["format_version"] = FORMAT_VERSION
    raw[CHECKSUM_FIELD] = manifest_checksum(raw)
    write_json_atomic(directory / MANIFEST_FILE, raw)
    manifest.format_version, manifest.checksum = FORMAT_VERSION, raw[CHECKSUM_FIELD]


def seal_manifest(directory: str | Path) -> Manifest:
    """Record a new checksum in the manifest of the index at ``directory`` after a deliberate edit of it (or upgrade
    a format-1 manifest).  The manifest is validated as an open validates it (format, fields, every parameter), the
    index's files are not looked at (``verify_index`` does).  Holds the index's write lock."""
    directory = Path(directory)
    with write_lock(directory):
        manifest = _read(directory, checked=False)
        write_manifest(directory, manifest)
    return read_manifest(directory)


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
    """Read and validate ``manifest.json``: format name and version, its checksum, its fields and every
    component's parameters; files are not checked here."""
    return _read(Path(directory), checked=True)


def _check_checksum(path: Path, raw: dict) -> None:
    found = raw.get(CHECKSUM_FIELD)
    if found is None and raw.get("format_version") in OLDER_VERSIONS:
        return  # written before manifests had a checksum
    if found is None:
        raise IndexFormatError(f"{path} is corrupt: no checksum (format version {FORMAT_VERSION} has one): {_FIX}")
    if found != manifest_checksum(raw):
        raise IndexFormatError(f"{path} checksum mismatch (edited or corrupt): {_FIX}; after a deliberate edit, "
                               f"genret.indexing.seal_manifest records the new checksum")


def _read(directory: Path, *, checked: bool) -> Manifest:
    path = directory / MANIFEST_FILE
    left = None if directory.is_dir() else restore_interrupted(directory)
    if not directory.is_dir():
        hint = (f" (an interrupted write left the previous version in {left}: `mv {left} {directory}` puts it back, "
                "as the next write to it will)") if left else ""
        raise IndexFormatError(f"no index at {directory}: not a directory{hint}")
    if not path.is_file():
        raise IndexFormatError(f"no index at {directory}: {MANIFEST_FILE} is missing")
    manifest = read_versioned_json(path, Manifest, tag_field="format", tag=FORMAT_NAME,
                                   what="a genret index manifest", version=FORMAT_VERSION, fix=_FIX,
                                   version_of=directory, older=OLDER_VERSIONS,
                                   check=(lambda raw: _check_checksum(path, raw)) if checked else None)
    for name, comp in manifest.components.items():
        model = PARAMS_BY_KIND.get(comp.kind)
        if model is not None:
            try:
                model.model_validate(comp.params)
            except ValidationError as exc:
                raise IndexFormatError(f"{path} is corrupt: component {name!r} ({comp.kind}): {_first_error(exc)}: "
                                       f"{_FIX}") from None
    return manifest


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'params'}: {first['msg']}"
