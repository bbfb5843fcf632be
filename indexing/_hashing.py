"""The sample hash of an index file: about 1 MiB of any file read (for cheap checks of big files on every open; the
full sha256 is ``genret.core.sha256_file``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 64 << 10


def sample_offsets(size: int) -> list[int]:
    """Where the sample blocks start: ``SAMPLE_BLOCKS`` evenly spaced blocks, the first at 0, the last ending at
    the end of the file (all of a file up to ``SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES``)."""
    if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
        return list(range(0, size, SAMPLE_BLOCK_BYTES))
    last = size - SAMPLE_BLOCK_BYTES
    return [round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)]


def sample_sha256(path: Path) -> str:
    """The sha256 of the file's size and its sample blocks (see ``sample_offsets``)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for offset in sample_offsets(size):
            fh.seek(offset)
            h.update(fh.read(SAMPLE_BLOCK_BYTES))
    return h.hexdigest()
