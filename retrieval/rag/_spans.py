"""Span answers: decoding constrained to spans of the passages in the prompt, and grounding answers in them.

``SpanTrie`` holds, as a token trie, every span of a few passage texts that starts at a word (not a function
word) and holds no word of the question (``avoid``) — with ``focus``, only in the sentences sharing most
words with the question —, up to ``max_tokens`` tokens (each start tokenised as it is
and with a leading space, for tokenizers that mark one); decoding
may continue a node by its children and may end (EOS) where the span ends at a word boundary (or at a leaf).  A
completion built under it decodes to a substring of one passage.  The same machinery as the retriever's
FM-index constraint, sized for the 3–5 passages of one prompt (a trie of dicts; no index to build).

``locate`` maps an answer back to the passage it was copied from (``AnswerSpan``: passage number, character
offsets in the passage text, KILT provenance of the span); ``ground`` gives every answer that used passages at
least one citation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .._contract import Hit, Provenance

# encode(text) -> [(token id, start char, end char)] (a fast tokenizer's offsets), no special tokens
Encode = Callable[[str], list[tuple[int, int, int]]]

WORD = re.compile(r"\S+")  # a word as the passages hold it (punctuation attached)
NON_WORD = re.compile(r"\W+")  # what a word loses to be compared with the question's
ARTICLES = {"a", "an", "the"}
_ARTICLE = re.compile(r"^(the|an?)\s+(?=\S)", re.IGNORECASE)
# words a short answer does not start with (function words; articles may start one: answer metrics drop them), nor
# does it hold a word of the question (case-sensitive: the question's words are what it asks about, not the answer)
FUNCTION_WORDS = {"and", "or", "of", "in", "on", "at", "to", "for", "by", "with", "from", "as", "is",
             "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "which", "who", "he",
             "she", "they", "his", "her", "their", "but", "not", "also", "has", "have", "had", ""}


@dataclass(frozen=True, slots=True)
class AnswerSpan:
    """Where a span answer was copied from: the cited passage's number in the prompt, the answer's character offsets
    in that passage's text (``Hit.text``, end exclusive) and its KILT provenance (the unit's page and paragraphs,
    characters of the span: the unit's start character plus the offsets)."""

    number: int
    start: int
    end: int
    provenance: Provenance


class _Node:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.end = False  # a span may end here (word boundary)


class SpanTrie:
    """Token trie over the word-initial spans of ``texts`` (at most ``max_tokens`` tokens, ``max_chars`` characters
    from the start); ``allowed(prefix)`` is the token ids that may follow ``prefix`` (``eos`` included where a span
    may end)."""

    def __init__(self, texts: Sequence[str], encode: Encode, eos: Sequence[int], *, max_tokens: int = 16,
                 max_chars: int = 160, avoid: str = "", focus: int = 0) -> None:
        self.root = _Node()
        self.eos = list(eos)
        asked = set(re.findall(r"\w+", avoid))
        for text in focus_sentences(texts, avoid, focus):
            for m in WORD.finditer(text):
                word = NON_WORD.sub("", m.group())
                if word.lower() in FUNCTION_WORDS or word in asked:
                    continue
                piece = text[m.start():m.start() + max_chars]
                # the span stops before the next word of the question
                stop = next((w.start() for w in WORD.finditer(piece) if NON_WORD.sub("", w.group()) in asked),
                            len(piece))
                first = len(m.group()) if word.lower() in ARTICLES else 0  # an article alone is no answer
                for lead in ("", " "):
                    self._add(encode(lead + piece), piece, len(lead), max_tokens, stop, first)

        _prune(self.root)

    def _add(self, toks: list[tuple[int, int, int]], piece: str, shift: int, max_tokens: int, stop: int,
             first: int) -> None:
        node, last = self.root, 0
        for depth, (tid, _, end) in enumerate(toks[:max_tokens], 1):
            end -= shift
            if end > stop and node is not self.root:
                break
            node, last = node.children.setdefault(tid, _Node()), end
            if len(piece[:end].rstrip()) <= first:
                continue
            if end >= len(piece) or (end > 0 and not piece[end].isalnum()) or depth == max_tokens:
                node.end = True
        node.end = node.end or len(piece[:last].rstrip()) > first  # a leaf can end (not on an article alone)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for tid in prefix:
            if tid in self.eos:
                return self.eos  # finished row (padding follows)
            node = node.children.get(tid)
            if node is None:
                return self.eos
        out = list(node.children)
        if node.end and node is not self.root:
            out.extend(self.eos)
        return out or self.eos


SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# words that ask rather than say what is asked about ("who" and "which" are function words already)
QUESTION_WORDS = {"what", "when", "where", "why", "how", "do", "does", "did"}


def content_terms(text: str) -> set[str]:
    """The words of ``text`` that say what it is about (lower case): not function words, articles or question
    words — "the" or "when" in a question is no word its answer's sentence shares with it."""
    return {w.lower() for w in re.findall(r"\w+", text)} - FUNCTION_WORDS - ARTICLES - QUESTION_WORDS


def ranked_sentences(texts: Sequence[str], question: str) -> list[tuple[int, int, str, int]]:
    """Every sentence of ``texts`` as ``(passage number from 1, its first character in that passage, the sentence,
    content words it shares with question)``, those sharing most first (ties: passage order)."""
    q = content_terms(question)
    sents = []
    for n, text in enumerate(texts, 1):
        pos = 0
        for sent in SENTENCE_BREAK.split(text):
            at = text.find(sent, pos)
            pos = at + len(sent)
            if sent.strip():
                sents.append((n, at, sent, len(q & content_terms(sent))))
    return sorted(sents, key=lambda s: -s[3])  # stable: ties keep their order


def focus_sentences(texts: Sequence[str], question: str, focus: int) -> list[str]:
    """The ``focus`` sentences of ``texts`` sharing most content words with ``question`` (passage order kept; ties
    go to the earlier passage), where the answer to it most likely is; all of ``texts`` when ``focus`` is 0 or no
    sentence shares a word."""
    if not focus or not content_terms(question):
        return list(texts)
    top = ranked_sentences(texts, question)[:focus]
    if not top or not top[0][3]:
        return list(texts)
    return [sent for _, _, sent, shared in sorted(top, key=lambda s: (s[0], s[1])) if shared]


def _prune(node: _Node) -> bool:
    """Drop the branches in which no span may end (an article alone before a question word); True if any may."""
    for tid in [t for t, child in node.children.items() if not _prune(child)]:
        del node.children[tid]
    return node.end or bool(node.children)


def _pattern(answer: str) -> re.Pattern | None:
    words = answer.split()
    return re.compile(r"\s+".join(map(re.escape, words))) if words else None


def locate(answer: str, passages: Sequence[Hit], prefer: Sequence[int] = ()) -> AnswerSpan | None:
    """The first passage (those numbered in ``prefer`` first, then in rank order) whose text holds ``answer``
    (whitespace-insensitive; case-insensitive when no exact match), as an ``AnswerSpan``; None if none does."""
    pat = _pattern(answer)
    if pat is None:
        return None
    order = [n for n in prefer if 1 <= n <= len(passages)]
    order += [n for n in range(1, len(passages) + 1) if n not in order]
    for flags in (0, re.IGNORECASE):
        p = re.compile(pat.pattern, flags)
        for n in order:
            m = p.search(passages[n - 1].text or "")
            if m:
                prov = passages[n - 1].provenance
                return AnswerSpan(n, m.start(), m.end(), replace(
                    prov, start_character=prov.start_character + m.start(),
                    end_character=prov.start_character + m.end()))
    return None


def _overlap(answer: str, text: str) -> int:
    a = {w.lower() for w in re.findall(r"\w+", answer) if len(w) > 3}
    return len(a & {w.lower() for w in re.findall(r"\w+", text)})


def ground(form: str, answer: str, cited: list[int],
           passages: Sequence[Hit]) -> tuple[str, list[int], AnswerSpan | None]:
    """``(answer, citations, span)``: a short answer loses a leading article and, found in a passage (those it
    cites first), carries its span and cites that passage (added to its own citations if missing); a short or free
    answer without a citation cites the passage sharing most words with it (the first on ties) whenever passages
    were used.  Label answers keep what the model cited."""
    span = None
    if form == "short":
        answer = _ARTICLE.sub("", answer.strip().rstrip(",;:").strip()) or answer
    if form == "short" and passages:
        span = locate(answer, passages, cited)
        if span is not None and span.number not in cited:  # found in a passage it did not cite: cite that one too
            cited = [*cited, span.number]
    if form != "label" and passages and not cited:
        cited = [max(range(1, len(passages) + 1), key=lambda n: (_overlap(answer, passages[n - 1].text or ""), -n))]
    return answer, cited, span
