"""Progress reporting for long steps (on stderr, off when not wanted)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool = True) -> Iterator:
    """A tqdm bar on stderr, or a no-op with the same ``update`` method when disabled."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=True, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
