"""What the language model says about a query: keys with their log-probabilities, as SEAL's inference gathers
them (``seal/retrieval.py``: decoded keys, query keys, rescoring, unigram scores), plus the same model's
log-probabilities without the query, for calibration.

For each query, with one prompt pass per prompt kind (body, title) shared by everything below:

1. body n-grams decoded under the FM-index constraint (beam search, with an optional copy prior on the
   query's content tokens), and complete titles decoded between the title markers;
2. query keys (``_keys.query_ngram_strings``) that occur in the index — as body n-grams and as complete titles;
3. every key's log P(key | prompt), the model's own probability whatever steered the search (``rescore``,
   SEAL's teacher-forced rescoring: decoded keys carry it from the search, which tracks the unsteered sum,
   and the query keys are teacher-forced over the prompt's cache); keys made only of stopwords or
   punctuation are dropped;
4. the next-token distribution right after the body prompt (SEAL's unigram scores);
5. with calibration on, the same log-probabilities under the prompt with an empty query — one prompt pass per
   task, cached — so that a key the model writes whatever the question ("The answer", "In 19…") can be told
   from one the question made likely.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._decoding import Key, constrained_beam_search
from ._keys import content_token_ids, has_content, query_ngram_strings
from ._lm_steps import Stepper
from ._prompts import PromptSpec, prompt_text


@dataclass
class Evidence:
    """One query's keys: ``keys`` (log P(n | query), best first), ``priors`` (log P(n | empty query) per key,
    when calibrating), and the body prompt's next-token log-probabilities with and without the query."""

    keys: list[Key]
    priors: dict[tuple[int, ...], float] = field(default_factory=dict)
    unigram: np.ndarray | None = None
    unigram_prior: np.ndarray | None = None


@dataclass(frozen=True)
class EvidenceSettings:
    """The knobs of ``gather`` (filled from ``GenerativeConfig``)."""

    beam: int
    max_len: int
    title_max_len: int
    decode_body: bool
    decode_titles: bool
    partial_titles: bool
    constrained: bool
    query_keys: bool
    query_key_words: int
    rescore: bool
    unigrams: bool
    calibrate: bool
    copy_bonus: float
    drop_stopword_keys: bool


