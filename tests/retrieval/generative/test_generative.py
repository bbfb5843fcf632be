"""Generative retrieval: constrained decoding, SEAL scoring against brute force, prompts and granularity."""

import math
import random

import pytest

from genret.core import ConfigError
from genret.indexing import Index
from genret.retrieval import GenerativeConfig, GenerativeRetriever
from genret.retrieval.generative import ScoringConfig
from genret.retrieval.generative._decoding import Key, constrained_beam_search
from genret.retrieval.generative._prompts import prompt_text, resolve_prompt

QUERIES = ["Who created the Python programming language?", "When did the oil embargo start?",
           "Which pigment absorbs red light?"]


@pytest.fixture(scope="module")
def retriever(tiny_index, tiny_lm_dir):
    index = Index(tiny_index)
    cfg = GenerativeConfig(model=str(tiny_lm_dir), device="cpu", beam=4, max_len=4, title_max_len=6,
                           decode_body=True, decode_titles=True,
                           scoring=ScoringConfig(n_full=1000, max_occurrences=10_000))
    yield GenerativeRetriever(index, cfg)
    index.close()


@pytest.fixture(scope="module")
def unit_tokens(retriever):
    units = retriever.index.store.get(list(range(len(retriever.index.store))))
    return retriever.encoder.encode([(u.title, u.text) for u in units])


def _brute_count(ngram, token_lists):
    n = len(ngram)
    return sum(1 for toks in token_lists for i in range(len(toks) - n + 1) if tuple(toks[i:i + n]) == tuple(ngram))


def test_every_decoded_key_occurs_in_the_corpus(retriever, unit_tokens):
    task, keys = retriever.decode_keys(QUERIES, task="generic")
    assert all(keys), "each query gets keys"
    for ks in keys:
        for k in ks:
            assert _brute_count(k.tokens, unit_tokens) >= 1, retriever.encoder.describe(k.tokens)
            assert k.logprob <= 0
    titles = [k for ks in keys for k in ks if k.tokens[0] == retriever.encoder.title_start]
    bodies = [k for ks in keys for k in ks if k.tokens[0] != retriever.encoder.title_start]
    assert titles and bodies
    assert all(k.tokens[-1] == retriever.encoder.title_end for k in titles), "only complete titles are keys"
    assert all(retriever.encoder.title_end not in k.tokens for k in bodies)


def test_unconstrained_decoding_leaves_the_corpus(retriever, unit_tokens):
    """The same search without the index proposes n-grams that do not occur: the constraint is real."""
    lm, tok = retriever.lm, retriever.lm.tokenizer
    spec = resolve_prompt("generic", retriever.prompts)[1]
    prompts = [tok(prompt_text(spec, q, "body"))["input_ids"] for q in QUERIES]
    free = constrained_beam_search(lm, retriever.fm, prompts, beam=4, max_len=3, constrained=False)
    absent = [k for ks in free for k in ks if _brute_count(k.tokens, unit_tokens) == 0]
    assert absent


def _brute_score(tokens, keys, counts, n_tokens, cfg):
    """SEAL's formula written out directly: weights, greedy non-overlapping matches, coverage factor."""
    weights = {}
    for n, lp in keys.items():
        if counts[n] == 0:
            continue
        p_cond = math.exp(min(lp, -1e-10))
        s = cfg.smoothing * min(1.0, n_tokens / cfg.smoothing_tokens)  # smoothing shrinks with the corpus
        p_corpus = (counts[n] + s) / (n_tokens + s)
        w = math.log(p_cond * (1 - p_corpus)) - math.log(p_corpus * (1 - p_cond))
        if w > 0:
            weights[n] = w ** cfg.alpha
    occ = [(n, i) for n in weights for i in range(len(tokens) - len(n) + 1) if tuple(tokens[i:i + len(n)]) == n]
    occ.sort(key=lambda x: (-weights[x[0]], -len(x[0]), x[0], x[1]))
    taken, covered, done, total = set(), set(), set(), 0.0
    for n, i in occ:
        span = set(range(i, i + len(n)))
        if span & taken:
            continue
        taken |= span
        if n not in done:
            done.add(n)
            total += weights[n] * (1 - cfg.beta + cfg.beta * len(set(n) - covered) / len(set(n)))
            covered |= set(n)
    return total, weights


