"""TREC runs and qrels: reading judgments (TREC or BEIR files), making KILT predictions a document run, writing it.

A *run* is ``{query id: {doc id: score}}`` with the documents of each query in rank order (best first); *qrels* are
``{query id: {doc id: relevance}}``.  genret retrieves units (paragraphs, windows, sentences) of pages; a run's
document is a page at page level (doc id = the page id, e.g. a BEIR ``_id``) or a paragraph at passage level
(``page id + "+" + paragraph id``, KILT's passage key).  A document takes the score of its best unit and the rank of
its first one: the first time a page turns up in the ranked hits (hits are best first, so that is also its
highest score); the units below it add nothing, as at KILT page level.  So a run holds at most ``k`` documents and
fewer when several units of one page are among the ``k`` hits.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from genret.core import GenretError, InputError
from genret.indexing import open_text

from ._kilt_io import id_key

__all__ = ["Qrels", "Run", "doc_id", "doc_run", "read_qrels", "write_trec_run"]

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

_SPACE = re.compile(r"\s")


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Judgments from a TREC qrels file (``qid iteration docno relevance``, whitespace-separated) or a BEIR one
    (``query-id<TAB>corpus-id<TAB>score``, with or without its header line); a line holding a tab is split at tabs,
    others at whitespace.  ``.gz`` is read transparently; a pair judged twice keeps its last judgment."""
    name = str(path)
    qrels: Qrels = {}
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            cols = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if not cols:
                continue
            if len(cols) not in (3, 4):
                raise InputError(f"expected 4 columns (TREC: qid iter docno rel) or 3 (BEIR: query-id corpus-id "
                                  f"score), got {len(cols)}", path=name, line=line_no)
            try:
                rel = int(float(cols[-1]))
            except ValueError:
                if line_no == 1 and len(cols) == 3:  # BEIR's header: query-id corpus-id score
                    continue
                raise InputError(f"relevance {cols[-1]!r} is not a number", path=name, line=line_no) from None
            qrels.setdefault(cols[0], {})[cols[-2]] = rel
    if not qrels:
        raise InputError("holds no judgments", path=name)
    return qrels


def doc_id(item: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """A provenance item's document id at a level (KILT's id: the keys' values joined by ``+``), None without."""
    if not all(key in item for key in keys):
        return None
    return "+".join(str(item[key]).strip() for key in keys)


def doc_run(predictions: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> Run:
    """The run of KILT predictions (provenance best first, each item with its ``score``) at the level ``keys``
    names: each document once, with the score of its first (best) unit."""
    run: Run = {}
    for pred in predictions:
        docs: dict[str, float] = {}
        for item in pred["output"][0].get("provenance", []):
            doc = doc_id(item, keys)
            if doc is not None and doc not in docs:
                docs[doc] = float(item["score"])
        run[id_key(pred["id"])] = docs
    return run


def write_trec_run(path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str) -> Path:
    """Write ``run`` as a TREC run file (``qid Q0 docno rank score tag``, rank from 1 in the run's order), atomically.

    Scores are written exactly (Python's shortest round-trip form), so a scorer reading the file ranks as genret
    did; like ``trec_eval``, it orders tied scores by docno, not by the rank column.  Ids holding whitespace
    cannot be written (the format splits on it): a :class:`GenretError` names the first."""
    file = Path(path)
    if _SPACE.search(tag) or not tag:
        raise GenretError(f"a TREC run tag must be one word, got {tag!r}")
    lines = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(docs.items(), 1):
            if _SPACE.search(qid) or _SPACE.search(doc):
                raise GenretError(f"query {qid!r} / document {doc!r}: a TREC run cannot hold ids with whitespace")
            lines.append(f"{qid} Q0 {doc} {rank} {float(score)!r} {tag}\n")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.chmod(temporary, 0o644)
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return file
