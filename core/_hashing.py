"""File checksums: the full sha256 of a file (index components, demonstration pools, tuned weights)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20, on_bytes: Callable[[int], object] | None = None) -> str:
    """The sha256 of the file at ``path``; ``on_bytes(n)`` is called after each chunk read (progress)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return h.hexdigest()
