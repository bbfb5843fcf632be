"""Prompt assembly: layout, numbering, the token budget's drop order, truncation, answer and citation parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.retrieval import Demo, Hit, Provenance
from genret.retrieval.rag import ANSWER_TASKS, build_prompt, prompt_size, readable_prefix, resolve_answer_task
from genret.retrieval.rag._prompt import _MARGIN, parse_answer, readable


@pytest.fixture(scope="module")
def count_tokens():
    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _hit(i: int, text: str) -> Hit:
    return Hit(unit_id=i, score=10.0 - i, rank=i + 1, text=text,
               provenance=Provenance(f"page-{i}", f"Title {i}", 1, 1, 0, len(text)))


HITS = [_hit(i, f"passage number {i} " + "lorem ipsum dolor sit amet " * 8) for i in range(4)]
DEMOS = [Demo(f"d{i}", f"demo question {i}?", f"answer {i}", 1.0 - i / 10, "qa") for i in range(3)]


def _total(prompt, count_tokens) -> int:
    return prompt_size(prompt, count_tokens)


def test_layout_numbers_passages_in_rank_order_and_keeps_demo_order(count_tokens):
    prompt, kept, demos = build_prompt(ANSWER_TASKS["qa"], "Who?", demos=DEMOS, passages=HITS,
                                       count_tokens=count_tokens, budget=4000)
    user = prompt[-1]["content"]
    assert [h.unit_id for h in kept] == [0, 1, 2, 3] and demos == DEMOS
    positions = [user.index(f"[{n}] (Title {n - 1})") for n in range(1, 5)]
    assert positions == sorted(positions)
    # demonstrations are few-shot turns, in the given order (most similar last), before the final question
    assert [m["role"] for m in prompt] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert [m["content"] for m in prompt[1:-1]] == [x for d in DEMOS for x in (f"Question: {d.input}", d.output)]
    assert user.rstrip().endswith("Cite the passages you used, like [1].") and "Question: Who?" in user


def test_fact_check_prompt_names_the_labels(count_tokens):
    prompt, _, _ = build_prompt(ANSWER_TASKS["scifact"], "Aspirin cures colds.", count_tokens=count_tokens,
                                budget=1000)
    assert "SUPPORTS or REFUTES" in prompt[-1]["content"] and "Claim: Aspirin" in prompt[-1]["content"]
    assert "Passages:" not in prompt[-1]["content"] and "Cite" not in prompt[0]["content"]


def test_passages_are_cut_to_their_token_limit(count_tokens):
    _, kept, _ = build_prompt(ANSWER_TASKS["qa"], "Who?", passages=HITS, count_tokens=count_tokens, budget=4000,
                              max_passage_tokens=12)
    for original, cut in zip(HITS, kept):
        assert count_tokens(cut.text) <= 12 and original.text.startswith(cut.text) and cut.text
        assert cut.provenance == original.provenance


def test_budget_drops_far_demos_then_low_passages_then_the_rest(count_tokens):
    full, _, _ = build_prompt(ANSWER_TASKS["qa"], "Who?", demos=DEMOS, passages=HITS, count_tokens=count_tokens,
                              budget=10_000)
    size = _total(full, count_tokens) + _MARGIN
    _, kept, demos = build_prompt(ANSWER_TASKS["qa"], "Who?", demos=DEMOS, passages=HITS,
                                  count_tokens=count_tokens, budget=size - 5)
    assert [d.id for d in demos] == ["d1", "d2"] and len(kept) == 4  # the least similar demo went first
    _, kept, demos = build_prompt(ANSWER_TASKS["qa"], "Who?", demos=DEMOS, passages=HITS,
                                  count_tokens=count_tokens, budget=size - 120)
    assert [d.id for d in demos] == ["d2"] and [h.unit_id for h in kept] == list(range(len(kept)))
    assert len(kept) < 4


@settings(max_examples=40, deadline=None)
@given(budget=st.integers(min_value=40, max_value=700), n_demos=st.integers(0, 3), n_hits=st.integers(0, 4))
def test_every_prompt_fits_its_budget(count_tokens, budget, n_demos, n_hits):
    prompt, kept, demos = build_prompt(ANSWER_TASKS["qa"], "Who was the first person on the summit? " * 3,
                                       demos=DEMOS[:n_demos], passages=HITS[:n_hits], count_tokens=count_tokens,
                                       budget=budget, max_passage_tokens=60)
    assert _total(prompt, count_tokens) + _MARGIN <= budget or (not kept and not demos)
    assert [h.unit_id for h in kept] == list(range(len(kept)))  # a prefix of the ranking
    assert demos == DEMOS[:n_demos][len(DEMOS[:n_demos]) - len(demos):]  # the most similar ones


def test_parse_answer_citations_and_forms():
    qa = ANSWER_TASKS["qa"]
    assert parse_answer(qa, "Answer: Guido van Rossum [2][1] [2] [7].\nMore text", 3) == ("Guido van Rossum", [2, 1])
    label = ANSWER_TASKS["fact_check"]
    assert parse_answer(label, "The evidence refutes it [1]. SUPPORTS?", 2) == ("REFUTES", [1])
    assert parse_answer(label, "maybe", 2) == ("maybe", [])
    free = ANSWER_TASKS["generic"]
    assert parse_answer(free, "Line one [1].\nLine two.", 1) == ("Line one.\nLine two.", [1])


def test_the_readable_answer_carries_its_citations():
    qa, free, label = ANSWER_TASKS["qa"], ANSWER_TASKS["generic"], ANSWER_TASKS["fact_check"]
    assert readable(qa, "Guido van Rossum", "Guido van Rossum", [2, 1], 3) == "Guido van Rossum [2][1]"
    assert readable(label, "REFUTES", "REFUTES", [], 3) == "REFUTES"
    raw = "Answer: It began in 1973 [1] when OAPEC [9] acted. Prices rose [2] fourfold by"
    answer, cited = parse_answer(free, raw, 2)  # cut by the budget: whole sentences, and what they cite
    assert (answer, cited) == ("It began in 1973 when OAPEC acted.", [1])
    assert readable(free, raw, answer, cited, 2) == "It began in 1973 [1] when OAPEC acted."
    answer, cited = parse_answer(free, raw, 2, truncated=False)  # ended by the model: whole
    assert readable(free, raw, answer, cited, 2, truncated=False) == \
        "It began in 1973 [1] when OAPEC acted. Prices rose [2] fourfold by"
    assert parse_answer(free, "It acted. [2] Then it", 2) == ("It acted.", [2])  # a marker after its full stop
    assert readable(free, "It acted. [2] Then it", "It acted.", [2], 2) == "It acted [2]."
    assert readable(free, "It began in 1973.", "It began in 1973.", [1], 2) == "It began in 1973. [1]"
    assert readable(free, "", "", [1], 2) == ""


_WORDS = st.sampled_from(["word", "end.", "3.5", "Why?", "[1]", "[7]", "Answer:", "the answer is", "e.g.", "\n", "  "])


@given(st.lists(_WORDS, max_size=24).map(" ".join), st.integers(0, 200), st.booleans())
def test_what_a_stream_shows_early_is_where_the_whole_reply_starts(raw, cut, truncated):
    free = ANSWER_TASKS["generic"]
    answer, cited = parse_answer(free, raw, 2, truncated=truncated)
    whole = readable(free, raw, answer, cited, 2, truncated=truncated)
    assert whole.startswith(readable_prefix(free, raw[:cut], 2))
    assert readable_prefix(ANSWER_TASKS["qa"], raw[:cut], 2) == ""  # short answers come whole, at the end


def test_unknown_task_falls_back_to_generic():
    assert resolve_answer_task("no-such-task")[0] == "generic"
    assert resolve_answer_task(None)[0] == "generic"
    assert resolve_answer_task("squad")[1].form == "short"