def _synthetic_keys(unit_tokens, rng, n=12):
    """Keys as decoding would give them: corpus n-grams (body spans and title prefixes) with log-probs."""
    keys = []
    for _ in range(n):
        toks = unit_tokens[rng.randrange(len(unit_tokens))]
        start = rng.randrange(len(toks))
        ngram = tuple(toks[start:start + rng.randint(1, 4)])
        keys.append(Key(ngram, -rng.uniform(0.01, 3.0)))
    keys.append(Key(tuple(toks[:3]), -0.5))  # a title prefix
    return keys


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_brute_force(retriever, unit_tokens, seed):
    cfg = retriever.config.scoring
    n_tokens = sum(len(t) for t in unit_tokens)  # index tokens = unit tokens (boundaries excluded)
    assert n_tokens == retriever.fm.n_tokens
    keys = _synthetic_keys(unit_tokens, random.Random(seed))
    best = {}
    for k in keys:
        best[k.tokens] = max(best.get(k.tokens, -1e9), k.logprob)
    best = {n: lp for n, lp in best.items()
            if any(c.isalnum() for c in retriever.encoder.describe(n).removeprefix("title: "))}
    counts = {n: _brute_count(n, unit_tokens) for n in best}
    expected = {}
    for uid, toks in enumerate(unit_tokens):
        s, _ = _brute_score(toks, best, counts, n_tokens, cfg)
        if s > 0:
            expected[uid] = s
    assert expected
    got = {uid: s for uid, s, _ in retriever.rank_units(keys, limit=100)}
    assert got.keys() == expected.keys()
    for uid in got:
        assert got[uid] == pytest.approx(expected[uid], rel=1e-9)


def test_hits_are_ranked_and_explained(retriever):
    hits = retriever.search(QUERIES[0], k=3, task="generic")
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert all(h.matched and all(isinstance(s, float) for _, s in h.matched) for h in hits)


def test_prompts_change_the_granularity(retriever):
    page = retriever.search(QUERIES[2], k=5, task="page")
    assert len({h.provenance.wikipedia_id for h in page}) == len(page) > 1  # one hit per page
    sentence = retriever.search("Chlorophyll absorbs light and oxygen is released", k=10, task="fact_check")
    photo2 = [h for h in sentence if h.provenance.wikipedia_id == "p-photo" and h.provenance.start_paragraph_id == 2]
    assert photo2, "the two-sentence paragraph is split into sentences"
    for h in photo2:
        assert h.text in ("Chlorophyll absorbs mostly blue and red light.", "Oxygen is released as a by-product.")
        assert h.provenance.end_character - h.provenance.start_character == len(h.text)
    passage = retriever.search(QUERIES[2], k=10, task="generic")
    assert {h.text for h in passage} != {h.text for h in sentence}


def test_unknown_task_falls_back_to_generic(retriever):
    assert retriever.decode_keys(["x"], task="no-such-task")[0] == "generic"


def test_continuous_prompt_needs_trained_vectors(tiny_index, tiny_lm_dir):
    from genret.retrieval.generative import PromptSpec

    cfg = GenerativeConfig(model=str(tiny_lm_dir), device="cpu", beam=2, max_len=2,
                           prompts={"soft": PromptSpec(kind="continuous", n_vectors=4)})
    with Index(tiny_index) as index:
        r = GenerativeRetriever(index, cfg)
        with pytest.raises(ConfigError, match="no trained prompt vectors"):
            r.search("anything", k=2, task="soft")


def test_model_with_another_tokenizer_is_refused(tiny_index, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "a": 1, "b": 2}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[UNK]")
    fast.save_pretrained(tmp_path)
    LlamaForCausalLM(LlamaConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)
    with Index(tiny_index) as index, pytest.raises(ConfigError, match="another tokenizer"):
        GenerativeRetriever(index, GenerativeConfig(model=str(tmp_path), device="cpu"))


