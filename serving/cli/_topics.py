"""The queries of a batch ``genret search`` (stdin, ``-``, or ``--topics FILE``) in the three shapes researchers write
them, one query a line:

* ``json``: a JSON value a line: a query string, or ``{"query": …}`` with optional ``k``, ``task`` and ``id`` (any
  JSON value, echoed back), nested at most ``MAX_DEPTH`` deep;
* ``tsv``: ``qid<TAB>query`` (Pyserini's and MS MARCO's topics); the qid is the answer's ``id``;
* ``text``: the line is the query; its line number is the answer's ``id``.

``auto`` (the default) decides per file from its first non-blank line: JSON when it starts with ``{`` or ``[`` or
is a JSON string, else TSV when it holds a tab, else text. Blank lines are skipped (their numbers still count). Each
line becomes one request, ``{"line", "query", "k", "task"[, "id"]}``, or ``{"line", "error"}`` for a line that cannot
be asked (the command answers it with an error record and goes on).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ._common import UsageError, text_arg
from ._flags import MAX_K, check_task_flag

FORMATS = ("auto", "json", "tsv", "text")
MAX_DEPTH = 32  # nesting of a JSON line (arrays and objects): deeper is that line's error
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a string (skipped whole) or a bracket


def topic_lines(path: str | None) -> Iterator[str]:
    """The lines of ``path`` (``.gz`` read transparently), or stdin's with None; bytes that are not UTF-8 become
    lone surrogates (``text_arg`` then names them in that line's error)."""
    if path is None:
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:  # replaced by a text stream (tests)
            yield from sys.stdin
            return
        for line in raw:
            yield line.decode("utf-8", "surrogateescape")
        return
    from genret.core import InputError

    if not Path(path).is_file():
        raise InputError("no such file", path=path)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
        for line in fh:
            yield line.decode("utf-8", "surrogateescape")


def detect(line: str) -> str:
    """The format a file whose first non-blank line is ``line`` is in (see the module docstring)."""
    text = line.strip()
    if text.startswith(("{", "[")):
        return "json"
    if text.startswith('"'):
        try:
            if isinstance(json.loads(text), str):
                return "json"
        except ValueError:
            pass
    return "tsv" if "\t" in line else "text"


def requests(lines, a: argparse.Namespace, fmt: str = "auto") -> Iterator[dict]:
    """One request per non-blank line (see the module docstring); ``a`` gives the default ``k`` and ``task``."""
    from genret.core import GenretError

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = detect(line)
        try:
            yield {"line": number, **_PARSERS[fmt](line, number, a)}
        except (ValueError, UsageError, GenretError) as exc:  # bad JSON or fields, bad text, an unknown task
            yield {"line": number, "error": " ".join(str(exc).split())}


def _text(line: str, number: int, a: argparse.Namespace) -> dict:
    query = line.strip()
    text_arg(query, "query")
    return {"id": number, "query": query, "k": a.k, "task": a.task}


def _tsv(line: str, number: int, a: argparse.Namespace) -> dict:
    qid, tab, query = line.rstrip("\r\n").partition("\t")
    if not tab:
        raise ValueError("expected qid<TAB>query (a TSV topics line)")
    if not qid.strip():
        raise ValueError("the qid is blank")
    if not query.strip():
        raise ValueError("the query is blank")
    text_arg(qid, "qid")
    text_arg(query, "query")
    return {"id": qid.strip(), "query": query.strip(), "k": a.k, "task": a.task}


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


def _json(line: str, number: int, a: argparse.Namespace) -> dict:
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


_PARSERS = {"json": _json, "tsv": _tsv, "text": _text}


def qid(request: dict) -> str:
    """The TREC run's query id of a request: its ``id`` (a JSON id that is not a string or a number: as JSON),
    else its line number."""
    if "id" not in request:
        return str(request["line"])
    value = request["id"]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
