"""The local Hugging Face generator on a tiny random Llama (SmolLM2 tokenizer and chat template)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from genret.core import ConfigError, GenretError
from genret.retrieval.rag import GeneratorConfig, HFGenerator, load_generator
from genret.retrieval.rag._generator import cut_at_stop, render_plain, stream_until_stop

QUESTIONS = ["When did the oil embargo start?", "Which pigment absorbs red and blue light in plants?",
             "Who created the Python programming language?", "Who first climbed the highest mountain in the world?",
             "Which trumpeter shaped the New Orleans music genre? Answer with a name.", "Hi"]
PROMPTS = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}] for q in QUESTIONS]


def _config(model_dir, **kw) -> GeneratorConfig:
    return GeneratorConfig(model=str(model_dir), device="cpu", max_new_tokens=12, **kw)


@pytest.fixture(scope="module")
def gen(tiny_chat_lm_dir) -> HFGenerator:
    return HFGenerator(_config(tiny_chat_lm_dir, batch_size=4))


@pytest.fixture(scope="module")
def single(gen) -> list[str]:
    """Every prompt generated on its own (batch size 1)."""
    return [gen.generate([p])[0] for p in PROMPTS]


def test_greedy_generation_is_deterministic_and_not_trivial(gen, single) -> None:
    again = gen.generate(PROMPTS[:2])
    assert again == single[:2]
    assert all(single), "the tiny chat model should write some text"
    assert len(set(single)) > 1


def test_batched_generation_equals_one_by_one(gen, single) -> None:
    # prompts of 18-32 tokens, left-padded in batches of 4 + 2, then of 3, equal the one-by-one completions
    assert gen.generate(PROMPTS) == single
    assert gen.generate(PROMPTS[4:] + PROMPTS[:1]) == single[4:] + single[:1]


def test_stop_cuts_before_the_first_stop_string(gen, single) -> None:
    text = single[0]
    words = text.split()
    assert len(words) >= 3
    stop = words[2]
    expected = text[:text.index(stop)].strip()
    assert gen.generate([PROMPTS[0]], stop=[stop])[0] == expected
    assert gen.generate([PROMPTS[0]], stop=["never appears", stop])[0] == expected
    assert gen.generate([PROMPTS[0]], stop=["never appears"])[0] == text
    assert "".join(gen.stream(PROMPTS[0], stop=[stop])).strip() == expected


def test_max_new_tokens_bounds_the_completion(gen) -> None:
    short, full = gen.generate([PROMPTS[1]], max_new_tokens=3)[0], gen.generate([PROMPTS[1]])[0]
    assert short and len(short) < len(full)
    assert full.startswith(short)


def _new_ids(gen, prompt, n: int) -> list[int]:
    """The model's own greedy new tokens for ``prompt`` (at most ``n``), up to its end of sequence."""
    import torch

    enc = gen._encode([gen.render(prompt)], "left")
    with torch.inference_mode():
        ids = gen.lm.model.generate(**enc, **gen._gen_kwargs(n))[0, enc["input_ids"].shape[1]:].tolist()
    ends = {*gen._eos_ids, gen.tokenizer.pad_token_id}
    return ids[:next((k for k, t in enumerate(ids) if t in ends), len(ids))]


def _drain(stream) -> tuple[list[str], object]:
    """A ``stream_complete``'s pieces and its return value."""
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            return pieces, end.value


def test_complete_counts_the_models_new_tokens_and_says_when_it_stopped_at_the_limit(gen) -> None:
    for n in (1, 5, 12):
        done = gen.complete(PROMPTS, max_new_tokens=n)
        assert [c.text for c in done] == gen.generate(PROMPTS, max_new_tokens=n)
        for prompt, c in zip(PROMPTS, done):
            ids = _new_ids(gen, prompt, n)
            assert (c.tokens, c.truncated) == (len(ids), len(ids) == n)  # the model's count, not the text's
            pieces, streamed = _drain(gen.stream_complete(prompt, max_new_tokens=n))
            assert streamed == c and "".join(pieces).strip() == c.text
    text = gen.generate([PROMPTS[0]])[0]
    stop = text.split()[2]
    assert not gen.complete([PROMPTS[0]], stop=[stop])[0].truncated  # a stop string ended it, not the limit
    assert not _drain(gen.stream_complete(PROMPTS[0], stop=[stop]))[1].truncated


def test_stream_pieces_concatenate_to_the_generated_text(gen, single) -> None:
    for prompt, text in zip(PROMPTS[:3], single):
        pieces = list(gen.stream(prompt))
        assert len(pieces) > 1
        assert "".join(pieces).strip() == text


