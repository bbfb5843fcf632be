"""Constrained beam search over an FM-index: every generated n-gram occurs in the corpus.

At each step the index lists the distinct tokens that follow each beam's n-gram (``next_tokens`` of
the beam's suffix-array range); only those are scored, with the model's (unconstrained) log-softmax,
so a beam's score is log P(n-gram | prompt).  Every partial n-gram a beam passes through is kept as a
key (SEAL keeps all of them).  Queries are decoded together: the prompts run as one batch and the
beams of all queries share one batch and one KV cache per step (``_lm_steps.Stepper``).

A copy prior (``boost``): per query, a set of token ids whose log-probability gets a bonus while the
beam is ranked — e.g. the query's own content words, which a small zero-shot model otherwise ranks below
answer openers ("The", "In").  The bonus only steers the search: the returned log-probability of a key
is the model's own, without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._lm_steps import Stepper


@dataclass(frozen=True, slots=True)
class Key:
    """A decoded n-gram (token ids) and its log-probability given the prompt."""

    tokens: tuple[int, ...]
    logprob: float


@dataclass
class _Beam:
    query: int
    tokens: tuple[int, ...]
    rng: tuple[int, int]
    score: float  # with the copy bonus: what the beam is ranked by
    raw: float  # the model's own log-probability
    parent_row: int = -1
    done: bool = False


def constrained_beam_search(lm, fm, prompts: list[list[int]], *, beam: int = 10, max_len: int = 10,
                            force_prefix: Sequence[int] = (), stop_token: int | None = None,
                            prefix_embeds=None, constrained: bool = True, banned: Sequence[int] = (),
                            boost: Sequence[Sequence[int]] | None = None, bonus: float = 0.0,
                            stepper: Stepper | None = None, steered_scores: bool = False) -> list[list[Key]]:
    """Decode n-grams for each prompt; returns, per prompt, every key met (best log-prob per n-gram).

    ``force_prefix`` tokens are fed first (e.g. the title-start marker; they are part of the keys, their
    own probability is not); a beam that emits ``stop_token`` is finished (a complete title).  With
    ``constrained=False`` the index is ignored (for measuring the cost of the constraints): plain top-k beam
    search.  ``banned`` tokens are never generated (e.g. the title markers while decoding body n-grams).
    ``boost[q]`` token ids get ``bonus`` added while query q's beams are ranked (the copy prior).
    ``stepper``: a ``Stepper`` already started on ``prompts + force_prefix`` (its state is left untouched;
    the search runs on a fork), else one is made here.  Keys carry the model's own log-probability (equal to
    teacher forcing the key after the prompt), or with ``steered_scores`` the score they were ranked by.
    """
    banned_arr = np.asarray(sorted(set(banned)), dtype=np.int64)
    n_q = len(prompts)
    if stepper is None:
        stepper = Stepper(lm, prefix_embeds)
        stepper.start([list(p) + list(force_prefix) for p in prompts])
    stepper = stepper.fork(range(n_q))
    logprobs = stepper.first
    vocab = logprobs.shape[1]
    bonus_rows = np.zeros((n_q, vocab), dtype=np.float32)
    if boost is not None and bonus:
        for q, ids in enumerate(boost):
            ids = np.asarray([i for i in ids if 0 <= i < vocab], dtype=np.int64)
            bonus_rows[q, ids] = bonus
    base_rng = fm.range_of(list(force_prefix)) if constrained else (0, 0)
    beams = [_Beam(q, tuple(force_prefix), base_rng, 0.0, 0.0) for q in range(n_q)]
    keys: list[dict[tuple[int, ...], tuple[float, float]]] = [{} for _ in range(n_q)]
    for step in range(max_len):
        lp = logprobs.cpu().numpy()
        cands: list[list[tuple[float, float, int, int]]] = [[] for _ in range(n_q)]  # (score, raw, row, token)
        for row, b in enumerate(beams):
            if constrained:
                ids, _counts = fm.next_tokens_of_range(b.rng)
                ids = np.asarray(ids, dtype=np.int64)
                ids = ids[ids < vocab]
                if len(banned_arr):
                    ids = ids[~np.isin(ids, banned_arr)]
                if len(ids) == 0:
                    continue
            else:
                ids = np.arange(vocab, dtype=np.int64)
                if len(banned_arr):
                    ids = ids[~np.isin(ids, banned_arr)]
            raw = lp[row, ids]
            ranked = raw + bonus_rows[b.query, ids]
            top = np.argpartition(-ranked, beam)[:beam] if len(ids) > beam else np.arange(len(ids))
            cands[b.query].extend((b.score + float(ranked[i]), b.raw + float(raw[i]), row, int(ids[i]))
                                  for i in top)
        new_beams: list[_Beam] = []
        for q in range(n_q):
            for score, raw, row, tok in sorted(cands[q], key=lambda c: (-c[0], c[2], c[3]))[:beam]:
                parent = beams[row]
                tokens = parent.tokens + (tok,)
                if keys[q].get(tokens, (-np.inf,))[0] < score:
                    keys[q][tokens] = (score, raw)
                if stop_token is not None and tok == stop_token:
                    continue  # a finished title: kept as a key, not extended
                rng = fm.extend(parent.rng, tok) if constrained else (0, 0)
                new_beams.append(_Beam(q, tokens, rng, score, raw, row))
        if not new_beams or step == max_len - 1:
            break
        logprobs = stepper.step([b.parent_row for b in new_beams], [b.tokens[-1] for b in new_beams])
        beams = new_beams
    pick = 0 if steered_scores else 1
    return [[Key(t, v[pick]) for t, v in sorted(k.items(), key=lambda kv: -kv[1][0])] for k in keys]
