"""Keys that do not come from decoding: the query's own n-grams (SEAL's ``add_query_to_keys``), and which
keys carry no content (stopwords, punctuation).

Query keys: every run of up to ``max_words`` consecutive words of the query, in each of its case variants
(every word as written or with its first letter upper-cased), written as it appears mid-sentence in the
corpus (with a leading space) and at the start of a paragraph (without) — kept when the index holds it.  The
model then scores them by teacher forcing like any decoded key, so a query word counts as much as the model
thinks it belongs in a relevant passage, weighed against its corpus frequency.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
_ALNUM = re.compile(r"\w", re.UNICODE)

# English function words (a common IR list; lower case).  A key made only of these, or of punctuation, says
# nothing about what a passage is about, however likely the model finds it.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once
only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves s t d ll m re ve y
""".split())


def query_words(query: str) -> list[str]:
    """The query's words and punctuation marks, in order."""
    return _WORD.findall(query)


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` that are not stopwords."""
    return [w.lower() for w in _WORD.findall(text) if _ALNUM.search(w) and w.lower() not in STOPWORDS]


def has_content(text: str) -> bool:
    """True if ``text`` holds at least one word that is not a stopword."""
    return bool(content_words(text))


def _case_variants(words: Sequence[str], limit: int) -> Iterable[tuple[str, ...]]:
    options = [sorted({w, w[:1].upper() + w[1:]}) for w in words]
    return itertools.islice(itertools.product(*options), limit)


def query_ngram_strings(query: str, max_words: int = 3, max_variants: int = 8) -> list[str]:
    """Strings of the query's word n-grams (up to ``max_words`` words) in their case variants, each with and
    without a leading space; n-grams made only of stopwords or punctuation are left out."""
    words = [w for w in query_words(" ".join(query.split()))]
    out: dict[str, None] = {}
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_words) + 1):
            span = words[i:j]
            if not _ALNUM.search(span[0]) or not has_content(" ".join(span)):
                continue
            for variant in _case_variants(span, max_variants):
                text = _join(variant)
                out.setdefault(" " + text)
                out.setdefault(text)
    return list(out)


def _join(words: Sequence[str]) -> str:
    """Words joined as text: no space before punctuation (``"U.S."``, ``"it's"`` stay as typed)."""
    text = ""
    for w in words:
        text += w if (not text or not _ALNUM.search(w[0])) else " " + w
    return text


def content_token_ids(tokenizer, texts: Iterable[str]) -> set[int]:
    """Token ids of the content words of ``texts`` as the tokenizer writes them (with and without a leading
    space, as typed and capitalised) — the tokens a copy prior boosts."""
    words = {w for t in texts for w in _WORD.findall(t) if _ALNUM.search(w) and w.lower() not in STOPWORDS}
    forms = set()
    for w in words:
        for v in {w, w[:1].upper() + w[1:], w.lower()}:
            forms.update((v, " " + v))
    forms = sorted(forms)
    if not forms:
        return set()
    ids = tokenizer(forms, add_special_tokens=False)["input_ids"]
    return {i for seq in ids for i in seq}