class EvidenceGatherer:
    """Gathers ``Evidence`` for batches of queries with one LM over one FM-index (see the module doc)."""

    def __init__(self, lm, fm, encoder) -> None:
        self.lm, self.fm, self.encoder = lm, fm, encoder
        # per empty-query prompt: its started stepper and log P(key | empty query) per key (the same for every
        # query, so kept across queries)
        self._null: dict[tuple, tuple[Stepper, dict[tuple[int, ...], float]]] = {}

    def _tok(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self.lm.tokenizer(list(texts))["input_ids"]]

    def _started(self, prompts: list[list[int]], prefix) -> Stepper:
        st = Stepper(self.lm, prefix)
        st.start(prompts)
        return st

    def _started_pair(self, a: list[list[int]], b: list[list[int]], prefix) -> tuple[Stepper, Stepper]:
        """Steppers started on prompts ``a`` and on prompts ``b``, row for row.  The body and title prompts of a
        query differ only in their last words: where each row's two prompts share a beginning and the rest is
        of one length per side (a causal model), the beginning is read once and each side continues from it."""
        cut = [next((j for j, (x, y) in enumerate(zip(p, q)) if x != y), min(len(p), len(q))) for p, q in zip(a, b)]
        ends_a, ends_b = {len(p) - c for p, c in zip(a, cut)}, {len(q) - c for q, c in zip(b, cut)}
        if self.lm.seq2seq or len(ends_a) != 1 or len(ends_b) != 1 or 0 in ends_a | ends_b or 0 in cut:
            return self._started(a, prefix), self._started(b, prefix)
        shared = self._started([p[:c] for p, c in zip(a, cut)], prefix)
        other = shared.fork(range(len(b)))
        shared.extend([p[c:] for p, c in zip(a, cut)])
        other.extend([q[c:] for q, c in zip(b, cut)])
        return shared, other

    def _null_prompt(self, task: str, spec: PromptSpec, target: str, prefix,
                     suffix: tuple[int, ...]) -> tuple[Stepper, dict[tuple[int, ...], float]]:
        """The prompt with an empty query (started once) and its cache of key priors."""
        key = (task, spec.model_dump_json(), target, suffix, id(prefix))
        if key not in self._null:
            prompt = self._tok([prompt_text(spec, "", target)])[0] + list(suffix)
            self._null[key] = (self._started([prompt], prefix), {})
        return self._null[key]

    def priors(self, task: str, spec: PromptSpec, target: str, prefix, suffix: tuple[int, ...],
               keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], float]:
        """log P(key | prompt with an empty query) for each key (teacher-forced once, then cached)."""
        null, cache = self._null_prompt(task, spec, target, prefix, suffix)
        known = {k: cache[k] for k in keys if k in cache}  # kept here: remembering may start the cache over
        todo = [k for k in dict.fromkeys(keys) if k not in known]
        values = null.teacher_force([0] * len(todo), todo)
        known.update(zip(todo, values))
        _remember(cache, todo, values)
        return {k: float(known[k]) for k in keys}

    def _score_keys(self, st: Stepper, rows: list[int], seqs: list[tuple[int, ...]], calibrate: bool,
                    null_key: tuple) -> np.ndarray:
        """``st.teacher_force(rows, seqs)``; with ``calibrate``, the keys' uncached priors teacher-forced in the
        same pass where the steppers stack and the priors are no more keys than a query's (the empty-query prompt
        as one more row: on a CPU thread a pass costs a read of every weight, whatever its few tokens), and
        remembered for ``priors``."""
        if calibrate:
            null, cache = self._null_prompt(*null_key)
            todo = [k for k in dict.fromkeys(seqs) if k not in cache]
            widest = max(Counter(rows).values(), default=0)
            # stacked rows are padded to the widest tree: worth it while the priors' tree is no wider than the
            # widest query's (one question at a time; a batch's new keys make a wider one than each of its queries)
            if todo and len(todo) <= widest and st.can_stack(null):
                extra = st.first.shape[0]
                values = st.stacked(null).teacher_force(list(rows) + [extra] * len(todo), list(seqs) + todo)
                _remember(cache, todo, values[len(rows):])
                return values[:len(rows)]
        return st.teacher_force(rows, seqs)

    def query_key_tokens(self, query: str, max_words: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """``(body keys, title keys)`` from the query's n-grams that occur in the index (token ids)."""
        strings = query_ngram_strings(query, max_words)
        if not strings:
            return [], []
        seqs = list(dict.fromkeys(tuple(s) for s in self.encoder.texts(strings) if s))
        titles = [(self.encoder.title_start, *t, self.encoder.title_end) for t in seqs]
        counts = self.fm.count_many(seqs + titles)  # one batch: a sharded or remote index answers it at once
        return ([t for t, c in zip(seqs, counts[:len(seqs)]) if c > 0],
                [t for t, c in zip(titles, counts[len(seqs):]) if c > 0])

    def gather(self, queries: Sequence[str], task: str, spec: PromptSpec, settings: EvidenceSettings,
               prefix=None, granularity: str = "passage") -> list[Evidence]:
        """``Evidence`` for each query (``granularity`` ``entity``: titles only)."""
        n = len(queries)
        cfg, enc = settings, self.encoder
        found: list[dict[tuple[int, ...], float]] = [{} for _ in range(n)]
        per_kind: list[tuple[str, Stepper, list[list[tuple[int, ...]]], tuple[int, ...]]] = []
        boost = [content_token_ids(enc.tokenizer, [q]) for q in queries] if cfg.copy_bonus else None
        qkeys = [self.query_key_tokens(q, cfg.query_key_words) if cfg.query_keys else ([], []) for q in queries]
        evidence = [Evidence([]) for _ in range(n)]
        markers = (enc.title_start, enc.title_end)
        body_on = granularity != "entity" and (cfg.decode_body or cfg.query_keys or cfg.unigrams)
        decode_titles = cfg.decode_titles or granularity == "entity"  # entity: titles are the only identifiers
        title_on = decode_titles or any(qk[1] for qk in qkeys)  # no prompt pass when there is no title key to score
        body_prompts = self._tok([prompt_text(spec, q, "body") for q in queries]) if body_on else []
        title_prompts = self._tok([prompt_text(spec, q, "title") for q in queries]) if title_on else []
        if body_on and title_on:
            body_st, title_st = self._started_pair(body_prompts, [p + [markers[0]] for p in title_prompts], prefix)
        else:
            body_st = self._started(body_prompts, prefix) if body_on else None
            title_st = self._started([p + [markers[0]] for p in title_prompts], prefix) if title_on else None
        if body_on:
            prompts, st = body_prompts, body_st
            decoded: list[list[Key]] = [[] for _ in range(n)]
            if cfg.decode_body:
                decoded = constrained_beam_search(self.lm, self.fm, prompts, beam=cfg.beam, max_len=cfg.max_len,
                                                  constrained=cfg.constrained, banned=markers, boost=boost,
                                                  bonus=cfg.copy_bonus, stepper=st, steered_scores=not cfg.rescore)
            keys = [[k.tokens for k in ks] + list(qk[0]) for ks, qk in zip(decoded, qkeys)]
            for i, ks in enumerate(decoded):
                found[i].update((k.tokens, k.logprob) for k in ks)
            per_kind.append(("body", st, keys, ()))
            if cfg.unigrams:
                first = st.first.float().cpu().numpy()
                for i in range(n):
                    evidence[i].unigram = first[i]
        if title_on:
            prompts, st = title_prompts, title_st
            decoded = [[] for _ in range(n)]
            if decode_titles:
                decoded = constrained_beam_search(
                    self.lm, self.fm, prompts, beam=cfg.beam, max_len=cfg.title_max_len, force_prefix=[markers[0]],
                    stop_token=markers[1], constrained=cfg.constrained, boost=boost, bonus=cfg.copy_bonus,
                    stepper=st, steered_scores=not cfg.rescore)
                # as in SEAL, a title identifies a page only once complete (ends with the title marker)
                decoded = [[k for k in ks if cfg.partial_titles or k.tokens[-1] == markers[1]] for ks in decoded]
            keys = [[k.tokens for k in ks] + list(qk[1]) for ks, qk in zip(decoded, qkeys)]
            for i, ks in enumerate(decoded):
                found[i].update((k.tokens, k.logprob) for k in ks)
            per_kind.append(("title", st, keys, (markers[0],)))
        for kind, st, keys, forced in per_kind:
            keys = [[k for k in dict.fromkeys(ks) if not cfg.drop_stopword_keys or self._content(k)] for ks in keys]
            rows = [i for i, ks in enumerate(keys) for _ in ks]
            flat = [k for ks in keys for k in ks]
            tails = [k[len(forced):] for k in flat]
            todo = [j for j, (r, k) in enumerate(zip(rows, flat)) if k not in found[r]]
            tf = self._score_keys(st, [rows[j] for j in todo], [tails[j] for j in todo], cfg.calibrate,
                                  (task, spec, kind, prefix, forced))
            scores = {j: float(v) for j, v in zip(todo, tf)}
            for j, (r, k) in enumerate(zip(rows, flat)):
                evidence[r].keys.append(Key(k, scores[j] if j in scores else found[r][k]))
            if cfg.calibrate:
                prior = self.priors(task, spec, kind, prefix, forced, tails)
                for r, k, t in zip(rows, flat, tails):
                    evidence[r].priors[k] = prior[t]
                if kind == "body" and cfg.unigrams:
                    p0 = self._null_prompt(task, spec, kind, prefix, forced)[0].first[0].float().cpu().numpy()
                    for ev in evidence:
                        ev.unigram_prior = p0
        for ev in evidence:
            ev.keys.sort(key=lambda k: -k.logprob)
        return evidence

    def _content(self, ngram: tuple[int, ...]) -> bool:
        """Body n-grams need a word that is not a stopword; titles ("The Who") only a letter or digit."""
        text = self.encoder.describe(ngram)
        if ngram and ngram[0] == self.encoder.title_start:
            return any(ch.isalnum() for ch in text.removeprefix("title: "))
        return has_content(text)


def _remember(cache: dict, keys: Sequence[tuple[int, ...]], values, size: int = 500_000) -> None:
    """Keep ``keys``' priors (the cache starts over past ``size`` keys)."""
    if len(cache) + len(keys) > size:
        cache.clear()
    cache.update(zip(keys, values))
