"""``genret index-demos``: index a task's training pool for demonstration retrieval (``genret train demos``, which
trains the retriever of those pools, is in the ``train`` group).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse

from ._common import add_output_flags


def _cmd_index_demos(a: argparse.Namespace) -> int:
    from genret.retrieval.demos import build_demo_pool

    m = build_demo_pool(a.pool, a.task, a.out, model=a.model, instruction=a.instruction, device=a.device,
                        progress=not a.quiet, force=a.force, skip_bad=a.skip_bad)
    skipped = [f"{n} {what}" for n, what in ((m.skipped_no_answer, "without an answer"), (m.skipped_bad, "bad"))
               if n]
    print(f"indexed {m.examples} demonstrations of task {m.task!r}"
          + (f" ({', '.join(skipped)} skipped)" if skipped else "")
          + f" with {m.encoder} in {m.build_seconds:.1f}s -> {a.out}/{m.task}")
    return 0


def register(sub) -> None:
    """Add ``index-demos`` to the top-level commands."""
    p = sub.add_parser("index-demos", help="index a task's training pool for demonstration retrieval (UDR)")
    p.add_argument("pool", help="KILT task file or JSONL {id?, input, output} (.gz ok)")
    p.add_argument("--task", required=True, help="task name (a sub-directory of the demos directory)")
    p.add_argument("--out", required=True, help="demos directory (other tasks in it are left as they are)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="dense encoder")
    p.add_argument("--instruction", default=None, help="query prefix (default: the task's demo instruction)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed lines and report a count")
    p.add_argument("--force", action="store_true", help="replace the task's existing pool")
    add_output_flags(p)
    p.set_defaults(func=_cmd_index_demos)
