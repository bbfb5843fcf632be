"""A chat's history in the RAG prompt: the conversation's system text before the task instruction, its earlier
turns between the demonstrations and the question, and the token budget's drop order with them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.retrieval import Demo, Hit, Provenance
from genret.retrieval.rag import ANSWER_TASKS, build_prompt, prompt_size
from genret.retrieval.rag._prompt import _MARGIN

QA = ANSWER_TASKS["qa"]


@pytest.fixture(scope="module")
def count_tokens():
    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _hit(i: int) -> Hit:
    text = f"passage number {i} " + "lorem ipsum dolor sit amet " * 8
    return Hit(unit_id=i, score=10.0 - i, rank=i + 1, text=text,
               provenance=Provenance(f"page-{i}", f"Title {i}", 1, 1, 0, len(text)))


HITS = [_hit(i) for i in range(3)]
DEMOS = [Demo(f"d{i}", f"demo question {i}?", f"answer {i}", 1.0 - i / 10, "qa") for i in range(2)]
HISTORY = [{"role": "system", "content": "You are terse."},
           {"role": "user", "content": "first question " + "and more words " * 10},
           {"role": "assistant", "content": "first answer " + "and more words " * 10},
           {"role": "tool", "content": "a tool's output"},
           {"role": "developer", "content": "Answer in English."},
           {"role": "user", "content": "second question"},
           {"role": "user", "content": "said twice"},
           {"role": "assistant", "content": "second answer"}]


def _build(count_tokens, budget: int = 10_000, history=HISTORY, demos=DEMOS, hits=HITS):
    return build_prompt(QA, "Who?", demos=demos, passages=hits, history=history, count_tokens=count_tokens,
                        budget=budget)


def test_the_conversation_goes_into_the_prompt(count_tokens):
    prompt, kept, demos = _build(count_tokens)
    assert len(kept) == 3 and demos == DEMOS
    system = prompt[0]["content"]
    assert system.startswith("You are terse.\n\nAnswer in English.\n\n") and system.endswith(
        build_prompt(QA, "Who?", passages=HITS, count_tokens=count_tokens, budget=10_000)[0][0]["content"])
    # demonstrations, then the earlier turns (tool messages left out, a role's consecutive turns merged), then
    # the question with its passages
    assert [m["role"] for m in prompt] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert [m["content"] for m in prompt[5:9]] == [HISTORY[1]["content"], HISTORY[2]["content"],
                                                    "second question\n\nsaid twice", "second answer"]
    assert "Passages:" in prompt[-1]["content"] and "Question: Who?" in prompt[-1]["content"]


def test_without_a_history_the_prompt_is_as_before(count_tokens):
    assert _build(count_tokens, history=()) == build_prompt(QA, "Who?", demos=DEMOS, passages=HITS,
                                                            count_tokens=count_tokens, budget=10_000)


def test_a_leading_assistant_turn_and_empty_messages_are_left_out(count_tokens):
    prompt, _, _ = _build(count_tokens, demos=(), hits=(), history=[
        {"role": "assistant", "content": "Hello! Ask me anything."}, {"role": "system", "content": "  "},
        {"role": "user", "content": ""}, {"role": "user", "content": "earlier"}])
    assert [(m["role"], m["content"]) for m in prompt[1:-1]] == [("user", "earlier")]
    assert not prompt[0]["content"].startswith("\n")


def _size(count_tokens, **kw) -> int:
    return prompt_size(_build(count_tokens, **kw)[0], count_tokens) + _MARGIN


def test_budget_drops_far_demos_then_old_turns_then_low_passages(count_tokens):
    full = _size(count_tokens)
    prompt, kept, demos = _build(count_tokens, budget=full - 3)
    assert [d.id for d in demos] == ["d1"] and len(kept) == 3 and len(prompt) == 1 + 2 + 4 + 1
    # the oldest turns go next (a whole exchange: no turn list starts with the assistant's)
    prompt, kept, demos = _build(count_tokens, budget=full - 40)
    assert len(demos) == 1 and len(kept) == 3
    assert [m["content"] for m in prompt[3:-1]] == ["second question\n\nsaid twice", "second answer"]
    # then passages beyond the first, then the last demonstration
    no_turns = _size(count_tokens, history=HISTORY[:1], demos=DEMOS[1:])
    prompt, kept, demos = _build(count_tokens, budget=no_turns - 3)
    assert len(demos) == 1 and len(kept) == 2 and [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[0]["content"].startswith("You are terse.")


def test_the_system_text_is_cut_after_the_last_demo_and_before_the_last_passage(count_tokens):
    long_system = [{"role": "system", "content": "Be careful. " * 60}]
    bare = _size(count_tokens, history=(), demos=(), hits=HITS[:1])
    prompt, kept, demos = _build(count_tokens, history=long_system, budget=bare + 30)
    assert not demos and len(kept) == 1
    assert prompt[0]["content"].startswith("Be careful.") and len(prompt[0]["content"]) < len("Be careful. " * 60)
    prompt, kept, _ = _build(count_tokens, history=long_system, budget=bare)
    assert len(kept) == 1 and not prompt[0]["content"].startswith("Be careful")


@settings(max_examples=30, deadline=None)
@given(budget=st.integers(min_value=40, max_value=500), n_turns=st.integers(0, len(HISTORY)),
       n_hits=st.integers(0, 3))
def test_every_prompt_with_a_history_fits_its_budget(count_tokens, budget, n_turns, n_hits):
    prompt, kept, demos = _build(count_tokens, budget=budget, history=HISTORY[:n_turns], hits=HITS[:n_hits])
    turns = prompt[1 + 2 * len(demos):-1]
    fits = prompt_size(prompt, count_tokens) + _MARGIN <= budget
    assert fits or (not kept and not demos and not turns and prompt[0]["content"].startswith("You answer"))
    assert not turns or turns[0]["role"] == "user"
