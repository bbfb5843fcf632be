"""The span reader: a short answer chosen among the spans of the passages, scored by the generator and a linear model.

Constrained greedy decoding (``_spans.SpanTrie``) commits to the first token it likes; the reader instead scores
every candidate.  Candidates start at a word of the ``focus`` sentences sharing most words with the question (not a
function word, nor a word of the question) and run up to ``max_words`` words (stopping before a question word);
each of their word-boundary prefixes is one candidate.  The generator gives, in two forward passes per question,
log p(candidate | prompt) and the log-probability that the answer ends there (``Generator.span_logprobs``).  A
linear model over those and a few features of the question and the span (``span_features``: question type × span
shape, distance to the question's words, the sentence's rank) picks the answer; its weights are fitted on training
questions with gold answers (``_reader_fit``: a list-wise softmax over each question's candidates, as a reader is
trained) and saved as JSON (``SpanReader.save`` / ``load``).  The packaged weights (``span_reader.json``) were fitted
with the packaged SmolLM2-135M on mini-KILT squad train questions (``genret train reader``); with weights all zero
but ``logp`` and ``end_logp`` it is the model's own sequence probability.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from genret.core import IndexFormatError, write_json_atomic

from ._generator import Generator, Prompt
from ._packaged import packaged
from ._spans import ARTICLES, FUNCTION_WORDS, NON_WORD, WORD, content_terms, ranked_sentences

READER_FORMAT = "genret-span-reader/1"
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"}
# question types, first match wins (the span shapes each asks for are learnt, not written here)
QUESTION_TYPES = (
    ("when", r"\bwhen\b|\b(what|which) (year|century|decade|month|day|date|time|period)\b"),
    ("quantity", r"\bhow (many|much|long|old|far|large|big|tall|high|often|fast)\b"
                 r"|\bwhat (percentage|percent|number|amount|proportion)\b"),
    ("who", r"\bwho(m|se)?\b"),
    ("where", r"\bwhere\b|\b(what|which) (country|city|place|state|region|continent|location)\b"),
    ("why", r"\bwhy\b"),
    ("how", r"\bhow\b"),
    ("what", r""),
)
SPAN_SHAPES = ("digit", "year", "capital", "all_capital", "month")
_MODEL_FEATURES = {"logp", "end_logp", "first_logp", "tokens"}  # the features only the generator gives


@dataclass(frozen=True, slots=True)
class Piece:
    """The longest candidate from one start word: passage ``number`` (1-based), character ``start`` in its text,
    its ``text``; the sentence it is in (``sentence``, with the piece at ``offset``), that sentence's ``rank`` among the
    focus sentences and how many question words it shares (``overlap``)."""

    number: int
    start: int
    text: str
    sentence: str
    offset: int
    rank: int
    overlap: int


def span_pieces(texts: Sequence[str], question: str, *, focus: int, max_words: int,
                titles: Sequence[str] = ()) -> list[Piece]:
    """The candidate pieces of ``texts`` (the passages, in prompt order) for ``question``: one per start word of the
    ``focus`` sentences sharing most content words with it (ties: the earlier one), then the passages' distinct
    ``titles`` where they occur in their passage's text (rank -1: the answer to "which module / person / …" is often
    the page a passage is from)."""
    asked = set(re.findall(r"\w+", question))
    q = content_terms(question)
    pieces = []
    for rank, (n, at, sent, shared) in enumerate(ranked_sentences(texts, question)[:max(focus, 1)]):
        words = list(WORD.finditer(sent))
        for k, m in enumerate(words):
            word = NON_WORD.sub("", m.group())
            if not word or word.lower() in FUNCTION_WORDS or word.lower() in ARTICLES or word in asked:
                continue
            last = m
            for w in words[k + 1:k + max_words]:
                if NON_WORD.sub("", w.group()) in asked:
                    break
                last = w
            a = m.start() + len(m.group()) - len(m.group().lstrip(_OPENING))  # "(OAPEC,": from "OAPEC"
            pieces.append(Piece(n, at + a, sent[a:last.end()], sent, a, rank, shared))
    seen = set()
    for n, (title, text) in enumerate(zip(titles, texts), 1):
        m = re.search(rf"(?<!\w){re.escape(title)}(?!\w)", text) if title and title not in question else None
        if m and title not in seen:  # the title as it occurs in its passage (so still a span of it)
            seen.add(title)
            pieces.append(Piece(n, m.start(), title, text, m.start(), -1, len(q & content_terms(title))))
    return pieces


_OPENING = "([{\"'“‘«"  # punctuation a word may open with: a span starts after it
_PAIRS = ("()", "[]", "{}", "“”", "‘’", "«»")


def _balanced(span: str) -> bool:
    """Whether ``span`` closes every bracket and quote it opens, and opens every one it closes."""
    return all(span.count(a) == span.count(b) for a, b in _PAIRS) and span.count('"') % 2 == 0


def question_type(question: str) -> str:
    q = question.lower()
    return next(name for name, pattern in QUESTION_TYPES if re.search(pattern, q))


def _shapes(span: str) -> dict[str, bool]:
    words = span.split()
    content = [w for w in words if w.lower() not in FUNCTION_WORDS and w.lower() not in ARTICLES]
    return {"digit": any(c.isdigit() for c in span), "year": bool(re.search(r"\b(1\d{3}|20\d{2})s?\b", span)),
            "capital": span[:1].isupper(), "all_capital": bool(content) and all(w[:1].isupper() for w in content),
            "month": any(w.lower().strip(",.;") in _MONTHS for w in words)}


def span_features(question: str, piece: Piece, end: int, logp: float, end_logp: float,
                  first_logp: float, n_tokens: int) -> dict[str, float]:
    """The features of the candidate ``piece.text[:end]`` (scores from ``Generator.span_logprobs``)."""
    span = piece.text[:end]
    asked = content_terms(question)
    a, b = piece.offset, piece.offset + end
    left = [w.lower() for w in re.findall(r"\w+", piece.sentence[:a])]
    right = [w.lower() for w in re.findall(r"\w+", piece.sentence[b:])]
    near = min(next((i for i, w in enumerate(reversed(left)) if w in asked), 50),
               next((i for i, w in enumerate(right) if w in asked), 50))
    n_words = len(span.split())
    after = piece.sentence[b:b + 1]
    f = {"logp": logp, "end_logp": end_logp, "first_logp": first_logp, "tokens": float(n_tokens),
         "words": float(n_words), "one_word": float(n_words == 1), "log_distance": math.log1p(near),
         "window": float(sum(w in asked for w in left[-4:] + right[:4])), "sentence_rank": float(piece.rank),
         "passage": float(piece.number), "overlap": float(piece.overlap), "title": float(piece.rank < 0),
         "ends_clause": float(after in ("", ",", ".", ";", ")", ":")),
         "continues": float(bool(re.match(r"\W*\b(and|or|of|in|the|to|a)\b", piece.sentence[b:])))}
    qtype, shapes = question_type(question), _shapes(span)
    for name, _ in QUESTION_TYPES:
        for shape in SPAN_SHAPES:
            f[f"{name}:{shape}"] = float(name == qtype and shapes[shape])
    for shape in SPAN_SHAPES:
        f[shape] = float(shapes[shape])
    return f


@dataclass(frozen=True, slots=True)
class Candidate:
    """One scored candidate: passage ``number``, character offsets in that passage's text, the text, features."""

    number: int
    start: int
    end: int
    text: str
    features: dict[str, float]


