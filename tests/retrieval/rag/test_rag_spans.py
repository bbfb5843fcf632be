"""Span answers (short form) and free answers: a span answer is always a substring of the passage it cites, with
its offsets and KILT provenance; free answers end at a sentence end or carry the truncation marker; every answer
that used passages cites one; generators that cannot constrain decoding answer freely."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.retrieval import GeneratorConfig, Hit, Provenance, RagConfig, RagPipeline
from genret.retrieval.rag import ANSWER_TASKS, AnswerSpan, Generator, HFGenerator
from genret.retrieval.rag._prompt import TRUNCATED, parse_answer, whole_sentences
from genret.retrieval.rag._spans import SpanTrie, content_terms, locate, ranked_sentences

WORDS = ["json", "module", "Python", "objects", "the", "serializes", "strings", "pickle", "bytes", "a", "Guido",
         "1991", "van", "Rossum", "3.12", "(CPython)", "co-operative", "naïve", "é", "x"]
passage_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)


def _hits(texts: list[str]) -> list[Hit]:
    return [Hit(i, 1.0, i + 1, Provenance(f"p{i}", f"T{i}", 2, 2, 100 * i, 100 * i + len(t)), t)
            for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def generator(tiny_chat_lm_dir):
    return HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=8,
                                       max_input_tokens=512))


class _Retriever:
    def __init__(self, texts):
        self.texts = texts

    def batch_search(self, queries, k, task=None):
        return [_hits(self.texts)[:k] for _ in queries]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(passage_text, min_size=1, max_size=4), question=passage_text, data=st.data())
def test_any_walk_through_the_span_trie_is_a_substring_of_a_passage(generator, texts, question, data):
    """Whatever the model picks among the allowed tokens, the completion is a span of one passage."""
    eos = [generator.tokenizer.eos_token_id]
    trie = SpanTrie(texts, generator._encode_offsets, eos, max_tokens=12, avoid=question)
    ids: list[int] = []
    for _ in range(12):
        allowed = trie.allowed(ids)
        assert allowed
        tid = data.draw(st.sampled_from(sorted(allowed)))
        if tid in eos:
            break
        ids.append(tid)
    text = generator.tokenizer.decode(ids, skip_special_tokens=True).strip()
    if text:
        assert any(text in t for t in texts)
        span = locate(text, _hits(texts))
        assert span is not None and texts[span.number - 1][span.start:span.end] == text


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(passage_text, min_size=1, max_size=3), question=passage_text)
def test_a_span_answer_is_a_substring_of_the_passage_it_cites(generator, texts, question):
    pipe = RagPipeline(generator, _Retriever(texts), config=RagConfig(passages=3, demos=0))
    result = pipe.answer(question + "?", task="qa")
    assert result.citations, "an answer made from passages cites one"
    if result.answer:
        span = result.span
        assert isinstance(span, AnswerSpan) and span.number in [c.number for c in result.citations]
        cited = result.passages[span.number - 1]
        assert result.answer in cited.text and cited.text[span.start:span.end] == result.answer
        assert span.provenance.wikipedia_id == cited.provenance.wikipedia_id
        assert span.provenance.start_character == cited.provenance.start_character + span.start
        assert span.provenance.end_character - span.provenance.start_character == len(result.answer)


def test_the_stream_of_a_span_answer_equals_the_answer(generator):
    texts = ["The json module serializes Python objects to JSON strings.", "The pickle module writes bytes."]
    pipe = RagPipeline(generator, _Retriever(texts), config=RagConfig(passages=2, demos=0))
    query = "Which module serializes Python objects to JSON strings?"
    events = list(pipe.stream(query, task="qa"))
    assert events[-1]["answer"] == pipe.answer(query, task="qa").answer


class _Scripted(Generator):
    """Answers with a fixed text; cannot constrain decoding (the base class's ``generate_spans`` refuses)."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        self.config = GeneratorConfig()
        self.text = text

    def generate(self, prompts, *, max_new_tokens=None, stop=()):
        return [self.text for _ in prompts]


def test_unconstrained_short_answers_stay_available_and_are_grounded_when_found():
    texts = ["Paris is the capital.", "The json module serializes Python objects to JSON strings."]
    pipe = RagPipeline(_Scripted("The answer is: the json module"), _Retriever(texts),
                       config=RagConfig(passages=2, demos=0))
    result = pipe.answer("Which module serializes Python objects?", task="qa")
    assert result.answer == "json module"
    assert result.span.number == 2 and [c.number for c in result.citations] == [2]
    off = RagPipeline(_Scripted("Something else entirely"), _Retriever(texts),
                      config=RagConfig(passages=2, demos=0, span_answers=False))
    free = off.answer("Which module?", task="qa")
    assert free.answer == "Something else entirely" and free.span is None and len(free.citations) == 1


def test_the_demo_answer_loses_its_preamble():
    answer, _ = parse_answer(ANSWER_TASKS["qa"], "The module serializes Python objects to JSON strings. "
                                                 "The answer is:", 3)
    assert answer == "The module serializes Python objects to JSON strings"
    answer, cited = parse_answer(ANSWER_TASKS["generic"], "Answer: The json module [1] does it. It also wri", 3)
    assert answer == "The json module does it." and cited == [1]


_END = re.compile(r"[.!?][\"')\]]*$")


@given(st.lists(st.sampled_from(["word", "other", "end.", "Why?", "(x).", "no", "3.5", "e.g.", "wow!"]),
                max_size=30).map(" ".join))
def test_free_answers_end_at_a_sentence_end_or_carry_the_marker(text):
    out = whole_sentences(text)
    if not text.strip():
        return
    assert _END.search(out) or out.endswith(" " + TRUNCATED)
    kept = out.removesuffix(" " + TRUNCATED).split()
    assert kept == text.split()[:len(kept)], "a prefix of whole words"


def test_free_answers_cite_a_passage_whenever_passages_were_used():
    texts = ["Paris is the capital of France.", "The json module serializes Python objects."]
    pipe = RagPipeline(_Scripted("It serializes Python objects to strings and then it st"), _Retriever(texts),
                       config=RagConfig(passages=2, demos=0))
    result = pipe.answer("What does json do?", task="generic", max_new_tokens=8)  # the budget cut it
    assert [c.number for c in result.citations] == [2] and result.truncated
    assert result.answer == "It serializes Python objects to strings and then it " + TRUNCATED
    assert result.reply == result.answer + " [2]"  # what a person reads: the answer and its citation
    closed = RagPipeline(_Scripted("No passages. Here"), None, config=RagConfig(passages=0, demos=0))
    cut = closed.answer("What?", task="generic", max_new_tokens=4)
    assert cut.citations == () and cut.answer == cut.reply == "No passages."
    # an answer the model ended itself is not cut back to its last sentence end
    whole = pipe.answer("What does json do?", task="generic")
    assert not whole.truncated and whole.answer == "It serializes Python objects to strings and then it st"


def test_words_that_ask_or_articles_are_no_shared_content():
    """Issue 29 (2): "the" and "when" counted as words a sentence shares with the question, so "… in October 1973
    when the members …" tied with "By the end of the embargo in March 1974 …" for "When did it end?"."""
    assert content_terms("When did the oil embargo end?") == {"oil", "embargo", "end"}
    assert content_terms("What does a reader do, and how, and why?") == {"reader"}
    texts = ["The crisis began in October 1973 when the members proclaimed an embargo. By the end of the embargo "
             "in March 1974, the price had risen."]
    (best, *_) = ranked_sentences(texts, "When did it end?")
    assert best[2].startswith("By the end of the embargo") and best[3] == 1
