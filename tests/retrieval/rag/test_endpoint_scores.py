"""Span answers and label scores through an OpenAI-compatible endpoint that echoes prompt log-probabilities as
OpenAI defines them (the test helper's ``/v1/completions`` over the packaged model): the scores equal the local
model's, and a short answer through the endpoint is a cited span."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from genret.retrieval import GeneratorConfig, Hit, Provenance, RagConfig, RagPipeline, load_generator
from genret.retrieval.rag import AnswerSpan, HFGenerator
from tests._openai_server import ServerThread, chat_app

pytestmark = pytest.mark.slow

PROMPT = [{"role": "system", "content": "Answer with a span."},
          {"role": "user", "content": "Who created the Python programming language?"}]
PASSAGES = ["Python was created by Guido van Rossum and first released in 1991.",
            "The json module serializes Python objects to JSON strings."]


class _Retriever:
    def batch_search(self, queries, k, task=None):
        hits = [Hit(i, 1.0, i + 1, Provenance(f"p{i}", f"T{i}", 2, 2, 0, len(t)), t) for i, t in enumerate(PASSAGES)]
        return [hits[:k] for _ in queries]


@pytest.fixture(scope="module")
def local() -> HFGenerator:
    return HFGenerator(GeneratorConfig(device="cpu", dtype="float32", max_new_tokens=12))


@pytest.fixture(scope="module")
def server(local):
    with ServerThread(chat_app(local, echo_logprobs=True)) as s:
        yield s


def _remote(server):
    return load_generator(GeneratorConfig(kind="openai", model="smollm2-135m-instruct",
                                          base_url=server.base_url + "/v1", max_new_tokens=12))


def test_endpoint_scores_equal_the_local_models(server, local, caplog):
    remote = _remote(server)
    pieces = ["Guido van Rossum", "1991", "the json module"]
    with caplog.at_level("INFO", logger="genret"):
        rows = remote.span_logprobs(PROMPT, pieces)
    assert remote._scorer.supported is True and any("returns prompt log-probabilities" in r.message
                                                    for r in caplog.records)
    ours = local.span_logprobs(PROMPT, pieces)
    for piece, a, b in zip(pieces, rows, ours):
        assert [end for end, _, _ in a] == [end for end, _, _ in b]
        assert [t for _, t, _ in a] == pytest.approx([t for _, t, _ in b], abs=2e-3)
        assert all(e <= 0 for _, _, e in a) and a[-1][0] == len(piece)
    targets = [" SUPPORTS", " REFUTES"]
    assert remote.loglik([PROMPT] * 2, targets) == pytest.approx(local.loglik([PROMPT] * 2, targets), abs=2e-3)


def test_verdicts_through_the_endpoint_are_label_scores(server):
    texts = "Measurements show the global mean temperature has risen by about 1.1 degrees since 1850."

    class One:
        def batch_search(self, queries, k, task=None):
            return [[Hit(0, 1.0, 1, Provenance("p", "T", 2, 2, 0, len(texts)), texts)] for _ in queries]

    pipe = RagPipeline(_remote(server), One(), config=RagConfig(passages=1, demos=0))
    verdict = pipe.answer("Global temperatures have risen since 1850.", task="climate_fever")
    assert verdict.answer in ("SUPPORTS", "REFUTES") and verdict.method == "label scores"


def test_a_short_answer_through_the_endpoint_is_a_cited_span(server):
    pipe = RagPipeline(_remote(server), _Retriever(), config=RagConfig(passages=2, demos=0))
    result = pipe.answer("Who created Python?", task="qa")
    assert result.answer and isinstance(result.span, AnswerSpan) and result.method == "span reader"
    cited = result.passages[result.span.number - 1]
    assert cited.text[result.span.start:result.span.end] == result.answer


WORDS = ["json", "module", "Python", "objects", "the", "serializes", "strings", "pickle", "bytes", "a", "Guido",
         "1991", "van", "Rossum", "3.12", "(CPython)", "co-operative", "naïve", "é", "x"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join), min_size=1,
                      max_size=3),
       question=st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join))
def test_any_short_answer_through_the_endpoint_is_a_span_of_the_passage_it_cites(server, texts, question):
    """The property of span answers (``test_rag_spans``), through an endpoint with prompt log-probabilities: an
    answer the span reader chose is a span of the passage it cites; where the reader has no candidate (passages of
    the question's own words) an endpoint cannot constrain decoding, and the answer is free text that says so."""
    class Texts:
        def batch_search(self, queries, k, task=None):
            return [[Hit(i, 1.0, i + 1, Provenance(f"p{i}", f"T{i}", 2, 2, 100 * i, 100 * i + len(t)), t)
                     for i, t in enumerate(texts)][:k] for _ in queries]

    result = RagPipeline(_remote(server), Texts(), config=RagConfig(passages=3, demos=0)).answer(question + "?",
                                                                                               task="qa")
    assert result.citations, "an answer made from passages cites one"
    assert result.method in ("span reader", "free text")
    event(result.method)
    if result.answer and result.method == "span reader":
        span = result.span
        assert isinstance(span, AnswerSpan) and span.number in [c.number for c in result.citations]
        cited = result.passages[span.number - 1]
        assert cited.text[span.start:span.end] == result.answer
        assert span.provenance.start_character == cited.provenance.start_character + span.start