def test_encoder_decoder_models_decode_under_the_same_constraints(tiny_index, tmp_path, unit_tokens):
    """A seq2seq (T5-class) model with the index's tokenizer works as well as a causal one."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from genret.core import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1,
                   num_heads=2, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with Index(tiny_index) as index:
        r = GenerativeRetriever(index, GenerativeConfig(model=str(tmp_path), device="cpu", beam=3, max_len=3,
                                                        decode_body=True, decode_titles=True))
        assert r.lm.seq2seq
        _, keys = r.decode_keys(QUERIES[:2], task="generic")
        assert all(keys)
        for ks in keys:
            assert all(_brute_count(k.tokens, unit_tokens) >= 1 for k in ks)
        assert r.search(QUERIES[0], k=3, task="page")


def test_granularity_overrides_the_prompts(retriever):
    q = QUERIES[2]
    pages = retriever.batch_search([q], 5, task="qa", granularity="page")[0]
    assert len({h.provenance.wikipedia_id for h in pages}) == len(pages)
    assert retriever.batch_search([q], 5, task="qa", granularity="passage")[0] == retriever.search(q, 5, task="qa")
    entity_task, entity_keys = retriever.decode_keys([q], task="qa", granularity="entity")
    assert entity_task == "qa" and entity_keys[0]  # entity: titles only, no body n-grams
    assert all(k.tokens[0] == retriever.encoder.title_start for k in entity_keys[0])


# -- SEAL's whole inference: query keys, rescoring, unigram scores, calibration, copy prior --------------------

def _brute_logprob(lm, prompt: list[int], key: tuple[int, ...]) -> float:
    """log P(key | prompt) from one plain forward pass over prompt + key (no cache, no batching)."""
    import torch

    ids = torch.tensor([list(prompt) + list(key)])
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(input_ids=ids).logits[0].double(), -1)
    return float(sum(lp[len(prompt) - 1 + j, t] for j, t in enumerate(key)))


def _only_query_keys(retriever, **kw):
    cfg = retriever.config.model_copy(update=dict(decode_body=False, decode_titles=False, **kw))
    return GenerativeRetriever(retriever.index, cfg, lm=retriever.lm)


def test_query_keys_are_the_query_ngrams_in_the_index(retriever, unit_tokens):
    """Keys from the query alone: every 1-3 word n-gram, in each case variant, with and without a leading space,
    that holds a non-stopword and occurs in the index (as body text or as a complete title)."""
    import itertools

    from genret.retrieval.generative._keys import STOPWORDS

    query = "who created the python programming language"
    words = query.split()
    tok, enc = retriever.lm.tokenizer, retriever.encoder
    expected = set()
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + 3) + 1):
            span = words[i:j]
            if all(w in STOPWORDS for w in span):
                continue
            for caps in itertools.product([False, True], repeat=len(span)):
                text = " ".join(w.capitalize() if c else w for w, c in zip(span, caps))
                for form in (text, " " + text):
                    ids = tuple(tok(form, add_special_tokens=False)["input_ids"])
                    if _brute_count(ids, unit_tokens):
                        expected.add(ids)
                    title = (enc.title_start, *ids, enc.title_end)
                    if _brute_count(title, unit_tokens):
                        expected.add(title)
    r = _only_query_keys(retriever, unigram_scores=False)
    _, keys = r.decode_keys([query], task="generic")
    got = {k.tokens for k in keys[0]}
    assert got == expected
    assert tuple(tok(" programming language", add_special_tokens=False)["input_ids"]) in got
    python = tok("Python", add_special_tokens=False)["input_ids"]
    assert (enc.title_start, *python, enc.title_end) not in got  # "Python" alone is no title here


def test_query_key_scores_equal_teacher_forcing_from_scratch(retriever):
    r = _only_query_keys(retriever)
    spec = resolve_prompt("generic", r.prompts)[1]
    tok = r.lm.tokenizer
    for q in QUERIES:
        _, keys = r.decode_keys([q], task="generic")
        assert keys[0]
        for k in keys[0]:
            is_title = k.tokens[0] == r.encoder.title_start
            prompt = tok(prompt_text(spec, q, "title" if is_title else "body"))["input_ids"]
            prompt, tail = (prompt + [k.tokens[0]], k.tokens[1:]) if is_title else (prompt, k.tokens)
            assert k.logprob == pytest.approx(_brute_logprob(r.lm, prompt, tail), abs=1e-4)


@pytest.mark.parametrize("bonus", [0.0, 5.0])
def test_decoded_keys_carry_their_rescored_log_probability(retriever, bonus):
    """Rescoring a decoded key (teacher forcing) equals scoring it from scratch, whatever steered the beam."""
    cfg = retriever.config.model_copy(update=dict(query_keys=False, decode_titles=False, copy_bonus=bonus))
    r = GenerativeRetriever(retriever.index, cfg, lm=retriever.lm)
    spec = resolve_prompt("generic", r.prompts)[1]
    prompt = r.lm.tokenizer(prompt_text(spec, QUERIES[0], "body"))["input_ids"]
    _, keys = r.decode_keys([QUERIES[0]], task="generic")
    assert len(keys[0]) > 4
    for k in keys[0]:
        assert k.logprob == pytest.approx(_brute_logprob(r.lm, prompt, k.tokens), abs=1e-4)


def test_the_copy_prior_changes_the_keys(retriever):
    from genret.retrieval.generative._keys import content_token_ids

    def decoded(bonus):
        cfg = retriever.config.model_copy(update=dict(query_keys=False, decode_titles=False, copy_bonus=bonus))
        r = GenerativeRetriever(retriever.index, cfg, lm=retriever.lm)
        return [k.tokens for k in r.decode_keys([QUERIES[0]], task="generic")[1][0]]

    plain, copied = decoded(0.0), decoded(20.0)
    assert set(plain) != set(copied)
    boosted = content_token_ids(retriever.lm.tokenizer, [QUERIES[0]])
    share = [sum(1 for k in keys if set(k) & boosted) / len(keys) for keys in (plain, copied)]
    assert share[1] > share[0]


def test_calibrated_weights():
    from genret.retrieval.generative._seal_scoring import key_weight

    cfg = ScoringConfig(calibration=1.0)
    # at λ = 1 the weight is the model's PMI between key and query, to the power alpha
    assert key_weight(-2.0, 3, 10_000, cfg, prior=-6.0) == pytest.approx(4.0 ** cfg.alpha)
    assert key_weight(-6.0, 3, 10_000, cfg, prior=-2.0) == 0.0  # the query made it less likely
    assert key_weight(-2.0, 0, 10_000, cfg, prior=-6.0) == 0.0  # not in the corpus
    half = ScoringConfig(calibration=0.5)
    seal = key_weight(-2.0, 3, 10_000, ScoringConfig(calibration=0.0)) ** (1 / cfg.alpha)
    assert key_weight(-2.0, 3, 10_000, half, prior=-6.0) == pytest.approx((0.5 * seal + 0.5 * 4.0) ** cfg.alpha)
    # without a prior (calibration off in decoding) the weight is SEAL's
    assert key_weight(-2.0, 3, 10_000, cfg) == key_weight(-2.0, 3, 10_000, ScoringConfig(calibration=0.0))


def test_stopword_keys_are_dropped(retriever):
    from genret.retrieval.generative._keys import has_content

    _, keys = retriever.decode_keys(QUERIES, task="generic")
    for ks in keys:
        for k in ks:
            text = retriever.encoder.describe(k.tokens)
            assert has_content(text) or text.startswith("title: "), text


@pytest.mark.parametrize("seed", range(3))
def test_unigram_scores_match_brute_force(retriever, unit_tokens, seed):
    """Free tokens (not inside an n-gram match) add their type's unigram weight once, damped by coverage."""
    from genret.retrieval.generative._seal_scoring import score_tokens

    rng = random.Random(seed)
    beta = 0.8
    for toks in unit_tokens[:6]:
        weights = {tuple(toks[i:i + 2]): rng.uniform(0.5, 3) for i in rng.sample(range(len(toks) - 1), 2)}
        unigrams = {t: rng.uniform(0.1, 1) for t in rng.sample(sorted(set(toks)), 4)}
        total, _ = score_tokens(toks, weights, beta)
        free = [True] * len(toks)
        covered = set()
        for n in sorted(weights, key=lambda n: -weights[n]):
            for i in range(len(toks) - 1):
                if tuple(toks[i:i + 2]) == n and all(free[i:i + 2]):
                    free[i:i + 2] = [False, False]
                    covered |= set(n)
        extra = sum(w * ((1 - beta) if t in covered else 1.0)
                    for t, w in unigrams.items() if any(f and x == t for x, f in zip(toks, free)))
        got, matched = score_tokens(toks, weights, beta, unigrams)
        assert got == pytest.approx(total + extra)
        assert {n for n, _ in matched} >= {(t,) for t in unigrams if any(f and x == t for x, f in zip(toks, free))}


