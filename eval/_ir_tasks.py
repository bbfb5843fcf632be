"""What ``genret eval`` can evaluate on: a KILT task file, a BEIR folder, or a query file with TREC/BEIR qrels.

Every task becomes KILT-shaped gold records (so the KILT metrics apply unchanged) and, where the task came with
judgments, page-level qrels (so the IR metrics use the graded judgments as given):

* a KILT task file (``{"id", "input", "output": [...]}``): the KILT gold; qrels only if ``qrels`` is given, else the
  IR metrics judge from the gold provenance (every page or paragraph it names is relevant, grade 1);
* a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/SPLIT.tsv``): the queries judged in the split, in the
  order of ``queries.jsonl``; one gold output per document judged relevant (score > 0), so KILT's recall@k is the
  share of relevant documents in the top k and its R-Precision whether the first hit is relevant;
* a query file with ``qrels``: BEIR's ``queries.jsonl`` (``{"_id", "text"}``) or MS MARCO's ``queries.tsv``
  (``qid<TAB>text``), made into gold the same way.

Tasks from judgments are judged per document (page), never per paragraph: they have no passage level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genret.core import ConfigError, InputError
from genret.indexing import open_text

from ._kilt_io import id_key, read_kilt
from ._trec import Qrels, doc_id, read_qrels

__all__ = ["EvalTask", "gold_from_qrels", "load_task", "qrels_from_gold"]


@dataclass
class EvalTask:
    """Gold records (KILT-shaped), page-level qrels when the task has judgments, and where they come from."""

    records: list[dict[str, Any]]
    qrels: Qrels | None
    kind: str  # "kilt", "beir" or "queries"
    qrels_source: str | None = None

    @property
    def judged(self) -> bool:
        """Built from judgments (BEIR, queries + qrels): page level only, no answers."""
        return self.kind != "kilt"


def load_task(path: str | os.PathLike[str], *, qrels: str | os.PathLike[str] | None = None,
              split: str | None = None) -> EvalTask:
    """Read a task (see the module docstring); ``qrels`` replaces a BEIR folder's own ``qrels/SPLIT.tsv``
    (``split`` default ``test``; a split names a BEIR folder's qrels only, so it is refused for other tasks)."""
    p = Path(path)
    if split is not None and not p.is_dir():
        raise ConfigError(f"{p}: a split ({split!r}) picks a BEIR folder's qrels/SPLIT.tsv, and this is a file; "
                          "evaluate the split's own file instead")
    if p.is_dir():
        split = split or "test"
        qrels_path = Path(qrels) if qrels is not None else p / "qrels" / f"{split}.tsv"
        if qrels is None and not qrels_path.is_file():
            have = sorted(f.stem for f in (p / "qrels").glob("*.tsv")) if (p / "qrels").is_dir() else []
            raise InputError(f"no qrels/{split}.tsv in this BEIR folder (splits: {', '.join(have) or 'none'})",
                             path=str(p))
        queries = _beir_queries(_first_file(p, ("queries.jsonl", "queries.jsonl.gz")))
        return _judged(queries, read_qrels(qrels_path), "beir", str(qrels_path))
    if not p.is_file():
        raise InputError("no such file", path=str(p))
    if p.name.endswith((".tsv", ".tsv.gz")):
        return _judged(_tsv_queries(p), _need_qrels(p, qrels), "queries", str(qrels))
    if _looks_like_beir_queries(p):
        return _judged(_beir_queries(p), _need_qrels(p, qrels), "queries", str(qrels))
    records = read_kilt(p)
    if qrels is None:
        return EvalTask(records, None, "kilt")
    return EvalTask(records, read_qrels(qrels), "kilt", str(qrels))


def gold_from_qrels(queries: Iterable[tuple[str, str]], qrels: Mapping[str, Mapping[str, int]]) -> list[dict]:
    """KILT-shaped gold: one record per query, one output per relevant document (an empty provenance when none)."""
    records = []
    for qid, text in queries:
        relevant = [doc for doc, rel in qrels.get(qid, {}).items() if rel > 0]
        outputs = [{"answer": "", "provenance": [{"wikipedia_id": doc}]} for doc in relevant]
        records.append({"id": qid, "input": text, "output": outputs or [{"answer": "", "provenance": []}]})
    return records


def qrels_from_gold(records: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> Qrels:
    """Binary qrels from KILT gold provenance at a level: every document any output names is relevant."""
    qrels: Qrels = {}
    for rec in records:
        docs = {doc: 1 for output in rec["output"] for item in output.get("provenance", [])
                if (doc := doc_id(item, keys)) is not None}
        if docs:
            qrels[id_key(rec["id"])] = docs
    return qrels


# ---------------------------------------------------------------------------------------------------- readers
def _judged(queries: list[tuple[str, str]], qrels: Qrels, kind: str, source: str) -> EvalTask:
    texts = dict(queries)
    missing = [qid for qid in qrels if qid not in texts]
    if missing:
        raise InputError(f"{len(missing)} judged query id(s) have no query text, e.g. {missing[0]!r}",
                         path=source)
    judged = [(qid, text) for qid, text in queries if qid in qrels]
    return EvalTask(gold_from_qrels(judged, qrels), qrels, kind, source)


def _need_qrels(path: Path, qrels: str | os.PathLike[str] | None) -> Qrels:
    if qrels is None:
        raise InputError("a query file needs its judgments: pass --qrels FILE (TREC or BEIR qrels)", path=str(path))
    return read_qrels(qrels)


def _first_file(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"no {names[0]} in this BEIR folder", path=str(folder))


def _looks_like_beir_queries(path: Path) -> bool:
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "_id" in first and "output" not in first
    return False


def _beir_queries(path: Path) -> list[tuple[str, str]]:
    out = []
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise InputError(f"invalid JSON ({exc})", path=str(path), line=line_no) from None
            if not isinstance(rec, dict) or "_id" not in rec or not isinstance(rec.get("text"), str):
                raise InputError("expected {\"_id\", \"text\"}", path=str(path), line=line_no)
            out.append((id_key(rec["_id"]), rec["text"]))
    return out


def _tsv_queries(path: Path) -> list[tuple[str, str]]:
    out = []
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            qid, tab, text = line.rstrip("\r\n").partition("\t")
            if not tab:
                raise InputError("expected qid<TAB>query", path=str(path), line=line_no)
            out.append((qid.strip(), text))
    return out