class SpanReader(BaseModel):
    """Candidate settings and the linear model's weights (feature name → weight; missing names weigh 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = READER_FORMAT
    focus: int = Field(2, ge=1, description="sentences the candidates come from (those sharing most question words)")
    max_words: int = Field(6, ge=1, le=32, description="longest candidate, in words")
    prefilter: int = Field(0, ge=0, description="score only the pieces whose best prefix ranks among this many by "
                                                "the features that need no model (0: every piece)")
    weights: dict[str, float] = Field(default_factory=lambda: {"logp": 1.0, "end_logp": 1.0})
    fitted_on: str = Field("", description="what the weights were fitted on (model, data, command)")

    @classmethod
    def default(cls) -> SpanReader:
        """The packaged reader (fitted for the packaged SmolLM2-135M)."""
        return packaged(cls, "span_reader.json")

    @classmethod
    def load(cls, path: str | Path) -> SpanReader:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            reader = cls.model_validate(data)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: not a span reader file ({exc})") from exc
        if reader.format != READER_FORMAT:
            raise IndexFormatError(f"{path}: span reader format {reader.format!r}, this genret reads {READER_FORMAT}")
        return reader

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.model_dump())

    def candidates(self, generator: Generator, prompt: Prompt, texts: Sequence[str], question: str,
                   titles: Sequence[str] = (), *, max_tokens: int | None = None) -> list[Candidate]:
        """Every candidate of the passages ``texts`` (and their ``titles``) with its features, of at most
        ``max_tokens`` tokens when given (``GenretError`` if the generator cannot score)."""
        pieces = self._prefiltered(span_pieces(texts, question, focus=self.focus, max_words=self.max_words,
                                               titles=titles), question)
        if not pieces:
            return []
        out = []
        for piece, rows in zip(pieces, generator.span_logprobs(prompt, [p.text for p in pieces])):
            for k, (end, logp, end_logp) in enumerate(rows):
                if max_tokens is not None and k >= max_tokens:
                    break  # longer than the answer may be
                if piece.rank < 0 and end < len(piece.text):
                    continue  # a title is a candidate whole
                if end < len(piece.text) and piece.text[end].isalnum():
                    continue  # inside a word
                span = piece.text[:end].rstrip(",;:")
                if not span or span.lower() in ARTICLES or not _balanced(span):
                    continue  # nothing, an article alone, "Syria)" or "Countries (OAPEC": a shorter one is
                feats = span_features(question, piece, end, logp, end_logp, rows[0][1], k + 1)
                out.append(Candidate(piece.number, piece.start, piece.start + len(span), span, feats))
        return out

    def _prefiltered(self, pieces: list[Piece], question: str) -> list[Piece]:
        """The ``prefilter`` pieces (in their order) whose best word-end prefix scores highest by the weights of the
        features that need no model — the model's two forward passes then cost a fraction (the packed pass grows with
        the pieces' tokens)."""
        free = {k: w for k, w in self.weights.items() if k not in _MODEL_FEATURES}
        if not self.prefilter or len(pieces) <= self.prefilter or not free:
            return pieces

        def best(piece: Piece) -> float:
            ends = [len(piece.text)] if piece.rank < 0 else [m.end() for m in WORD.finditer(piece.text)]
            return max(sum(free.get(k, 0.0) * v for k, v in span_features(question, piece, end, 0.0, 0.0, 0.0,
                                                                              0).items()) for end in ends)

        keep = sorted(sorted(range(len(pieces)), key=lambda i: -best(pieces[i]))[:self.prefilter])
        return [pieces[i] for i in keep]

    def score(self, candidate: Candidate) -> float:
        return sum(self.weights.get(k, 0.0) * v for k, v in candidate.features.items())

    def read(self, generator: Generator, prompt: Prompt, texts: Sequence[str], question: str,
             titles: Sequence[str] = (), *, max_tokens: int | None = None) -> Candidate | None:
        """The best candidate (ties: the first) of at most ``max_tokens`` tokens when given, or None when the passages
        hold none."""
        cands = self.candidates(generator, prompt, texts, question, titles, max_tokens=max_tokens)
        return max(cands, key=self.score) if cands else None