@pytest.mark.slow
def test_two_page_corpus_ranks_the_matching_page_first(tmp_path):
    """Zero-shot with the packaged model: 'generative retrieval' finds the page that says it, not the fox."""
    import json

    from genret.indexing import IndexConfig, build_index

    corpus = tmp_path / "two.jsonl"
    corpus.write_text(
        json.dumps({"id": "a", "title": "Alpha", "text": "The quick brown fox jumps over the lazy dog."}) + "\n"
        + json.dumps({"id": "b", "title": "Beta", "text": "Generative retrieval decodes n-grams constrained by an "
                      "FM-index."}) + "\n")
    build_index(corpus, tmp_path / "idx", IndexConfig(components=("fm",)), progress=False)
    with Index(tmp_path / "idx") as index:
        r = GenerativeRetriever(index, GenerativeConfig(device="cpu"))
        hits = r.search("generative retrieval", k=2)
        assert hits[0].provenance.title == "Beta"
        assert r.search("quick fox", k=2)[0].provenance.title == "Alpha"


def test_decoding_is_on_with_a_checkpoint_and_off_zero_shot_by_default(retriever, tmp_path):
    base = GenerativeConfig(model="x")
    r = GenerativeRetriever.__new__(GenerativeRetriever)
    r.config = base
    assert not r.settings.decode_body and not r.settings.decode_titles and r.settings.query_keys
    r.config = base.model_copy(update={"checkpoint": str(tmp_path)})
    assert r.settings.decode_body and r.settings.decode_titles
    r.config = base.model_copy(update={"decode_body": True})
    assert r.settings.decode_body and not r.settings.decode_titles


