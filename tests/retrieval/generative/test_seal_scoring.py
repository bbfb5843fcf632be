"""SEAL's unit score (``_seal_scoring.KeyMatcher``) against a direct reading of its definition: occurrences taken
in decreasing weight order where they do not overlap a taken token, each n-gram counted once with the coverage
factor, then each free token type's unigram weight once."""

from __future__ import annotations

import random

import pytest

from genret.retrieval.generative._seal_scoring import KeyMatcher, score_tokens


def _reference(tokens, weights, beta, unigrams):
    keys = sorted((n for n, w in weights.items() if w > 0 and n), key=lambda n: (-weights[n], -len(n), n))
    free = [True] * len(tokens)
    covered: set[int] = set()
    total, matched = 0.0, []
    for n in keys:
        counted = False
        for i in range(len(tokens) - len(n) + 1):
            if tuple(tokens[i:i + len(n)]) == n and all(free[i:i + len(n)]):
                free[i:i + len(n)] = [False] * len(n)
                if not counted:
                    c = weights[n] * (1 - beta + beta * len(set(n) - covered) / len(set(n)))
                    covered |= set(n)
                    total += c
                    matched.append((n, c))
                    counted = True
    seen: set[int] = set()
    for t, f in zip(tokens, free):
        if f and t not in seen and unigrams.get(t, 0) > 0:
            seen.add(t)
            c = unigrams[t] * (1 - beta + beta * (t not in covered))
            total += c
            matched.append(((t,), c))
    return total, matched


@pytest.mark.parametrize("seed", range(40))
def test_key_matcher_equals_the_definition(seed):
    rng = random.Random(seed)
    vocab = rng.randint(3, 12)  # few types: overlaps, repeats and shared first tokens are common
    tokens = [rng.randrange(vocab) for _ in range(rng.randint(0, 60))]
    weights = {}
    for _ in range(rng.randint(0, 12)):
        if tokens and rng.random() < 0.8:  # mostly n-grams that occur, some that do not
            i = rng.randrange(len(tokens))
            n = tuple(tokens[i:i + rng.randint(1, 4)])
        else:
            n = tuple(rng.randrange(vocab + 5) for _ in range(rng.randint(1, 3)))
        weights[n] = rng.choice([0.0, -1.0, rng.uniform(0.1, 4)])
    unigrams = {rng.randrange(vocab + 100): rng.choice([0.0, rng.uniform(0.1, 1)]) for _ in range(rng.randint(0, 6))}
    beta = rng.choice([0.0, 0.5, 0.8, 1.0])
    want_total, want = _reference(tokens, weights, beta, unigrams)
    matcher = KeyMatcher(weights)
    for _ in range(2):  # the matcher is reused across units, its unigram table too
        total, got = matcher.score(tokens, beta, unigrams)
        assert total == pytest.approx(want_total)
        assert [n for n, _ in got] == [n for n, _ in want]
        assert [c for _, c in got] == pytest.approx([c for _, c in want])
    assert score_tokens(tokens, weights, beta, unigrams)[0] == pytest.approx(want_total)
    big = [t + 10_000 for t in tokens]  # ids beyond every key's and unigram's: nothing matches
    assert matcher.score(big, beta, unigrams) == (0.0, [])
