"""``genret adapt``'s query memory stage: the training questions, with their gold units, kept in the index as the
hybrid's ``memory`` member (``genret.retrieval``'s memory retriever), and its run over the held-out fold.

The held-out records are searched against a memory of the training part only (a question must not find itself);
the index keeps one of every record of the training file, the held-out ones included, embedded with the encoder the
index searches with — the adapted one, since this stage runs after the dense encoder's.  Whether the hybrid uses it
is the fusion's fit on the held-out fold: a weight of 0 leaves it unloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genret.indexing import Index, QueryMemory, write_query_memory
from genret.retrieval import Hit, MemoryRetriever, memory_encoder, memory_from_kilt

from ._runner import search_records


def adapt_memory(index_dir: str | Path, train: Sequence[dict], held: Sequence[dict], *, device: str, dtype: str,
                 trained: dict[str, Any], task: str | None, progress: bool,
                 say: Callable[[str], None]) -> tuple[list[list[Hit]], dict[str, Any]]:
    """Search the held-out records against a memory of ``train`` (100 hits each), then write a memory of every
    record into the index; returns the held-out hit lists and what was built (counts, seconds)."""
    t0 = time.perf_counter()
    with Index(index_dir) as index:
        encoder = memory_encoder(index, device, dtype)
        part = memory_from_kilt(index, train, encoder)
        say(f"memory: {len(part.queries)} training questions embedded; searching the held-out fold with them")
        hits = search_records(MemoryRetriever(index, memory=part, encoder=encoder), list(held), 100, batch_size=64,
                              task_name=task, progress=progress)
        extra = memory_from_kilt(index, held, encoder)
    full = QueryMemory(part.queries + extra.queries, part.units + extra.units,
                       np.concatenate([part.vectors, extra.vectors]), part.encoder)
    write_query_memory(index_dir, full, trained=trained)
    found = sum(1 for h in hits if h)
    return hits, {"questions": len(full.queries), "held_out_with_hits": found, "encoder": full.encoder,
                  "seconds": round(time.perf_counter() - t0, 1)}
