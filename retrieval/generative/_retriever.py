"""The unified prompted generative retriever (UGR over SEAL).

A language model, steered by a task prompt, decodes body n-grams and titles under FM-index constraints and
scores the query's own n-grams (``_evidence``: SEAL's whole inference); units are scored from the keys they
contain (``_seal_scoring``); the prompt's granularity decides whether pages, passages (units) or sentences
come back.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genret.core import ConfigError, model_load_lock
from genret.indexing import FMParams, Index, StoredUnit, sentence_spans
from genret.indexing.fm import FMQueries

from .._contract import Hit, Provenance, Retriever
from ._decoding import Key
from ._evidence import Evidence, EvidenceGatherer, EvidenceSettings
from ._keys import has_content
from ._prompts import DEFAULT_PROMPTS, Granularity, PromptSpec, resolve_prompt
from ._seal_scoring import KeyMatcher, ScoringConfig, first_stage, key_weight, key_weights


class GenerativeConfig(BaseModel):
    """Generative retriever settings: SEAL's inference (``SEALSearcher`` defaults where SEAL has the setting)
    and the levers that make a small zero-shot model useful (copy prior, calibration, stopword keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = Field(None, description="LM name/path; default: the checkpoint, else the index tokenizer's")
    checkpoint: str | None = Field(None, description="a directory written by `genret train retriever`")
    device: str = "auto"
    dtype: str = Field("auto", description="what the LM computes in: auto (bfloat16 where native, else "
                       "float32), float32, bfloat16, float16, int8")
    beam: int = Field(15, ge=1, description="beam size (SEAL: 15)")
    max_len: int = Field(10, ge=1, description="longest body n-gram, in tokens (SEAL: 10)")
    title_max_len: int = Field(32, ge=1, description="longest title, in tokens (titles count once complete)")
    decode_body: bool | None = Field(None, description="decode body n-grams (SEAL: decode_body, on); None: on "
                                     "with a trained checkpoint, off for an untrained model (docs/src/results.md: "
                                     "zero-shot, its decoded keys add nothing to the query keys and cost 2-3x the "
                                     "time)")
    decode_titles: bool | None = Field(None, description="decode complete titles (SEAL: decode_titles, on); None: "
                                       "as decode_body (entity granularity always decodes titles)")
    partial_titles: bool = Field(False, description="also use title prefixes (not only complete titles) as keys")
    query_keys: bool = Field(True, description="add the query's word n-grams found in the index as keys, scored "
                             "by teacher forcing (SEAL: add_query_to_keys)")
    query_key_words: int = Field(3, ge=1, description="longest query n-gram, in words (SEAL: 3)")
    rescore: bool = Field(True, description="score every key by teacher forcing (SEAL: rescore); off: decoding's "
                          "scores")
    unigram_scores: bool = Field(True, description="SEAL's unigram scores from the first decoding step")
    top_unigrams: int = Field(5000, ge=0, description="unigrams considered (SEAL: use_top_k_ngrams)")
    add_best_unigrams: bool = Field(True, description="the best unigrams also propose candidates (SEAL: "
                                    "add_best_unigrams_to_ngrams)")
    max_keys: int | None = Field(None, ge=1, description="keep only the best N keys by weight (None: all)")
    copy_bonus: float = Field(0.0, ge=0, description="log-probability bonus for the query's content tokens while "
                              "decoding (steers the beam only; keys keep the model's own scores)")
    drop_stopword_keys: bool = Field(True, description="drop body keys made only of stopwords or punctuation")
    batch_size: int = Field(8, ge=1)
    task: str = "generic"
    granularity: Granularity | None = Field(None, description="override the task prompt's granularity (page, "
                                            "passage, sentence, entity)")
    prompts: dict[str, PromptSpec] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    constrained: bool = True


class GenerativeRetriever(Retriever):
    """SEAL-style retrieval with a prompted LM over the index's ``fm`` component."""

    name = "generative"
    granularities = get_args(Granularity)

    def __init__(self, index: Index, config: GenerativeConfig | None = None, lm=None, *,
                 prompt_vectors: dict | None = None, prompts: dict[str, PromptSpec] | None = None,
                 fm: FMQueries | None = None) -> None:
        """``lm``, ``prompt_vectors`` and ``prompts`` override what the config would load (used in training);
        ``fm``, the index's FM-index (e.g. its shards on a Ray cluster: ``load_ray_retriever``)."""
        from genret.indexing.fm import load_fm

        from .._lm import load_lm
        from ._checkpoint import load_prompt_vectors
        from ._unit_tokens import UnitEncoder

        self.config = config = config or GenerativeConfig()
        self.index = index
        comp = index.component("fm")
        self.fm = fm if fm is not None else load_fm(index.path, comp)
        with model_load_lock():  # the index's tokenizer (transformers): one model load at a time (genret.core)
            self.encoder = UnitEncoder.from_component(index.path, comp)
        spec = config.model or config.checkpoint or comp.typed_params(FMParams).tokenizer
        own = lm is None and config.model is None and config.checkpoint is None  # the index's own tokenizer's LM
        self.lm = lm or load_lm(spec, config.device, config.dtype, role="generative LM",
                                tokenizer=self.encoder.tokenizer if own else None, lite=True)
        if not own:
            _check_vocab(self.lm.tokenizer, self.encoder.tokenizer, spec)
        self.prompt_vectors = load_prompt_vectors(config.checkpoint) if config.checkpoint else {}
        self.prompts = {**DEFAULT_PROMPTS, **config.prompts}
        if config.checkpoint:
            self.prompts.update(checkpoint_prompts(config.checkpoint))
        if prompt_vectors is not None:
            self.prompt_vectors = dict(prompt_vectors)
        if prompts is not None:
            self.prompts.update(prompts)
        self._lock = threading.Lock()
        self.gatherer = EvidenceGatherer(self.lm, self.fm, self.encoder)
        self._unigram_counts: np.ndarray | None = None
        self._word_tokens: dict[int, bool] = {}
        self._tokens: dict[int, list[int]] = {}  # unit id -> its tokens in the index's layout (bounded cache)
        self._tokens_lock = threading.Lock()

    @property
    def settings(self) -> EvidenceSettings:
        c = self.config
        trained = c.checkpoint is not None
        return EvidenceSettings(beam=c.beam, max_len=c.max_len, title_max_len=c.title_max_len,
                                decode_body=trained if c.decode_body is None else c.decode_body,
                                decode_titles=trained if c.decode_titles is None else c.decode_titles,
                                partial_titles=c.partial_titles, constrained=c.constrained, query_keys=c.query_keys,
                                query_key_words=c.query_key_words, rescore=c.rescore,
                                unigrams=c.unigram_scores and c.top_unigrams > 0,
                                calibrate=c.scoring.calibration > 0, copy_bonus=c.copy_bonus,
                                drop_stopword_keys=c.drop_stopword_keys)

    def unigram_counts(self) -> np.ndarray:
        """Corpus count of every token id (one pass over the index's root, cached)."""
        if self._unigram_counts is None:
            ids, counts = self.fm.next_tokens_of_range(self.fm.root())
            arr = np.zeros(max(self.fm.vocab_size, len(self.lm.tokenizer)), dtype=np.int64)
            arr[np.asarray(ids, dtype=np.int64)] = np.asarray(counts, dtype=np.int64)
            self._unigram_counts = arr
        return self._unigram_counts

    # ---- decoding ------------------------------------------------------------------------------------------
    def _prefix(self, task: str, spec: PromptSpec):
        if spec.kind == "discrete":
            return None
        if task not in self.prompt_vectors:
            raise ConfigError(f"task {task!r} has a {spec.kind} prompt but no trained prompt vectors "
                              "(train them with `genret train retriever`)")
        return self.prompt_vectors[task]

    def evidence(self, queries: Sequence[str], task: str | None = None,
                 granularity: Granularity | None = None) -> tuple[str, str, list[Evidence]]:
        """``(task used, granularity used, Evidence per query)``: what the model says about each query (see
        ``_evidence``); ``granularity`` overrides the task prompt's (``entity`` decodes titles only)."""
        task, spec = resolve_prompt(task or self.config.task, self.prompts)
        granularity = granularity or self.config.granularity
        if granularity is not None:
            spec = spec.model_copy(update={"granularity": granularity})
        prefix = self._prefix(task, spec)
        with self._lock:
            ev = self.gatherer.gather(list(queries), task, spec, self.settings, prefix, spec.granularity)
        return task, spec.granularity, ev

    def decode_keys(self, queries: Sequence[str], task: str | None = None,
                    granularity: Granularity | None = None) -> tuple[str, list[list[Key]]]:
        """The keys (body n-grams, titles, query keys) for each query, best first: ``(task used, keys)``."""
        task, _, ev = self.evidence(queries, task, granularity)
        return task, [e.keys for e in ev]

    # ---- scoring -------------------------------------------------------------------------------------------
    def weights(self, keys: list[Key] | Evidence) -> tuple[dict[tuple[int, ...], float], dict[tuple[int, ...], int],
                                                            dict[int, float]]:
        """SEAL weight and corpus count of each key, and the unigram weights.

        Keys absent from the corpus get weight 0; keys with no letter or digit (a lone space or punctuation
        token) are dropped.  When no key beats its corpus frequency (tiny corpora, heavy smoothing), keys are
        weighted by P(n|q) alone, so a query still ranks the units that hold its likeliest keys.
        """
        ev = keys if isinstance(keys, Evidence) else Evidence(list(keys))
        best: dict[tuple[int, ...], float] = {}
        for k in ev.keys:
            if k.tokens and best.get(k.tokens, float("-inf")) < k.logprob:
                best[k.tokens] = k.logprob
        best = {n: lp for n, lp in best.items() if _has_word(self.encoder.describe(n).removeprefix("title: "))}
        counts = {n: self.fm.count(n) for n in best}
        cfg, total = self.config.scoring, self.fm.n_tokens
        weights = {n: key_weight(lp, counts[n], total, cfg, ev.priors.get(n)) for n, lp in best.items()}
        if not any(w > 0 for w in weights.values()):
            weights = {n: math.exp(lp) if counts[n] else 0.0 for n, lp in best.items()}
        if self.config.max_keys is not None:
            keep = set(sorted(weights, key=lambda n: -weights[n])[: self.config.max_keys])
            weights = {n: w for n, w in weights.items() if n in keep}
        unigrams = self._unigram_weights(ev, weights, counts)
        return weights, counts, unigrams

    def _unigram_weights(self, ev: Evidence, weights: dict, counts: dict) -> dict[int, float]:
        """SEAL's unigram scores for the best ``top_unigrams`` tokens of the first decoding step; tokens that are
        one-token keys already, markers and stopword-only tokens get none.  With ``add_best_unigrams`` the best
        of them (as many as there are keys) also join ``weights``/``counts`` as one-token keys."""
        cfg = self.config
        if ev.unigram is None or not cfg.unigram_scores or cfg.top_unigrams <= 0:
            return {}
        lp = ev.unigram
        uc = self.unigram_counts()
        n = min(len(lp), len(uc))
        top = np.argpartition(-lp[:n], min(cfg.top_unigrams, n - 1))[: cfg.top_unigrams]
        top = top[uc[top] > 0]
        skip = {n[0] for n in weights if len(n) == 1} | {self.encoder.title_start, self.encoder.title_end}
        prior = ev.unigram_prior[top] if ev.unigram_prior is not None else None
        w = key_weights(lp[top], uc[top], self.fm.n_tokens, cfg.scoring, prior, exponent=1.0)
        out = {}
        for t, wt in zip(top[w > 0].tolist(), w[w > 0].tolist()):
            if t not in skip and self._word_token(t):
                out[t] = wt
        if cfg.add_best_unigrams and out:
            n_add = max(1, sum(1 for w in weights.values() if w > 0))
            for t in sorted(out, key=lambda t: -out[t])[:n_add]:
                weights.setdefault((t,), out[t])
                counts.setdefault((t,), int(uc[t]))
        return out

    def _word_token(self, t: int) -> bool:
        """Whether token ``t`` holds a word that is not a stopword (cached per token)."""
        hit = self._word_tokens.get(t)
        if hit is None:
            hit = self._word_tokens[t] = has_content(self.encoder.tokenizer.decode([t]))
        return hit

    def rank_units(self, keys: list[Key] | Evidence, limit: int) -> list[tuple[int, float, list]]:
        """``(unit id, score, matched keys)`` for the best ``limit`` units, best first."""
        return [(u.unit_id, s, m) for u, s, m in self._score_units(*self.weights(keys), limit)]

    def _score_units(self, weights: dict[tuple[int, ...], float], counts: dict[tuple[int, ...], int],
                     unigrams: dict[int, float], limit: int) -> list[tuple[StoredUnit, float, list]]:
        """The best ``limit`` units (as read from the store) with their scores and matched keys."""
        cfg = self.config.scoring
        live = [n for n, w in weights.items() if w > 0]
        rare = [n for n in live if counts[n] <= cfg.max_occurrences] or \
            sorted(live, key=lambda n: counts[n])[:5]
        doc_keys: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        ranges = [self.fm.range_of(n) for n in rare]
        for n, docs in zip(rare, self.fm.doc_counts_ranges(ranges, cfg.max_occurrences)):
            for d in docs:
                doc_keys[d].append(n)
        candidates = first_stage(doc_keys, weights, cfg.beta, max(cfg.n_full, limit))
        units = self.index.store.get(candidates)
        token_lists = self._unit_tokens(units)
        scored = []
        matcher = KeyMatcher(weights)
        for u, toks in zip(units, token_lists):
            s, matched = matcher.score(toks, cfg.beta, unigrams)
            if s > 0:
                scored.append((u, s, matched))
        scored.sort(key=lambda x: (-x[1], x[0].unit_id))
        return scored[:limit]

    def _unit_tokens(self, units: list[StoredUnit], cache_size: int = 50_000) -> list[list[int]]:
        """Units' token ids as the FM-index holds them; the encodings are cached (candidates recur across queries)."""
        with self._tokens_lock:
            got = {u.unit_id: self._tokens.get(u.unit_id) for u in units}
        todo = [u for u in units if got[u.unit_id] is None]
        if todo:
            fresh = dict(zip((u.unit_id for u in todo), self.encoder.encode([(u.title, u.text) for u in todo])))
            got.update(fresh)
            with self._tokens_lock:
                if len(self._tokens) + len(fresh) > cache_size:
                    self._tokens.clear()
                self._tokens.update(fresh)
        return [got[u.unit_id] for u in units]

    def explain(self, matched: list) -> tuple[tuple[str, float], ...]:
        return tuple((self.encoder.describe(n), round(float(s), 4)) for n, s in matched)

    # ---- the Retriever contract ---------------------------------------------------------------------------
    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: Granularity | None = None) -> list[list[Hit]]:
        """Hits for each query; ``granularity`` (page, passage, sentence, entity) overrides the one the task
        prompt selects."""
        self.check_search(k, granularity)
        out: list[list[Hit]] = []
        size = self.config.batch_size
        for start in range(0, len(queries), size):
            chunk = list(queries[start:start + size])
            _, used, evidence = self.evidence(chunk, task, granularity)
            for ev in evidence:
                out.append(self._hits(ev, k, used))
        return out

    def _hits(self, ev: Evidence, k: int, granularity: str) -> list[Hit]:
        if granularity in ("page", "entity"):
            seen, pages = set(), []
            for u, s, matched in self._score_units(*self.weights(ev), max(k * 10, 50)):
                if u.page_id not in seen:
                    seen.add(u.page_id)
                    pages.append((u, s, matched))
            return [Hit(u.unit_id, s, r, Provenance.of(u), u.text, self.explain(m))
                    for r, (u, s, m) in enumerate(pages[:k], start=1)]
        if granularity == "sentence":
            return self._sentence_hits(ev, k)
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text, self.explain(m))
                for r, (u, s, m) in enumerate(self._score_units(*self.weights(ev), k), start=1)]

    def _sentence_hits(self, ev: Evidence, k: int) -> list[Hit]:
        weights, counts, unigrams = self.weights(ev)
        pieces: list[tuple[StoredUnit, int, int]] = []
        for u, _, _ in self._score_units(weights, counts, unigrams, max(3 * k, 10)):
            spans = sentence_spans(u.text) if u.start_paragraph == u.end_paragraph else [(0, len(u.text))]
            pieces.extend((u, s, e) for s, e in spans)
        token_lists = self.encoder.encode([(u.title, u.text[s:e]) for u, s, e in pieces])
        scored = []
        matcher = KeyMatcher(weights)
        for (u, s, e), toks in zip(pieces, token_lists):
            score, matched = matcher.score(toks, self.config.scoring.beta, unigrams)
            if score > 0:
                scored.append((score, u.unit_id, s, u, e, matched))
        scored.sort(key=lambda x: (-x[0], x[1], x[2]))
        hits = []
        for r, (score, _, s, u, e, matched) in enumerate(scored[:k], start=1):
            if u.start_paragraph == u.end_paragraph:
                prov = Provenance(u.page_id, u.title, u.start_paragraph, u.end_paragraph, u.start_char + s,
                                  u.start_char + e)
            else:
                prov = Provenance.of(u)
            hits.append(Hit(u.unit_id, score, r, prov, u.text[s:e], self.explain(matched)))
        return hits


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _check_vocab(lm_tok, fm_tok, spec: str) -> None:
    a, b = lm_tok.get_vocab(), fm_tok.get_vocab()
    if a != b:
        raise ConfigError(f"the language model {spec!r} has another tokenizer than the index's FM-index "
                          f"({len(a)} vs {len(b)} tokens): rebuild the index with `--fm-tokenizer {spec}`")


def checkpoint_prompts(checkpoint: str | Path) -> dict[str, PromptSpec]:
    """The task prompts saved with a ``genret train retriever`` checkpoint (empty when it has none)."""
    import json

    from ._checkpoint import PROMPTS_FILE

    path = Path(checkpoint) / PROMPTS_FILE
    if not path.is_file():
        return {}
    return {name: PromptSpec.model_validate(p) for name, p in json.loads(path.read_text()).items()}
