"""Property tests of the KILT metrics, including the fast evidence-set rank and ROUGE-L against
slow literal transcriptions of KILT's algorithm and the ``rouge`` package itself."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rouge import Rouge
from rouge import rouge_score as package_rouge_score

from genret.eval import normalize_answer, retrieval_scores
from genret.eval._downstream_metrics import (
    _lcs_words,
    exact_match,
    f1_score,
    rouge_l,
    rougel_score,
)
from genret.eval._retrieval_metrics import (
    _output_ids,
    _true_positions,
    evidence_sets,
    get_rank,
    ids_list,
    precision_at_k,
    recall_at_k,
    rprecision,
    success_rate_at_k,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY_VARIANTS = [("wikipedia_id",), ("wikipedia_id", "section"), ("wikipedia_id", "start_paragraph_id")]
ALL_KEYS = ("wikipedia_id", "section", "start_paragraph_id")


# ------------------------------------------------------ literal (slow) transcription of KILT's algorithm
def kilt_ids_list(record: dict[str, Any], rank_keys: tuple[str, ...]) -> list[list[str]]:
    result = []
    for output in record["output"]:
        current: list[str] = []
        if "provenance" in output:
            for item in output["provenance"]:
                if any(key not in item for key in rank_keys):
                    continue
                current.append("+".join([str(item[key]).strip() for key in rank_keys]))
        unique: list[str] = []
        for value in current:
            if value not in unique:
                unique.append(value)
        result.append(unique)
    return result


def kilt_get_rank(guess: dict[str, Any], gold: dict[str, Any],
                  rank_keys: tuple[str, ...]) -> tuple[list[Any], int]:
    rank: list[Any] = []
    num_sets = 0
    guess_ids = kilt_ids_list(guess, rank_keys)[0]
    if guess_ids and len(guess_ids) > 0:
        sets: list[set[str]] = []
        for output in gold["output"]:
            if "provenance" in output:
                current = {"+".join([str(item[key]).strip() for key in rank_keys if key in item])
                           for item in output["provenance"]}
                if current not in sets:
                    sets.append(current)
        num_sets = len(sets)
        for guess_id in guess_ids:
            guess_id = str(guess_id).strip()
            found = False
            for index, evidence in enumerate(sets):
                label = f"evidence_set:{index}"
                if guess_id in evidence:
                    found = True
                    if label in rank:
                        rank.remove(label)
                    evidence.remove(guess_id)
                    rank.append(True if len(evidence) == 0 else label)
            if not found:
                rank.append(False)
    return rank, num_sets


def kilt_rprecision(guess: dict[str, Any], gold: dict[str, Any], rank_keys: tuple[str, ...]) -> float:
    guess_ids = kilt_ids_list(guess, rank_keys)[0]
    values = []
    for gold_ids in kilt_ids_list(gold, rank_keys):
        r = len(gold_ids)
        hits = sum(1 for prediction in guess_ids[:r] if str(prediction).strip() in gold_ids)
        values.append(hits / r if r > 0 else 0)
    return max(values)


def kilt_gold_answers(gold: dict[str, Any]) -> set[str]:
    return {output["answer"].strip() for output in gold["output"]
            if "answer" in output and output["answer"] and output["answer"].strip()}


def kilt_gold_titles(gold: dict[str, Any]) -> set[str]:
    titles = set()
    for output in gold["output"]:
        for item in output.get("provenance", []):
            if "title" in item and item["title"] and item["title"].strip():
                titles.add(item["title"].strip())
    return titles


def kilt_in_context(guess: dict[str, Any], gold: dict[str, Any], k: int) -> tuple[int, int, int]:
    """(answer_in_context@k, entity_in_context@k, answer_and_ent_in_context@k) as KILT loops them."""
    results = []
    for want_answer, want_title in ((True, False), (False, True), (True, True)):
        found = 0
        output = guess["output"][0]
        if "provenance" in output:
            for i in range(0, min(k, len(output["provenance"]))):
                if "text" not in output["provenance"][i]:
                    continue
                text = normalize_answer(output["provenance"][i]["text"])
                has_answer = any(normalize_answer(a) in text for a in kilt_gold_answers(gold))
                has_title = any(normalize_answer(t) in text for t in kilt_gold_titles(gold))
                if (has_answer or not want_answer) and (has_title or not want_title):
                    found = 1
                    break
        results.append(found)
    return results[0], results[1], results[2]


def kilt_entity_in_input(gold: dict[str, Any]) -> int:
    text = normalize_answer(gold["input"])
    return int(any(normalize_answer(t) in text for t in kilt_gold_titles(gold)))


def kilt_compute(pairs: list[tuple[dict[str, Any], dict[str, Any]]], ks: list[int],
                 rank_keys: tuple[str, ...]) -> dict[str, float]:
    result: dict[str, float] = {"Rprec": 0.0, "entity_in_input": 0.0}
    for k in ks:
        result[f"precision@{k}"] = 0.0
        result[f"answer_in_context@{k}"] = 0.0
        result[f"entity_in_context@{k}"] = 0.0
        result[f"answer_and_ent_in_context@{k}"] = 0.0
        if k > 1:
            result[f"recall@{k}"] = 0.0
            result[f"success_rate@{k}"] = 0.0
    for guess, gold in pairs:
        result["Rprec"] += kilt_rprecision(guess, gold, rank_keys)
        result["entity_in_input"] += kilt_entity_in_input(gold)
        for k in ks:
            answer, entity, both = kilt_in_context(guess, gold, k)
            result[f"answer_in_context@{k}"] += answer
            result[f"entity_in_context@{k}"] += entity
            result[f"answer_and_ent_in_context@{k}"] += both
            rank, num_sets = kilt_get_rank(guess, gold, rank_keys)
            p = r = s = 0
            if num_sets > 0:
                p = rank[:k].count(True) / k
                r = rank[:k].count(True) / num_sets
                s = int(True in rank[:k])
            result[f"precision@{k}"] += p
            if k > 1:
                result[f"recall@{k}"] += r
                result[f"success_rate@{k}"] += s
    return {name: value / len(pairs) for name, value in result.items()}


# -------------------------------------------------------------------------------------------- strategies
values = st.sampled_from([1, 2, 3, 4, "1", "2", " 3", "4 ", "5", "x", "y+z", ""])
snippets = st.lists(st.sampled_from(["Paris", "the", "France,", "Nice", "a", "capital", "", "."]),
                    max_size=5).map(" ".join)


@st.composite
def provenance_items(draw: st.DrawFn, complete: bool = False) -> dict[str, Any]:
    keys = ALL_KEYS if complete else draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, max_size=3))
    item = {key: draw(values) for key in keys}
    if draw(st.booleans()):
        item[draw(st.sampled_from(["title", "text"]))] = draw(snippets)
    return item


@st.composite
def gold_records(draw: st.DrawFn, complete: bool = False) -> dict[str, Any]:
    outputs = []
    for _ in range(draw(st.integers(1, 4))):
        output: dict[str, Any] = {"answer": draw(snippets)}
        if complete or draw(st.booleans()) or not outputs:
            items = st.lists(provenance_items(complete), min_size=int(complete), max_size=4)
            output["provenance"] = draw(items)
        outputs.append(output)
    return {"id": 1, "input": draw(snippets), "output": outputs}


@st.composite
def guess_records(draw: st.DrawFn) -> dict[str, Any]:
    return {"id": 1, "output": [{"provenance": draw(st.lists(provenance_items(), max_size=12))}]}


# --------------------------------------------------------------------- fast implementation == KILT's own
@SETTINGS
@given(guess=guess_records(), gold=gold_records(), rank_keys=st.sampled_from(KEY_VARIANTS))
def test_fast_rank_equals_kilt_transcription(guess: dict[str, Any], gold: dict[str, Any],
                                             rank_keys: tuple[str, ...]) -> None:
    rank, num_sets = kilt_get_rank(guess, gold, rank_keys)
    assert get_rank(guess, gold, rank_keys) == (rank, num_sets)
    if num_sets:
        guess_ids = _output_ids(guess["output"][0], rank_keys)
        for limit in (1, 3, 100):
            expected = [position for position, entry in enumerate(rank[:limit]) if entry is True]
            assert _true_positions(guess_ids, evidence_sets(gold, rank_keys), limit) == expected
    assert ids_list(gold, rank_keys) == kilt_ids_list(gold, rank_keys)
    assert rprecision(guess, gold, rank_keys) == kilt_rprecision(guess, gold, rank_keys)


@SETTINGS
@given(data=st.lists(st.tuples(guess_records(), gold_records()), min_size=1, max_size=6),
       rank_keys=st.sampled_from(KEY_VARIANTS),
       ks=st.lists(st.integers(1, 14), min_size=1, max_size=4, unique=True))
def test_retrieval_scores_equal_kilt_compute(data: list[tuple[dict[str, Any], dict[str, Any]]],
                                             rank_keys: tuple[str, ...], ks: list[int]) -> None:
    expected = kilt_compute(data, sorted(ks), rank_keys)
    result = retrieval_scores(data, ks=ks, rank_keys=rank_keys)
    for name, value in expected.items():
        assert result[name] == value, name  # bit-for-bit: same additions in the same order


def test_rank_on_long_lists() -> None:
    gold = {"id": 1, "output": [{"provenance": [{"wikipedia_id": i} for i in range(0, 20000, 2)]}]}
    guess = {"id": 1, "output": [{"provenance": [{"wikipedia_id": i} for i in range(20000)]}]}
    rank, num_sets = get_rank(guess, gold)
    assert num_sets == 1 and rank.count(True) == 1 and rank[-1] is False and rank[-2] is True
    assert rank.count("evidence_set:0") == 0 and len(rank) == 10001


# ------------------------------------------------------------------------------------ metric properties
@SETTINGS
@given(gold=gold_records(complete=True), rank_keys=st.sampled_from(KEY_VARIANTS), extra=st.integers(0, 5))
def test_perfect_guess(gold: dict[str, Any], rank_keys: tuple[str, ...], extra: int) -> None:
    first = {"id": 1, "output": [{"provenance": gold["output"][0]["provenance"]}]}
    assert rprecision(first, gold, rank_keys) == 1
    everything = [item for output in gold["output"] for item in output["provenance"]]
    guess = {"id": 1, "output": [{"provenance": everything}]}
    k = len(everything) + extra
    rank, num_sets = get_rank(guess, gold, rank_keys)
    assert num_sets == len(evidence_sets(gold, rank_keys))
    assert recall_at_k(rank, num_sets, k) == 1 and success_rate_at_k(rank, k) == 1
    scores = retrieval_scores([(guess, gold)], ks=(k,) if k > 1 else (2,), rank_keys=rank_keys)
    assert scores["Rprec"] == 1 and scores[f"recall@{max(k, 2)}"] == 1


@SETTINGS
@given(gold=gold_records(), rank_keys=st.sampled_from(KEY_VARIANTS),
       ks=st.lists(st.integers(1, 30), min_size=1))
def test_empty_guess_scores_zero(gold: dict[str, Any], rank_keys: tuple[str, ...], ks: list[int]) -> None:
    for guess in ({"id": 1, "output": [{"provenance": []}]}, {"id": 1, "output": [{"answer": "x"}]}):
        scores = retrieval_scores([(guess, gold)], ks=ks, rank_keys=rank_keys, include_recall_at_1=True)
        assert all(value == 0 for name, value in scores.items() if name != "entity_in_input")
        assert get_rank(guess, gold, rank_keys) == ([], 0)


@SETTINGS
@given(pages=st.lists(st.integers(0, 10_000), min_size=1, max_size=8, unique=True),
       others=st.lists(st.integers(20_000, 30_000), min_size=1, max_size=8, unique=True),
       data=st.data())
def test_rprecision_drops_when_gold_item_moves_below_r(pages: list[int], others: list[int],
                                                       data: st.DataObject) -> None:
    gold = {"id": 1, "output": [{"provenance": [{"wikipedia_id": page} for page in pages]}]}
    ranking = pages + others
    perfect = {"id": 1, "output": [{"provenance": [{"wikipedia_id": page} for page in ranking]}]}
    assert rprecision(perfect, gold) == 1
    r = len(pages)
    moved_from = data.draw(st.integers(0, r - 1))
    moved_to = data.draw(st.integers(r, len(ranking) - 1))
    ranking[moved_from], ranking[moved_to] = ranking[moved_to], ranking[moved_from]
    worse = {"id": 1, "output": [{"provenance": [{"wikipedia_id": page} for page in ranking]}]}
    assert rprecision(worse, gold) == (r - 1) / r < 1


def test_rank_helpers_match_kilt_definitions() -> None:
    rank = [False, "evidence_set:1", True, False, True]
    assert precision_at_k(rank, 3) == 1 / 3 and precision_at_k(rank, 5) == 2 / 5
    assert recall_at_k(rank, 4, 5) == 0.5
    assert success_rate_at_k(rank, 2) == 0 and success_rate_at_k(rank, 3) == 1


def test_recall_at_1_is_opt_in() -> None:
    gold = {"id": 1, "output": [{"provenance": [{"wikipedia_id": "a"}]},
                                {"provenance": [{"wikipedia_id": "b"}]}]}
    guess = {"id": 1, "output": [{"provenance": [{"wikipedia_id": "b"}, {"wikipedia_id": "a"}]}]}
    assert "recall@1" not in retrieval_scores([(guess, gold)], ks=(1, 2))
    scores = retrieval_scores([(guess, gold)], ks=(1, 2), include_recall_at_1=True)
    assert scores["recall@1"] == 0.5 and scores["recall@2"] == 1 and "success_rate@1" not in scores


# ---------------------------------------------------------------------------------------- answer metrics
words = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6)
sentences = st.lists(st.one_of(words, st.sampled_from(["a", "an", "the", "The"])), max_size=8).map(" ".join)


@SETTINGS
@given(prediction=sentences, gold=sentences)
def test_em_f1_bounds(prediction: str, gold: str) -> None:
    f1 = f1_score(prediction, gold)
    assert 0 <= f1 <= 1
    assert exact_match(prediction, gold) in (True, False)
    if exact_match(prediction, gold) and normalize_answer(gold):
        assert f1 == pytest.approx(1)
    assert exact_match(gold, gold) and f1_score(gold, prediction) == pytest.approx(f1)


@SETTINGS
@given(prediction=sentences, gold=sentences, data=st.data())
def test_normalisation_invariance(prediction: str, gold: str, data: st.DataObject) -> None:
    noisy = list(prediction.upper())
    for _ in range(data.draw(st.integers(0, 4))):
        noisy.insert(data.draw(st.integers(0, len(noisy))), data.draw(st.sampled_from(string.punctuation)))
    variant = "The  " + "".join(noisy).replace(" ", " \t ") + " ."
    assert normalize_answer(variant) == normalize_answer(prediction)
    assert exact_match(variant, gold) == exact_match(prediction, gold)
    assert f1_score(variant, gold) == f1_score(prediction, gold)


rouge_text = st.lists(st.sampled_from(["a", "b", "c", "dd", "e", ".", " ", "  ", "\t", "\n", "..", "b."]),
                      max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(hypothesis=rouge_text, reference=rouge_text)
def test_fast_rouge_l_equals_package(hypothesis: str, reference: str) -> None:
    try:
        expected: float | None = Rouge().get_scores(hypothesis, reference, avg=True)["rouge-l"]["f"]
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            rouge_l(hypothesis, reference)
        assert rougel_score(hypothesis, reference) == 0.0
    else:
        assert rouge_l(hypothesis, reference) == expected  # exact float equality
        assert rougel_score(hypothesis, reference, rouge_impl="package") == expected


@settings(max_examples=100, deadline=None)
@given(hypothesis=st.lists(words, min_size=1, max_size=25).map(" ".join),
       reference=st.lists(words, min_size=1, max_size=25).map(" ".join))
def test_fast_rouge_l_equals_package_on_sentences(hypothesis: str, reference: str) -> None:
    assume(hypothesis.strip() and reference.strip())
    expected = Rouge().get_scores(hypothesis, reference, avg=True)["rouge-l"]["f"]
    assert rouge_l(hypothesis, reference) == expected


@settings(max_examples=400, deadline=None)
@given(x=st.lists(st.sampled_from("abcde"), max_size=40), y=st.lists(st.sampled_from("abcde"), max_size=40))
def test_lcs_reconstruction_equals_package(x: list[str], y: list[str]) -> None:
    """Few distinct words: many equally long LCSs, so the traceback's tie-breaking is what is tested."""
    assert _lcs_words(x, y) == package_rouge_score._recon_lcs(x, y, exclusive=True)._ngrams
