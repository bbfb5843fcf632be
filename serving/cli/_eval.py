"""``genret eval``: an index on a KILT task file, a BEIR folder or queries with qrels (``--rag``: answers and
provenance scored together), ``eval score`` (KILT guesses against gold) and ``eval suite``, each of these two with a
parser and help page of its own (``SUBCOMMANDS``, which ``_main.parse`` routes to).

Nothing heavy is imported at module level (``genret --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack

from ._common import Parser, add_output_flags, usage
from ._flags import MAX_K, add_retriever_flags, check_range, retrieval_config
from ._rag import add_rag_flags, open_from_args


def _print_metrics(report: dict) -> None:
    """A compact table: R-Precision, recall@k and answer_in_context@k per level (all of them with --json)."""
    print(f"task {report['task']}: {report['records']} records, retriever {report['retriever']}, "
          f"k={report['k']}, {report['seconds']:.1f}s")
    for level, metrics in report["levels"].items():
        shown = {"R-Prec": metrics["Rprec"]}
        shown.update({f"R@{k.split('@')[1]}": v for k, v in metrics.items() if k.startswith("recall@")})
        shown.update({f"AiC@{k.split('@')[1]}": v for k, v in metrics.items()
                      if k.startswith("answer_in_context@")})
        print(f"  {level:<8} " + "  ".join(f"{k}={v * 100:.1f}" for k, v in shown.items()))
        ir = report.get("ir", {}).get(level)
        if ir:  # ir-measures' names; the means of RR@10 and AP are MRR@10 and MAP
            names = {"RR@10": "MRR@10", "AP": "MAP"}
            print(f"  {'':<8} IR: " + "  ".join(f"{names.get(k, k)}={v * 100:.1f}" for k, v in ir.items())
                  + f"  (qrels: {report['qrels']})")


def _cmd_eval(a: argparse.Namespace) -> int:
    from genret.eval import evaluate

    if len(a.rest) != 1:
        raise usage("usage: genret eval INDEX TASK.jsonl|BEIR_FOLDER|QUERIES")
    check_range(a.k, "-k", 1, MAX_K)
    if a.rag:
        return _eval_rag(a, a.rest[0], retrieval_config(a))
    ks = _cut_offs(a.ks, a.k)
    levels = tuple(a.level.split(","))
    report = evaluate(a.index, a.rest[0], a.retriever, a.k, ks=ks, levels=levels,
                      out=a.out, config=retrieval_config(a), task_name=a.task, max_records=a.max_records,
                      progress=not a.quiet, qrels=a.qrels, split=a.split, trec_run=a.trec_run)
    if a.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_metrics(report)
    return 0


def _cut_offs(spec: str | None, k: int) -> tuple[int, ...] | None:
    """``--ks`` as numbers, none above ``-k`` (the hits retrieved); None: the default ones up to ``-k``."""
    if spec is None:
        return None
    try:
        ks = tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise usage(f"--ks takes cut-offs like 1,5,10, got {spec!r}") from None
    over = [x for x in ks if x > k]
    if over or min(ks) < 1:
        raise usage(f"--ks {spec}: cut-offs go from 1 to -k ({k} hits are retrieved)")
    return ks


def _cmd_score(a: argparse.Namespace) -> int:
    """``genret eval score GUESS GOLD``."""
    from genret.eval import score

    rank_keys = tuple(x.strip() for x in a.rank_keys.split(","))
    try:
        ks = tuple(int(x) for x in a.ks.split(","))
    except ValueError:
        raise usage(f"--ks takes cut-offs like 1,5,10, got {a.ks!r}") from None
    print(json.dumps(score(a.guess, a.gold, ks=ks, rank_keys=rank_keys), indent=1))
    return 0


def _cmd_suite(a: argparse.Namespace) -> int:
    """``genret eval suite SUITE.toml --out DIR``."""
    from genret.eval import run_suite

    result = run_suite(a.suite, a.out, progress=not a.quiet)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1) if a.json else result["table"])
    print(f"results, predictions and plots in {a.out}", file=sys.stderr)
    return 0


def score_parser() -> Parser:
    """``genret eval score``'s own parser (and help page)."""
    p = Parser(prog="genret eval score", description="Score KILT-format guesses against KILT gold with KILT's "
               "official metrics (retrieval at the --rank-keys level, and downstream); prints JSON.")
    p.add_argument("guess", metavar="GUESS", help="KILT-format predictions (JSONL, .gz ok)")
    p.add_argument("gold", metavar="GOLD", help="KILT-format gold records (JSONL, .gz ok)")
    p.add_argument("--ks", default="1,5,10,20", help="cut-offs of the retrieval metrics")
    p.add_argument("--rank-keys", default="wikipedia_id",
                   help="a hit's id: wikipedia_id (page level) or wikipedia_id,start_paragraph_id (passage level)")
    add_output_flags(p)
    p.set_defaults(func=_cmd_score)
    return p


