"""Labels for training without annotations, and hard negatives for the rank loss.

- ``pseudo_labels``: pseudo-queries cut from the corpus (the content words of a random sentence of a unit,
  about two thirds of them kept, in order — a keyword query, not a verbatim copy) and labelled by the index's
  own BM25 or dense retriever: the top hit(s) are the gold units, the next hits the hard negatives.
- ``record_labels``: (query, gold units) from KILT-format task records, through their provenance.
- ``add_negatives``: hard negatives for labels that have none: the retriever's hits that are not gold
  (LTRGR uses BM25 negatives), else random units.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from genret.core import ConfigError
from genret.indexing import Index, UnitStore, sentence_spans

from ._pairs import QUERY_STOPWORDS, WORD_RE

log = logging.getLogger("genret")

PSEUDO_RETRIEVERS = {"bm25": "bm25", "dense": "dense"}  # --pseudo-labels value -> index component


@dataclass(frozen=True, slots=True)
class Labelled:
    """A query with its gold unit ids and (hard) negative unit ids, under a task prompt."""

    task: str
    query: str
    gold: tuple[int, ...]
    negatives: tuple[int, ...] = ()


def label_retriever(index: Index, name: str | None):
    """The retriever that labels pseudo-queries / mines negatives: ``bm25`` or ``dense`` (None: none)."""
    if name in (None, "none"):
        return None
    from ..._registry import load_retriever

    if name not in PSEUDO_RETRIEVERS:
        raise ConfigError(f"unknown pseudo-label retriever {name!r}: use bm25, dense or none")
    if not index.has(PSEUDO_RETRIEVERS[name]):
        raise ConfigError(f"index {index.path} has no {PSEUDO_RETRIEVERS[name]!r} component for --pseudo-labels {name}")
    return load_retriever(index, name)


def pseudo_query(text: str, rng: random.Random, max_words: int = 12) -> str | None:
    """A keyword pseudo-query from one sentence of ``text`` (None when the text has too few content words)."""
    spans = sentence_spans(text) or [(0, len(text))]
    s, e = spans[rng.randrange(len(spans))]
    words = [w for w in WORD_RE.findall(text[s:e]) if w.lower() not in QUERY_STOPWORDS]
    if len(words) < 3:
        return None
    keep = max(3, min(max_words, round(len(words) * 2 / 3)))
    picked = sorted(rng.sample(range(len(words)), keep))
    return " ".join(words[i] for i in picked)


def pseudo_labels(store: UnitStore, retriever, rng: random.Random, n: int, *, task: str = "generic", top: int = 1,
                  negatives: int = 3, batch: int = 64) -> list[Labelled]:
    """About ``n`` pseudo-labelled queries: the retriever's top ``top`` hits are gold, the next are negatives."""
    if n <= 0 or len(store) == 0:
        return []
    units = store.get(sorted(rng.sample(range(len(store)), min(len(store), n))))
    queries = [q for q in (pseudo_query(u.text, rng) for u in units) if q]
    out: list[Labelled] = []
    for i in range(0, len(queries), batch):
        chunk = queries[i:i + batch]
        for q, hits in zip(chunk, retriever.batch_search(chunk, k=top + negatives)):
            ids = [h.unit_id for h in hits]
            if ids:
                out.append(Labelled(task, q, tuple(ids[:top]), tuple(ids[top:top + negatives])))
    log.info("pseudo labels: %d of %d sampled units gave a labelled query", len(out), len(units))
    return out


def record_labels(records: Iterable[dict], store: UnitStore, task: str) -> list[Labelled]:
    """(query, gold units) of KILT-format records (the first unit of each provenance paragraph)."""
    out = []
    for rec in records:
        query = str(rec.get("input", "")).strip()
        gold: list[int] = []
        for o in rec.get("output", []):
            for prov in o.get("provenance", []) or []:
                page, par = str(prov.get("wikipedia_id", "")), prov.get("start_paragraph_id")
                units = store.units_of(page, int(par)) if par is not None else store.units_of(page)[:1]
                gold += [u.unit_id for u in units[:1] if u.unit_id not in gold]
        if query and gold:
            out.append(Labelled(task, query, tuple(gold)))
    return out


def add_negatives(labels: list[Labelled], store: UnitStore, retriever, rng: random.Random, n: int,
                  batch: int = 64) -> list[Labelled]:
    """Fill each label's negatives up to ``n``: retriever hits that are not gold, else random units."""
    out = list(labels)
    todo = [i for i, lab in enumerate(out) if len(lab.negatives) < n]
    if retriever is not None:
        for s in range(0, len(todo), batch):
            idx = todo[s:s + batch]
            k = n + max(len(out[i].gold) + len(out[i].negatives) for i in idx)
            for i, hits in zip(idx, retriever.batch_search([out[i].query for i in idx], k=k)):
                lab = out[i]
                extra = [h.unit_id for h in hits if h.unit_id not in lab.gold and h.unit_id not in lab.negatives]
                out[i] = replace(lab, negatives=(lab.negatives + tuple(extra))[:n])
    for i, lab in enumerate(out):  # too few hits (or no retriever): random units
        taken = set(lab.gold) | set(lab.negatives)
        want = min(n - len(lab.negatives), len(store) - len(taken))
        extra: list[int] = []
        for _ in range(50 * n):
            if len(extra) >= want:
                break
            u = rng.randrange(len(store))
            if u not in taken:
                taken.add(u)
                extra.append(u)
        out[i] = replace(lab, negatives=lab.negatives + tuple(extra))
    return [lab for lab in out if lab.negatives]
