"""``genret search``: one query from the command line, or many, one a line, from stdin (``genret search INDEX -``)
or a file (``--topics FILE``), so that batch use pays the start-up (imports, the index, the model) once.

A batch's lines are JSON values, ``qid<TAB>query`` TSV or plain text, detected per file (``--topics-format``
names it; see ``_topics``). Each is answered with one JSON line on stdout, in input order: ``{"id", "query",
"hits"}`` (``id``: a JSON line's own, if it has one; a TSV line's qid; a text line's number), or ``{"line",
"error"}`` for a line that cannot be answered; the command then goes on and exits with status 2 at the end.
Queries are run ``--batch`` at a time (one ``batch_search`` per group of equal ``k`` and task), each group's lines
written and flushed as soon as it is answered: ``--batch 1`` answers every line before reading the next one (a
co-process asking one question at a time). ``--trec-run FILE`` also writes the page-level run (each page once, at
its best unit; qids: the ids above, a line's number where it has none), as ``genret eval --trec-run`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from ._common import add_output_flags, text_arg, usage
from ._flags import MAX_BATCH, MAX_K, add_retriever_flags, check_range, retrieval_config
from ._topics import FORMATS, qid, requests, topic_lines

STDIN = "-"


def register(sub) -> None:
    """Add ``search`` to the top-level commands."""
    se = sub.add_parser("search", help="search an index (one query, or many: JSON lines, TSV topics or text lines)",
                        description="genret search INDEX QUERY | genret search INDEX - < queries | genret search "
                        "INDEX --topics FILE. A batch's lines are JSON (\"a query\" or {\"query\": …, \"k\": …, "
                        "\"task\": …, \"id\": …}), qid<TAB>query TSV (Pyserini, MS MARCO topics) or plain text, "
                        "detected per file; one JSON line answers each.")
    se.add_argument("index")
    se.add_argument("query", nargs="?", default=None, help="the query, or - to read queries from stdin")
    se.add_argument("--topics", default=None, metavar="FILE", help="read the queries from FILE (.gz ok), one a line")
    se.add_argument("--topics-format", choices=FORMATS, default="auto",
                    help="the batch's line format (auto: from its first line — JSON, else TSV if it holds a tab, "
                    "else text)")
    se.add_argument("-k", type=int, default=10, help="hits per query")
    add_retriever_flags(se)
    se.add_argument("--json", action="store_true", help="print the hits as JSON (a batch always does)")
    se.add_argument("--batch", type=int, default=16, metavar="N",
                    help="batch mode: queries per batch_search call (1: answer each line before reading the next)")
    se.add_argument("--trec-run", default=None, metavar="FILE",
                    help="also write the page-level run as a TREC run file (qids from the input)")
    add_output_flags(se)
    se.set_defaults(func=_cmd_search)


def _cmd_search(a: argparse.Namespace) -> int:
    from genret.indexing import Index
    from genret.retrieval import load_retriever

    check_range(a.k, "-k", 1, MAX_K)
    check_range(a.batch, "--batch", 1, MAX_BATCH)
    batch = _batch_source(a)
    config = retrieval_config(a)
    with Index(a.index) as index:
        retriever = load_retriever(index, a.retriever, config)
        if batch is not None:
            return _answer_batch(retriever, a, batch or None)
        hits = retriever.search(a.query, a.k, task=a.task)
    if a.trec_run:
        _write_run(a.trec_run, {"1": _page_run(hits)}, retriever)
    if a.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=1))
        return 0
    for h in hits:
        p = h.provenance
        text = " ".join((h.text or "").split())
        print(f"{h.rank:>3}. {h.score:.4f}  {p.title} [{p.wikipedia_id} ¶{p.start_paragraph_id}"
              f"{'' if p.end_paragraph_id == p.start_paragraph_id else '-' + str(p.end_paragraph_id)}]  "
              f"{text[:140]}")
        if h.matched:
            print("      matched: " + "; ".join(f"{n!r} {s:.2f}" for n, s in h.matched[:6]))
    return 0


def _batch_source(a: argparse.Namespace) -> str | None:
    """Where a batch's queries come from: ``--topics``' file, ``""`` for stdin, None for one query (checked)."""
    if (a.query is None) == (a.topics is None):
        raise usage("give either a query, - to read queries from stdin, or --topics FILE")
    if a.topics is not None:
        from genret.core import InputError

        if not Path(a.topics).is_file():
            raise InputError("no such file", path=a.topics)
        return a.topics
    if a.query == STDIN:
        return ""
    text_arg(a.query, "query")
    if not a.query.strip():
        raise usage("the query is empty: give a query, - to read queries from stdin, or --topics FILE")
    if a.topics_format != "auto":
        raise usage("--topics-format is for a batch: - (stdin) or --topics FILE")
    return None


def _answer_batch(retriever, a: argparse.Namespace, source: str | None) -> int:
    """Answer every line of ``source`` (None: stdin), ``a.batch`` lines a ``batch_search`` call."""
    from genret.core import GenretError

    failed = 0
    run: dict[str, dict[str, float]] = {}
    for group in _chunks(requests(topic_lines(source), a, a.topics_format), a.batch):
        out = {r["line"]: {"line": r["line"], "error": r["error"]} for r in group if "error" in r}
        todo = [r for r in group if "error" not in r]
        runs: dict[int, tuple[str, dict[str, float]]] = {}
        for key in dict.fromkeys((r["k"], r["task"]) for r in todo):
            same = [r for r in todo if (r["k"], r["task"]) == key]
            try:
                results = retriever.batch_search([r["query"] for r in same], key[0], task=key[1])
            except GenretError as exc:  # a request this retriever cannot take (e.g. a granularity)
                results = [exc] * len(same)
            for r, hits in zip(same, results):
                out[r["line"]] = _answer(r, hits)
                if not isinstance(hits, Exception):
                    runs[r["line"]] = (qid(r), _page_run(hits))
        for line in sorted(out):
            failed += "error" in out[line]
            sys.stdout.write(json.dumps(out[line], ensure_ascii=False) + "\n")
            if line in runs:
                run[runs[line][0]] = runs[line][1]
        sys.stdout.flush()
    if a.trec_run:
        _write_run(a.trec_run, run, retriever)
    if failed:
        print(f"genret: error: {failed} line(s) of {source or 'stdin'} could not be answered (their output lines "
              'carry "error")', file=sys.stderr)
        return 2
    return 0


def _page_run(hits) -> dict[str, float]:
    """A query's page-level run: each page once, with its best (first) unit's score."""
    docs: dict[str, float] = {}
    for h in hits:
        docs.setdefault(str(h.provenance.wikipedia_id), float(h.score))
    return docs


def _write_run(path: str, run: dict[str, dict[str, float]], retriever) -> None:
    from genret.eval import write_trec_run

    write_trec_run(path, run, f"genret-{retriever.name}")


def _answer(request: dict, hits) -> dict:
    if isinstance(hits, Exception):
        return {"line": request["line"], "error": " ".join(str(hits).split())}
    answer = {"id": request["id"]} if "id" in request else {}
    return {**answer, "query": request["query"], "hits": [h.to_dict() for h in hits]}


def _chunks(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    group: list[dict] = []
    for r in items:
        group.append(r)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