def suite_parser() -> Parser:
    """``genret eval suite``'s own parser (and help page)."""
    p = Parser(prog="genret eval suite", description="Run every task × retriever of a suite (a TOML file; see "
               "genret.eval.run_suite) and print the results table, cells marked † where a retriever differs "
               "significantly from the baseline.")
    p.add_argument("suite", metavar="SUITE", help="the suite's TOML file")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: results.json, results.md, predictions/, runs/ and recall plots")
    p.add_argument("--json", action="store_true", help="print results.json's content instead of the table")
    add_output_flags(p)
    p.set_defaults(func=_cmd_suite)
    return p


# ``genret eval score|suite``: commands of their own under ``eval`` (``_main.parse`` routes them here)
SUBCOMMANDS = {"score": score_parser, "suite": suite_parser}


def _eval_rag(a: argparse.Namespace, task_file: str, config) -> int:
    """``genret eval INDEX TASK.jsonl --rag``: answers and provenance scored together (``--compare``: closed
    book vs retrieval vs retrieval + demonstrations, one table)."""
    from genret.eval import compare_rag, evaluate_rag, rag_table

    with ExitStack() as stack:
        pipeline = open_from_args(a, stack, config)
        if getattr(a, "compare", False):
            reports = compare_rag(pipeline, task_file, task_name=a.task, max_records=a.max_records,
                                  level=a.level.split(",")[0], progress=not a.quiet)
            print(json.dumps(reports, indent=1) if a.json else f"task {task_file}\n" + rag_table(reports))
            return 0
        report = evaluate_rag(pipeline, task_file, task_name=a.task, max_records=a.max_records,
                              level=a.level.split(",")[0], out=a.out, progress=not a.quiet)
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"task {report['task']}: {report['records']} records, {report['seconds']:.1f}s")
    for group in ("downstream", "kilt"):
        print(f"  {group:<10} " + "  ".join(f"{k}={v * 100:.1f}" for k, v in report[group].items()))
    print("  retrieval  " + "  ".join(f"{k}={v * 100:.1f}" for k, v in report["retrieval"].items()
                                      if k == "Rprec" or k.startswith("recall@")))
    return 0


def register(sub) -> None:
    """Add ``eval`` to the top-level commands."""
    ev = sub.add_parser("eval", help="evaluate an index on a KILT task file or a BEIR folder, or score KILT guesses",
                        description="genret eval INDEX TASK.jsonl|BEIR_FOLDER|QUERIES --qrels QRELS | "
                        "genret eval score GUESS.jsonl GOLD.jsonl | genret eval suite SUITE.toml --out DIR "
                        "(each with its own --help). Reports KILT's metrics and IR metrics through ir-measures "
                        "(nDCG@10, MRR@10, MAP, R@k). Refuses a task none of whose gold documents is in the index, "
                        "and warns when some are missing.")
    ev.add_argument("index", metavar="INDEX|score|suite")
    ev.add_argument("rest", nargs="+", metavar="FILE")
    add_retriever_flags(ev)
    ev.add_argument("--max-records", type=int, default=None, help="evaluate the first N records only")
    ev.add_argument("-k", type=int, default=100, help="hits retrieved per record")
    ev.add_argument("--ks", default=None, help="cut-offs, e.g. 1,5,10,20 (default: 1, 5, 10, 20, 100 up to -k, and "
                    "-k itself)")
    ev.add_argument("--level", default="page,passage", help="page, passage or both (comma-separated)")
    ev.add_argument("--out", default=None, help="write KILT-format predictions here")
    ev.add_argument("--trec-run", default=None, metavar="FILE",
                    help="write the page-level run as a TREC run file (docno = page id, e.g. a BEIR _id)")
    ev.add_argument("--qrels", default=None, metavar="FILE",
                    help="TREC or BEIR qrels for the IR metrics (needed for a query file: queries.jsonl or .tsv)")
    ev.add_argument("--split", default=None, help="BEIR folder: which qrels/SPLIT.tsv (default: test; refused for "
                    "other tasks)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--rag", action="store_true", help="answer with RAG and score answers + provenance together "
                    "(INDEX may be `none`: no retrieval)")
    ev.add_argument("--compare", action="store_true", help="with --rag: one table of closed book vs retrieval vs "
                    "retrieval + demonstrations (with --demos)")
    add_rag_flags(ev)
    add_output_flags(ev)
    ev.set_defaults(func=_cmd_eval)