def test_closing_a_stream_early_stops_the_model(gen) -> None:
    import time

    stream = gen.stream(PROMPTS[1], max_new_tokens=400)  # seconds of decoding if it ran to the end
    first = next(stream)
    assert first
    started = time.monotonic()
    stream.close()  # the consumer went away: the model thread stops at its next step and frees the model
    assert gen._lock.acquire(timeout=5)
    gen._lock.release()
    assert time.monotonic() - started < 2


def test_concurrent_calls_are_safe(gen, single) -> None:
    # generate, stream, count_tokens and loglik from several threads at once give the sequential answers
    def work(i: int):
        if i % 3 == 0:
            return gen.generate([PROMPTS[i % len(PROMPTS)]])[0]
        if i % 3 == 1:
            return "".join(gen.stream(PROMPTS[i % len(PROMPTS)])).strip()
        return gen.count_tokens(QUESTIONS[i % len(QUESTIONS)] * 20)

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(work, range(12)))
    for i, g in enumerate(got):
        want = single[i % len(PROMPTS)] if i % 3 != 2 else gen.count_tokens(QUESTIONS[i % len(QUESTIONS)] * 20)
        assert g == want


def test_loglik_equals_a_hand_computation(gen) -> None:
    import torch

    prompt, target = PROMPTS[0], " In October 1973."
    tok = gen.tokenizer
    pid = tok(gen.render(prompt), add_special_tokens=False)["input_ids"]
    tid = tok(target, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = gen.lm.model(input_ids=torch.tensor([pid + tid])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    expected = sum(float(logp[len(pid) + j - 1, t]) for j, t in enumerate(tid))
    assert gen.loglik([prompt], [target])[0] == pytest.approx(expected, abs=1e-4)


def test_loglik_is_lower_for_a_longer_continuation_and_batches_agree(gen) -> None:
    short, longer = " Paris", " Paris is the capital of France"
    pairs = [(PROMPTS[0], short), (PROMPTS[0], longer), (PROMPTS[2], " Guido"), (PROMPTS[5], " Hello there, friend")]
    batched = gen.loglik([p for p, _ in pairs], [t for _, t in pairs])  # batch of 4, right padding
    one_by_one = [gen.loglik([p], [t])[0] for p, t in pairs]
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert batched[1] < batched[0] < 0
    with pytest.raises(GenretError, match="2 prompts but 1 targets"):
        gen.loglik(PROMPTS[:2], ["x"])


def test_render_uses_the_chat_template(gen) -> None:
    text = gen.render(PROMPTS[0])
    assert text == gen.tokenizer.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>system\nAnswer briefly.<|im_end|>" in text
    assert "<|im_start|>user\nWhen did the oil embargo start?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    with pytest.raises(GenretError, match="empty prompt"):
        gen.render([])


def test_render_plain_without_a_template() -> None:
    assert render_plain([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]) == "S\n\nQ\nAnswer:"
    few_shot = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}]
    assert render_plain(few_shot) == "Q1\n\nAnswer: A1\n\nQ2\nAnswer:"


def test_long_prompts_keep_their_end(tiny_chat_lm_dir) -> None:
    # past max_input_tokens the start of the prompt goes, not the question and the generation prompt
    g = HFGenerator(_config(tiny_chat_lm_dir, max_input_tokens=64))
    prompt = [{"role": "user", "content": "filler words " * 100 + QUESTIONS[0]}]
    ids = g._encode([g.render(prompt)], "left")["input_ids"][0].tolist()
    assert len(ids) == 64
    assert g.tokenizer.decode(ids).endswith(QUESTIONS[0] + "<|im_end|>\n<|im_start|>assistant\n")
    assert isinstance(g.generate([prompt], max_new_tokens=2)[0], str)


def test_cut_at_stop_andstream_until_stop() -> None:
    assert cut_at_stop("a. b\nc", ["\n", "."]) == "a"
    assert cut_at_stop("abc", ["", "z"]) == "abc"
    pieces = ["Hel", "lo\nWor", "ld"]
    assert "".join(stream_until_stop(iter(pieces), ["\nW"])) == "Hello"
    assert "".join(stream_until_stop(iter(pieces), ["zz"])) == "Hello\nWorld"
    assert list(stream_until_stop(iter(pieces), [])) == pieces
    # a stop string split across pieces is still found, and nothing after it leaks out
    assert "".join(stream_until_stop(iter(["a<", "/s", ">b"]), ["</s>"])) == "a"


def test_bad_kinds_and_missing_base_url_are_config_errors(monkeypatch) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(kind="nope")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="base URL"):
        load_generator(GeneratorConfig(kind="openai", base_url=None, api_key_env="GENRET_TEST_NO_SUCH_KEY"))
