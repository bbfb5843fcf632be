"""CLI commands for demonstrations: ``genret index-demos`` and ``genret train demos`` (thin handlers).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json


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


def _cmd_train_demos(a: argparse.Namespace) -> int:
    from genret.indexing import ConfigError
    from genret.retrieval.demos import DemoTrainConfig, train_demos
    from genret.retrieval.rag import GeneratorConfig

    tasks = {}
    for item in a.task or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--task takes NAME=FILE, got {item!r}")
        tasks[name] = path
    config = DemoTrainConfig(candidates=a.candidates, rounds=a.rounds, epochs=a.epochs, batch_size=a.batch_size,
                             lr=a.lr, max_queries=a.max_queries, model=a.encoder, device=a.device, seed=a.seed,
                             skip_bad=a.skip_bad)
    generator = GeneratorConfig(model=a.generator_model, device=a.device)  # loaded once the inputs are checked
    summary = train_demos(a.demos, tasks, generator, a.out, config, progress=not a.quiet, force=a.force)
    print(json.dumps(summary, indent=1))
    return 0


def register(subparsers) -> None:
    """Add ``index-demos`` to the top-level subcommands."""
    p = subparsers.add_parser("index-demos", help="index a task's training pool for demonstration retrieval (UDR)")
    p.add_argument("pool", help="KILT task file or JSONL {id?, input, output} (.gz ok)")
    p.add_argument("--task", required=True, help="task name (a sub-directory of the demos directory)")
    p.add_argument("--out", required=True, help="demos directory (other tasks in it are left as they are)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="dense encoder")
    p.add_argument("--instruction", default=None, help="query prefix (default: the task's demo instruction)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed lines and report a count")
    p.add_argument("--force", action="store_true", help="replace the task's existing pool")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_index_demos)


def add_train_demos_parser(train_subparsers) -> None:
    """Add ``demos`` to the ``genret train`` group."""
    p = train_subparsers.add_parser("demos", help="train the UDR demonstration retriever with LM feedback")
    p.add_argument("demos", help="a demos directory (`genret index-demos`) holding the tasks' pools")
    p.add_argument("--task", action="append", metavar="NAME=FILE", required=True,
                   help="training queries of a task (KILT or JSONL {id?, input, output}); repeatable")
    p.add_argument("--out", required=True, help="output demos directory (trained encoder + re-indexed pools)")
    p.add_argument("--generator-model", default="smollm2-135m-instruct", help="LM whose likelihoods score demos")
    p.add_argument("--encoder", default=None, help="bi-encoder to start from (default: the pools' encoder)")
    p.add_argument("--candidates", type=int, default=8, help="candidates scored a query")
    p.add_argument("--rounds", type=int, default=2, help="mining rounds")
    p.add_argument("--epochs", type=int, default=1, help="epochs a round")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-queries", type=int, default=1000, help="training queries a task")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (encoder and generator)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed training lines")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train_demos)
