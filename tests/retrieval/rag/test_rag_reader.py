"""The span reader: every prefix of every candidate scored in one packed pass equals scoring it apart; candidates
are spans of their passage; the linear model picks by its weights; fitting finds the feature that marks the right
answers; reader files are checked on load; ``genret train reader`` writes one the pipeline uses."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.core import GenretError, IndexFormatError
from genret.retrieval import GeneratorConfig, Hit, Provenance, RagConfig, RagPipeline
from genret.retrieval.rag import Candidate, HFGenerator, SpanReader, fit_reader

WORDS = ["json", "module", "Python", "objects", "the", "serializes", "strings.", "pickle", "bytes", "a", "Guido",
         "1991", "van", "Rossum", "3.12", "(CPython)", "co-operative", "naïve", "é", "x", "In", "March"]
passage_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)


@pytest.fixture(scope="module")
def generator(tiny_chat_lm_dir):
    return HFGenerator(GeneratorConfig(model=str(tiny_chat_lm_dir), device="cpu", max_new_tokens=8,
                                       max_input_tokens=512))


def _prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": "Answer with a span."}, {"role": "user", "content": question}]


def test_packed_scores_equal_scoring_each_prefix_apart(generator):
    prompt = _prompt("Who created Python in 1991?")
    pieces = ["Guido van Rossum created it", "1991", "the json module, naïve é"]
    rows = generator.span_logprobs(prompt, pieces)
    assert [len(r) for r in rows] == [len(generator._encode_offsets(p)) for p in pieces]
    for piece, row in zip(pieces, rows):
        ends = [(end, logp) for end, logp, _ in row if end == len(piece) or piece[end] == " "]  # word boundaries
        apart = generator.loglik([prompt] * len(ends), [piece[:end] for end, _ in ends])
        for (end, logp), ref in zip(ends, apart):
            assert logp == pytest.approx(ref, abs=2e-3), piece[:end]
        assert all(e <= 0 for _, _, e in row) and all(b <= a + 1e-9 for (_, a, _), (_, b, _) in zip(row, row[1:]))


def test_an_empty_piece_list_and_a_seq2seq_refusal(generator):
    assert generator.span_logprobs(_prompt("q?"), []) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(passage_text, min_size=1, max_size=3), question=passage_text,
       titles=st.lists(st.sampled_from(["json", "Guido van Rossum", "Other"]), min_size=3, max_size=3))
def test_every_candidate_is_a_span_of_the_passage_it_names(generator, texts, question, titles):
    reader = SpanReader(max_words=4)
    for c in reader.candidates(generator, _prompt(question), texts, question, titles[:len(texts)]):
        assert texts[c.number - 1][c.start:c.end] == c.text
        assert c.text.split() and c.text.split()[0].lower() not in {"the", "a", "an", "of", "and"}
        assert math.isfinite(c.features["logp"]) and c.features["end_logp"] <= 0


OIL = ("The 1973 oil crisis began in October 1973 when the members of the Organization of Arab Petroleum Exporting "
       "Countries (OAPEC, consisting of the Arab members of OPEC plus Egypt and Syria) proclaimed an oil embargo.")


def test_candidates_start_after_an_opening_bracket_and_close_no_bracket_they_did_not_open(generator):
    """Issue 29 (2): "(OAPEC" was no candidate (its piece began at the bracket), "Egypt and Syria)" was one."""
    question = "who proclaimed the oil embargo"
    texts = [OIL, 'It was called "the first oil shock" (by the press).']
    cands = SpanReader(max_words=6).candidates(generator, _prompt(question), texts, question)
    spans = {c.text for c in cands}
    assert {"OAPEC", "Egypt and Syria", "Organization of Arab Petroleum Exporting Countries"} <= spans
    assert not [s for s in spans if s[0] in "([\"" or s.count("(") != s.count(")") or s.count('"') % 2], spans
    assert all(texts[c.number - 1][c.start:c.end] == c.text for c in cands)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.lists(st.sampled_from(WORDS + ["(OAPEC,", "Syria)", '"TGIF"', "(2,600", "km)"]),
                              min_size=1, max_size=20).map(" ".join), min_size=1, max_size=2))
def test_no_candidate_opens_with_or_leaves_unbalanced_a_bracket(generator, texts):
    question = "Who created the json module?"
    for c in SpanReader(max_words=4).candidates(generator, _prompt(question), texts, question):
        assert c.text[0] not in "([\"" and c.text.count("(") == c.text.count(")") and c.text.count('"') % 2 == 0


def test_the_reader_picks_by_its_weights(generator):
    texts = ["Guido van Rossum released Python in 1991 at CWI.", "The json module serializes objects."]
    question = "Who released Python?"
    titles = ["Guido van Rossum", "json"]
    cands = SpanReader().candidates(generator, _prompt(question), texts, question, titles)
    assert {c.text for c in cands if c.features["title"]} == {"Guido van Rossum", "json"}
    longest = SpanReader(weights={"words": 1.0}).read(generator, _prompt(question), texts, question, titles)
    assert len(longest.text.split()) == max(len(c.text.split()) for c in cands)
    year = SpanReader(weights={"year": 5.0, "words": -1.0}).read(generator, _prompt(question), texts, question)
    assert year.text == "1991" and year.number == 1 and texts[0][year.start:year.end] == "1991"
    assert SpanReader().read(generator, _prompt("x?"), ["the of and"], "x?") is None


def _cand(**features) -> Candidate:
    return Candidate(1, 0, 1, "x", {"logp": -1.0, **features})


def test_fitting_finds_the_feature_that_marks_the_right_answers():
    examples = []
    for i in range(30):
        cands = [_cand(marked=float(j == i % 4), noise=float((i * 7 + j) % 3)) for j in range(4)]
        examples.append((cands, [j == i % 4 for j in range(4)]))
    reader = fit_reader(examples, l2=0.1, fitted_on="toy")
    assert reader.weights["marked"] > 1 and reader.fitted_on == "toy"
    assert all(y[max(range(4), key=lambda k: reader.score(c[k]))] for c, y in examples)
    with pytest.raises(GenretError, match="no training question"):
        fit_reader([([_cand()], [False])])


def test_reader_files_are_checked_on_load(tmp_path):
    packaged = SpanReader.default()
    assert packaged.weights and packaged.fitted_on
    path = tmp_path / "r.json"
    SpanReader(weights={"logp": 2.0}, fitted_on="t").save(path)
    assert SpanReader.load(path).weights == {"logp": 2.0}
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "genret-span-reader/99"}))
    with pytest.raises(IndexFormatError, match="format"):
        SpanReader.load(path)
    path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not a span reader"):
        SpanReader.load(path)
    with pytest.raises(IndexFormatError):
        RagPipeline(None, config=RagConfig(span_reader=str(tmp_path / "missing.json")))


class _Retriever:
    def __init__(self, texts, titles):
        self.hits = [Hit(i, 1.0, i + 1, Provenance(f"p{i}", t, 0, 0, 0, len(x)), x)
                     for i, (x, t) in enumerate(zip(texts, titles))]

    def batch_search(self, queries, k, task=None):
        return [self.hits[:k] for _ in queries]


def test_the_pipeline_answers_with_the_readers_choice_and_cites_its_passage(generator, tmp_path):
    texts = ["The json module serializes Python objects.", "Guido van Rossum released Python in 1991."]
    path = tmp_path / "year.json"
    SpanReader(weights={"year": 5.0, "words": -1.0}).save(path)
    pipe = RagPipeline(generator, _Retriever(texts, ["json", "Guido van Rossum"]),
                       config=RagConfig(passages=2, demos=0, span_reader=str(path)))
    result = pipe.answer("When was it released?", task="qa")
    assert result.answer == "1991" and [c.number for c in result.citations] == [2]
    assert result.span.number == 2 and texts[1][result.span.start:result.span.end] == "1991"
    greedy = RagPipeline(generator, _Retriever(texts, ["json", "G"]),
                         config=RagConfig(passages=2, demos=0, span_reader="greedy")).answer("When?", task="qa")
    assert greedy.span is None or greedy.answer in texts[greedy.span.number - 1]


def test_genret_train_reader_writes_a_reader_the_pipeline_loads(tiny_index, data_dir, tiny_lm_dir, tmp_path, capsys):
    from genret.serving import main

    out = tmp_path / "reader.json"
    code = main(["train", "reader", str(tiny_index), str(data_dir / "questions.jsonl"), "--out", str(out),
                 "--retriever", "bm25", "--task", "qa", "--generator-model", str(tiny_lm_dir), "--device", "cpu",
                 "--max-records", "6", "--folds", "2", "--quiet"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert 2 <= stats["questions"] <= 6 and 0 <= stats["em_after"] <= 100  # records with an answer
    assert 0 <= stats["em_held_out"] <= 100
    reader = SpanReader.load(out)
    assert "qa" in reader.fitted_on and "bm25" in reader.fitted_on


def test_held_out_exact_match_sees_what_generalises():
    from genret.retrieval.rag._reader_fit import held_out_em

    marked = [([_cand(marked=float(j == i % 4)) for j in range(4)], [j == i % 4 for j in range(4)]) for i in range(20)]
    assert held_out_em(marked, l2=0.1, base=SpanReader(), folds=4) == 100.0
    # the right answer's position is random and no feature marks it: nothing generalises beyond chance
    noise = [([_cand(pos=float(j)) for j in range(4)], [j == (i * 7) % 4 for j in range(4)]) for i in range(20)]
    assert held_out_em(noise, l2=0.1, base=SpanReader(), folds=4) < 50.0


def test_the_prefilter_keeps_the_pieces_the_free_features_rank_first(generator):
    texts = ["In March 1991 Guido van Rossum released Python at CWI in Amsterdam, the Netherlands, for all users."]
    question = "When was Python released?"
    weights = {"logp": 1.0, "end_logp": 1.0, "when:year": 5.0, "when:month": 4.0}
    full = SpanReader(weights=weights).candidates(generator, _prompt(question), texts, question)
    kept = SpanReader(weights=weights, prefilter=2).candidates(generator, _prompt(question), texts, question)
    starts = sorted({c.start for c in kept})
    assert len(starts) == 2 and len({c.start for c in full}) > 2
    assert {texts[0][s:].split()[0] for s in starts} == {"March", "1991"}
    by_offsets = {(c.start, c.end): c for c in full}
    for c in kept:  # a kept piece's candidates are the unfiltered ones, with the same scores
        twin = by_offsets[(c.start, c.end)]
        assert c.text == twin.text and c.features["logp"] == pytest.approx(twin.features["logp"], abs=1e-3)
    # without weights on model-free features there is nothing to rank by: every piece is scored
    unranked = SpanReader(prefilter=2).candidates(generator, _prompt(question), texts, question)
    assert [(c.start, c.end) for c in unranked] == [(c.start, c.end) for c in full]
