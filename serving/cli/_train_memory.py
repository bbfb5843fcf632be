"""``genret train memory INDEX TRAIN.jsonl``: keep a task's training questions, with their gold passages, in the index
as its query memory (``memory-adapted``), embedded with the encoder the index searches with.  No training as such:
the questions are embedded, not learned from.  The hybrid uses the memory only where fitted weights name it
(``genret adapt`` fits them; or ``genret tune INDEX DEV.jsonl --members dense,bm25,memory`` on records the memory does
not hold).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_train_memory(a: argparse.Namespace) -> int:
    from genret.core import InputError, sha256_file
    from genret.eval import read_kilt
    from genret.indexing import Index, write_query_memory
    from genret.retrieval import memory_encoder, memory_from_kilt

    records = read_kilt(a.train)[:a.max_records]
    if not records:
        raise InputError(f"{a.train}: no records")
    with Index(a.index) as index:
        if not index.has("dense"):
            raise InputError(f"index {a.index} has no dense component: the memory embeds questions with its encoder")
        memory = memory_from_kilt(index, records, memory_encoder(index, a.device, a.dtype))
    if not memory.queries:
        raise InputError(f"{a.train}: no record has a gold passage in index {a.index}")
    trained = {"train": str(Path(a.train).resolve()), "train_sha256": sha256_file(Path(a.train)), "task": a.task}
    write_query_memory(a.index, memory, trained=trained)
    print(json.dumps({"index": a.index, "component": "memory-adapted", "questions": len(memory.queries),
                      "records": len(records), "encoder": memory.encoder}, indent=1))
    print(f"{len(memory.queries)} of {len(records)} training questions kept (embedded with {memory.encoder}'s "
          "encoder); the hybrid uses them where fitted weights name the memory member", file=sys.stderr)
    return 0


def memory_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="an index with a dense component")
    p.add_argument("train", help="KILT-format training records (their provenance gives the gold passages)")
    p.add_argument("--task", default=None, help="the task's name (recorded with the memory)")
    p.add_argument("--max-records", type=int, default=None, help="the first N records only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="encoding precision (auto: bfloat16 where native)")
