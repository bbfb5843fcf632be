"""Training pairs for the generative retriever: (task, query) → an identifier the index can decode.

Sources, mixed under task prompts (UGR):
- supervised, from KILT-format task files: the query → n-grams of the gold units (spans that start on a word the
  query shares first, as SEAL samples them, then spans at random starts) and the gold page's title;
- self-supervised, from the corpus alone (CorpusBrain-style): a sentence → its page title, a page's lead
  unit → its title, a span of a unit → another span of the same unit;
- pseudo-labelled (``_train_pseudo``): a keyword pseudo-query → spans/title of the unit the index's own
  retriever ranks first (``unit_pairs``, as for supervised records).
Every target is a token sequence that occurs in the FM-index (body spans are slices of a unit's text
tokens; titles are encoded with the index's title markers), so the model learns to write identifiers.
Query words are matched against whole words of the unit (``token_words``), not raw BPE pieces.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from genret.core import InputError
from genret.indexing import StoredUnit, UnitStore, sentence_spans

WORD_RE = re.compile(r"\w+")
QUERY_STOPWORDS = frozenset("a an the of in on at to for by with from and or is are was were be been what which who "
                            "whom when where why how did does do that this these those it its as".split())


@dataclass(frozen=True, slots=True)
class Pair:
    """One training example: the model reads the ``task`` prompt and ``query`` and writes ``target``."""

    task: str
    query: str
    target: tuple[int, ...]
    kind: Literal["body", "title"]


def content_words(text: str) -> set[str]:
    return {w.lower() for w in WORD_RE.findall(text) if w.lower() not in QUERY_STOPWORDS}


def token_words(encoder, tokens: list[int]) -> list[tuple[str, bool]]:
    """For each token, the lowercased word it belongs to and whether it starts that word.

    Byte-level BPE pieces such as ``ĠGuid`` + ``o`` make one word ``guido``, so a query word anchors on the
    first token of the same word in a unit (raw pieces like ``ĠGuid`` never equal a query word)."""
    texts = encoder.tokenizer.batch_decode([[t] for t in tokens])
    out: list[tuple[str, bool]] = []
    group: list[int] = []
    word = ""

    def close() -> None:
        out.extend((word.lower(), k == 0) for k in range(len(group)))

    for i, text in enumerate(texts):
        piece = text.strip()
        joins = group and not text[:1].isspace() and piece[:1].isalnum() and word[-1:].isalnum()
        if not joins:
            close()
            group, word = [], ""
        group.append(i)
        word += piece
    close()
    return out


def sample_spans(tokens: list[int], words: list[tuple[str, bool]], query_words: set[str], rng: random.Random, n: int,
           min_len: int, max_len: int) -> list[tuple[int, ...]]:
    """Up to ``n`` distinct spans of ``tokens``: first spans that start on a word the query shares (SEAL's
    query-anchored spans), then spans at random starts."""
    if not tokens:
        return []
    hits = [i for i, (w, first) in enumerate(words) if first and w in query_words]
    rng.shuffle(hits)
    starts = hits + [rng.randrange(0, len(tokens)) for _ in range(n * 2)]
    out: list[tuple[int, ...]] = []
    for s in starts:
        span = tuple(tokens[s:s + rng.randint(min_len, max_len)])
        if span and span not in out:
            out.append(span)
        if len(out) >= n:
            break
    return out


def unit_pairs(task: str, query: str, unit: StoredUnit, encoder, rng: random.Random, *, spans: int,
               min_len: int, max_len: int, title: bool) -> list[Pair]:
    """Pairs for one (query, gold unit): query-anchored body spans of the unit, and its title."""
    toks = encoder.text_tokens(unit.text)
    words = token_words(encoder, toks)
    pairs = [Pair(task, query, span, "body")
             for span in sample_spans(toks, words, content_words(query), rng, spans, min_len, max_len)]
    if title and unit.title:
        pairs.append(Pair(task, query, tuple(encoder.title_tokens(unit.title)), "title"))
    return pairs


def supervised_pairs(records: Iterable[dict], store: UnitStore, encoder, *, task: str, rng: random.Random,
                     spans_per_record: int = 3, min_len: int = 2, max_len: int = 5,
                     titles: bool = True) -> Iterator[Pair]:
    """Pairs from KILT-format records whose provenance points into ``store``'s pages."""
    for rec in records:
        query = str(rec.get("input", "")).strip()
        if not query:
            continue
        seen_pages: set[str] = set()
        for out in rec.get("output", []):
            for prov in out.get("provenance", []) or []:
                page = str(prov.get("wikipedia_id", ""))
                par = prov.get("start_paragraph_id")
                units = store.units_of(page, int(par)) if par is not None else store.units_of(page)[:1]
                for u in units[:1]:
                    yield from unit_pairs(task, query, u, encoder, rng, spans=spans_per_record, min_len=min_len,
                                          max_len=max_len, title=titles and page not in seen_pages)
                    seen_pages.add(page)


def corpus_pairs(store: UnitStore, encoder, *, rng: random.Random, n: int, task: str = "generic",
                 min_len: int = 2, max_len: int = 5) -> list[Pair]:
    """About ``n`` self-supervised pairs from a random sample of units (needs no task data)."""
    if len(store) == 0:
        raise InputError("the index holds no units")
    ids = rng.sample(range(len(store)), min(len(store), max(1, n // 2)))
    pairs: list[Pair] = []
    units: list[StoredUnit] = store.get(sorted(ids))
    for u in units:
        spans = sentence_spans(u.text)
        title = tuple(encoder.title_tokens(u.title)) if u.title else ()
        if spans and title:
            s, e = spans[rng.randrange(len(spans))]
            pairs.append(Pair("page", u.text[s:e], title, "title"))  # sentence -> title
            if u.start_paragraph == 1:
                pairs.append(Pair("page", u.text[:400], title, "title"))  # lead -> title
        if len(spans) >= 2:  # span -> span: one sentence as the query, n-grams of another as targets
            (qs, qe), (ts, te) = rng.sample(spans, 2)
            toks = encoder.text_tokens(u.text[ts:te])
            words = token_words(encoder, toks)
            for span in sample_spans(toks, words, content_words(u.text[qs:qe]), rng, 1, min_len, max_len):
                # a slice of a sentence's own tokens may tokenise differently inside the unit: keep exact ones
                pairs.append(Pair(task, u.text[qs:qe], span, "body"))
    rng.shuffle(pairs)
    return pairs[:n]


def mix(sources: dict[str, list[Pair]], rng: random.Random, weights: dict[str, float] | None = None) -> list[Pair]:
    """Interleave several pair lists (multi-task mixing) in proportion to ``weights`` (default: sizes)."""
    weights = weights or {name: float(len(p)) for name, p in sources.items()}
    total = sum(weights.values()) or 1.0
    size = sum(len(p) for p in sources.values())
    mixed: list[Pair] = []
    for name, pairs in sources.items():
        want = int(round(size * weights[name] / total))
        if pairs:
            mixed.extend(pairs[i % len(pairs)] for i in range(want))
    rng.shuffle(mixed)
    return mixed
