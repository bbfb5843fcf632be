"""Checking an index's files against its manifest.

Every open (``Index(path)``, ``verify="auto"``) checks that each file exists with its recorded size, hashes files
up to ``HASH_ON_LOAD_MAX_BYTES`` in full and checks larger ones by their sample hash (size + about 1 MiB of
evenly spaced blocks: a foreign or shifted file of the same size is caught, a flipped byte between the samples
is not).  ``verify_index`` (``genret verify INDEX``) reads every byte, with progress; ``verify="full"`` does the
same on open.  Both refuse a file the manifest does not list in a component's folder (``bm25/segments_2``).  A
file that fails is never used: the open raises ``IndexFormatError`` naming it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path, PurePosixPath
from typing import Literal

from ..core import IndexFormatError, progress_bar, sha256_file
from ._hashing import sample_sha256
from ._manifest import HASH_ON_LOAD_MAX_BYTES, FileEntry, Manifest, read_manifest

log = logging.getLogger("genret")

Level = Literal["none", "auto", "full"]


def _entries(directory: Path, manifest: Manifest) -> list[tuple[str, str, FileEntry, Path]]:
    """(component, file name, entry, path) of every file, each checked to exist with its recorded size."""
    out = []
    for name, comp in manifest.components.items():
        for fname, entry in comp.files.items():
            path = directory / fname
            if not path.is_file():
                raise IndexFormatError(f"{directory}: component {name!r} file {fname} is missing")
            size = path.stat().st_size
            if size != entry.size:
                raise IndexFormatError(f"{directory}: {fname} has {size} bytes, manifest says {entry.size} "
                                       "(truncated or replaced)")
            out.append((name, fname, entry, path))
    return out


def _check_no_foreign_files(directory: Path, manifest: Manifest) -> None:
    """A file the manifest does not list in a folder of a component's files (``bm25/``, ``fm/tokenizer/``) is
    refused: its reader lists the folder (Lucene opens the newest ``segments_N``, a tokenizer reads what it
    finds), so the file would be read unchecked.  The index folder itself may hold other files."""
    listed = {fname for comp in manifest.components.values() for fname in comp.files}
    folders = {PurePosixPath(fname).parent for fname in listed} - {PurePosixPath(".")}
    for folder in sorted(folders):
        try:
            names = sorted(p.name for p in (directory / folder).iterdir() if not p.is_dir())
        except OSError:
            continue  # a missing folder: its listed files are reported missing
        for name in names:
            if f"{folder}/{name}" not in listed:
                raise IndexFormatError(f"{directory}: {folder}/{name} is not a file of the index (not in its manifest):"
                                       " remove it, or rebuild the index")


def _mismatch(directory: Path, fname: str, how: str) -> IndexFormatError:
    return IndexFormatError(f"{directory}: {fname} {how} mismatch (corrupt or altered): rebuild the index or "
                            "restore the file")


def verify_files(directory: Path, manifest: Manifest, level: Level = "auto") -> None:
    """Check the files of ``manifest`` in ``directory`` (see the module doc for ``level``)."""
    if level == "none":
        return
    sampled = []
    entries = _entries(directory, manifest)
    _check_no_foreign_files(directory, manifest)
    for _, fname, entry, path in entries:
        if level == "full" or entry.size <= HASH_ON_LOAD_MAX_BYTES:
            if sha256_file(path) != entry.sha256:
                raise _mismatch(directory, fname, "checksum")
        elif entry.sample_sha256 is not None:
            if sample_sha256(path) != entry.sample_sha256:
                raise _mismatch(directory, fname, "sample checksum")
            sampled.append(fname)
        else:
            sampled.append(fname)
    if sampled:
        log.info("%s: %d large file(s) checked by size and sample only; `genret verify %s` reads every byte",
                 directory, len(sampled), directory)


def verify_index(directory: str | Path, *, progress: bool = True) -> dict:
    """Read every file of the index at ``directory`` and compare its full sha256 with the manifest's; raises
    ``IndexFormatError`` naming the first file that differs.  Returns ``{"files", "bytes", "seconds"}``."""
    directory = Path(directory)
    t0 = time.perf_counter()
    manifest = read_manifest(directory)
    if manifest.checksum is None:
        log.warning("%s: its manifest (format version 1) has no checksum of its own, so its values are not checked; "
                    "genret.indexing.seal_manifest adds one", directory)
    entries = _entries(directory, manifest)
    _check_no_foreign_files(directory, manifest)
    total = sum(entry.size for _, _, entry, _ in entries)
    with progress_bar(total, "verifying", progress) as bar:
        bar.unit, bar.unit_scale, bar.unit_divisor = "B", True, 1024
        for _, fname, entry, path in entries:
            if sha256_file(path, on_bytes=bar.update) != entry.sha256:
                raise _mismatch(directory, fname, "checksum")
    return {"files": len(entries), "bytes": total, "seconds": round(time.perf_counter() - t0, 3)}
