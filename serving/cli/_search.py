"""``genret search``: one query from the command line, or many read from stdin (``genret search INDEX -``), so that
batch use pays the start-up (imports, the index, the model) once.

On stdin each non-blank line is one JSON value: a query string, or an object ``{"query": …}`` with optional ``k``,
``task`` and ``id`` (any JSON value, echoed back), nested at most ``MAX_DEPTH`` deep. Each is answered with one JSON
line on stdout, in input order: ``{"query", "hits"}`` (and ``id``), or ``{"line", "error"}`` for a line that cannot be
answered; the command then goes on and exits with status 2 at the end. Queries are run ``--batch`` at a time (one
``batch_search`` per group of equal ``k`` and task), each group's lines written and flushed as soon as it is answered:
``--batch 1`` answers every line before reading the next one (a co-process asking one question at a time).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator

from ._common import UsageError, text_arg, usage
from ._flags import MAX_BATCH, MAX_K, add_retriever_flags, check_range, check_task_flag, retrieval_config

STDIN = "-"
MAX_DEPTH = 32  # nesting of a stdin line's JSON (arrays and objects): deeper is that line's error
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a string (skipped whole) or a bracket


def register(sub) -> None:
    """Add ``search`` to the top-level commands."""
    se = sub.add_parser("search", help="search an index (one query, or JSON lines from stdin)",
                        description="genret search INDEX QUERY | genret search INDEX - < queries.jsonl "
                        '(each line "a query" or {"query": …, "k": …, "task": …, "id": …}; one JSON line answers '
                        "each)")
    se.add_argument("index")
    se.add_argument("query", help="the query, or - to read JSON lines from stdin")
    se.add_argument("-k", type=int, default=10, help="hits per query")
    add_retriever_flags(se)
    se.add_argument("--json", action="store_true", help="print the hits as JSON (stdin mode always does)")
    se.add_argument("--batch", type=int, default=16, metavar="N",
                    help="stdin mode: queries per batch_search call (1: answer each line before reading the next)")
    se.set_defaults(func=_cmd_search)


def _cmd_search(a: argparse.Namespace) -> int:
    from genret.indexing import Index
    from genret.retrieval import load_retriever

    check_range(a.k, "-k", 1, MAX_K)
    check_range(a.batch, "--batch", 1, MAX_BATCH)
    if a.query != STDIN:
        text_arg(a.query, "query")
        if not a.query.strip():
            raise usage("the query is empty: give a query, or - to read JSON lines from stdin")
    config = retrieval_config(a)
    with Index(a.index) as index:
        retriever = load_retriever(index, a.retriever, config)
        if a.query == STDIN:
            return _answer_stdin(retriever, a)
        hits = retriever.search(a.query, a.k, task=a.task)
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


def _stdin_lines() -> Iterator[str]:
    """stdin's lines; bytes that are not UTF-8 become lone surrogates (``text_arg`` then names them)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # replaced by a text stream (tests)
        yield from sys.stdin
        return
    for line in raw:
        yield line.decode("utf-8", "surrogateescape")


def _answer_stdin(retriever, a: argparse.Namespace) -> int:
    from genret.core import GenretError

    failed = 0
    for group in _chunks(_requests(_stdin_lines(), a), a.batch):
        out: dict[int, dict] = {}
        todo = [r for r in group if "error" not in r]
        for r in group:
            if "error" in r:
                out[r["line"]] = {"line": r["line"], "error": r["error"]}
        for key in dict.fromkeys((r["k"], r["task"]) for r in todo):
            same = [r for r in todo if (r["k"], r["task"]) == key]
            try:
                results = retriever.batch_search([r["query"] for r in same], key[0], task=key[1])
            except GenretError as exc:  # a request this retriever cannot take (e.g. a granularity)
                results = [exc] * len(same)
            for r, hits in zip(same, results):
                out[r["line"]] = _answer(r, hits)
        for line in sorted(out):
            failed += "error" in out[line]
            sys.stdout.write(json.dumps(out[line], ensure_ascii=False) + "\n")
        sys.stdout.flush()
    if failed:
        print(f"genret: error: {failed} line(s) of stdin could not be answered (their output lines carry "
              '"error")', file=sys.stderr)
        return 2
    return 0


def _answer(request: dict, hits) -> dict:
    if isinstance(hits, Exception):
        return {"line": request["line"], "error": " ".join(str(hits).split())}
    answer = {"id": request["id"]} if "id" in request else {}
    return {**answer, "query": request["query"], "hits": [h.to_dict() for h in hits]}


def _chunks(requests: Iterator[dict], size: int) -> Iterator[list[dict]]:
    group: list[dict] = []
    for r in requests:
        group.append(r)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def _requests(lines, a: argparse.Namespace) -> Iterator[dict]:
    """One request per non-blank line: ``{"line", "query", "k", "task"[, "id"]}`` or ``{"line", "error"}``."""
    from genret.core import GenretError

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield {"line": number, **_request(line, a)}
        except (ValueError, UsageError, GenretError) as exc:  # bad JSON or fields, bad text, an unknown task
            yield {"line": number, "error": " ".join(str(exc).split())}


def _nesting(line: str) -> int:
    """How deep ``line``'s arrays and objects nest (counted up to one past ``MAX_DEPTH``)."""
    depth = deepest = 0
    for token in _NESTING.finditer(line):
        c = token.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif c in "]}":
            depth -= 1
    return deepest


def _request(line: str, a: argparse.Namespace) -> dict:
    if _nesting(line) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON value ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(value, str):
        value = {"query": value}
    if not isinstance(value, dict) or not isinstance(value.get("query"), str):
        raise ValueError('expected "a query" or {"query": "…"}')
    unknown = set(value) - {"query", "k", "task", "id"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}: a line takes query, k, task and id")
    query = value["query"]
    if not query.strip():
        raise ValueError("the query is blank")
    text_arg(query, "query")
    k = value.get("k", a.k)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer of at least 1 and at most {MAX_K}, got {k!r}")
    task = value.get("task", a.task)
    if task is not None and not isinstance(task, str):
        raise ValueError(f"task must be a name, got {task!r}")
    if task != a.task:
        check_task_flag(argparse.Namespace(**{**vars(a), "task": task}))
    request = {"query": query, "k": k, "task": task}
    if "id" in value:
        request["id"] = value["id"]
    return request