def test_priors_are_the_empty_query_log_probabilities_and_cached(retriever):
    """Calibration's P(n|∅): teacher forcing after the prompt with an empty query; kept across queries."""
    r = _only_query_keys(retriever)
    spec = resolve_prompt("generic", r.prompts)[1]
    _, _, ev = r.evidence(QUERIES[:2], task="generic")
    body = [k.tokens for e in ev for k in e.keys if k.tokens[0] != r.encoder.title_start]
    assert body and all(k in e.priors for e in ev for k in (x.tokens for x in e.keys))
    null_prompt = r.lm.tokenizer(prompt_text(spec, "", "body"))["input_ids"]
    for k in body[:8]:
        assert ev[0].priors.get(k, ev[1].priors.get(k)) == pytest.approx(_brute_logprob(r.lm, null_prompt, k),
                                                                          abs=1e-4)
    again = r.gatherer.priors("generic", spec, "body", None, (), body)
    assert again == {k: pytest.approx(ev[0].priors.get(k, ev[1].priors.get(k)), abs=1e-9) for k in body}


def test_config_granularity_overrides_the_prompt(retriever):
    cfg = retriever.config.model_copy(update={"granularity": "page"})
    r = GenerativeRetriever(retriever.index, cfg, lm=retriever.lm)
    hits = r.search(QUERIES[2], k=5, task="qa")  # qa's prompt says passage
    assert len({h.provenance.wikipedia_id for h in hits}) == len(hits)
    assert hits == retriever.batch_search([QUERIES[2]], 5, task="qa", granularity="page")[0]
