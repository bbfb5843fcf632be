"""The unified prompted generative retriever (UGR over SEAL).

A language model, steered by a task prompt, decodes body n-grams and titles under FM-index constraints
(``_decoding``); units are scored from the n-grams they contain (``_seal_scoring``); the prompt's
granularity decides whether pages, passages (units) or sentences come back.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from indexing import ConfigError, Index, StoredUnit
from indexing._units import sentence_spans

from ._decoding import Key, constrained_beam_search
from ._prompts import DEFAULT_PROMPTS, Granularity, PromptSpec, prompt_text, resolve_prompt
from ._seal_scoring import ScoringConfig, first_stage, key_weight, score_tokens
from ._types import Hit, Provenance, Retriever


class GenerativeConfig(BaseModel):
    """Generative retriever settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = Field(None, description="LM name/path; default: the checkpoint, else the index tokenizer's")
    checkpoint: str | None = Field(None, description="a directory written by `genret train retriever`")
    device: str = "auto"
    beam: int = Field(10, ge=1)
    max_len: int = Field(10, ge=1, description="longest body n-gram, in tokens")
    title_max_len: int = Field(32, ge=1, description="longest title, in tokens (titles count once complete)")
    decode_titles: bool = True
    partial_titles: bool = Field(False, description="also use title prefixes (not only complete titles) as keys")
    batch_size: int = Field(8, ge=1)
    task: str = "generic"
    prompts: dict[str, PromptSpec] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    constrained: bool = True


class GenerativeRetriever(Retriever):
    """SEAL-style retrieval with a prompted LM over the index's ``fm`` component."""

    name = "generative"

    def __init__(self, index: Index, config: GenerativeConfig | None = None, lm=None, *,
                 prompt_vectors: dict | None = None, prompts: dict[str, PromptSpec] | None = None) -> None:
        """``lm``, ``prompt_vectors`` and ``prompts`` override what the config would load (used in training)."""
        from indexing._fm_build import load_fm

        from ._lm import load_lm
        from ._train_io import load_prompt_vectors
        from ._unit_encoder import UnitEncoder

        self.config = config = config or GenerativeConfig()
        self.index = index
        comp = index.component("fm")
        self.fm = load_fm(index.path, comp)
        self.encoder = UnitEncoder.from_component(index.path, comp)
        spec = config.model or config.checkpoint or comp.params["tokenizer"]
        self.lm = lm or load_lm(spec, config.device)
        _check_vocab(self.lm.tokenizer, self.encoder.tokenizer, spec)
        self.prompt_vectors = load_prompt_vectors(config.checkpoint) if config.checkpoint else {}
        self.prompts = {**DEFAULT_PROMPTS, **config.prompts}
        if config.checkpoint:
            self.prompts.update(_checkpoint_prompts(config.checkpoint))
        if prompt_vectors is not None:
            self.prompt_vectors = dict(prompt_vectors)
        if prompts is not None:
            self.prompts.update(prompts)
        self._lock = threading.Lock()

    # ---- decoding ------------------------------------------------------------------------------------------
    def _prefix(self, task: str, spec: PromptSpec):
        if spec.kind == "discrete":
            return None
        if task not in self.prompt_vectors:
            raise ConfigError(f"task {task!r} has a {spec.kind} prompt but no trained prompt vectors "
                              "(train them with `genret train retriever`)")
        return self.prompt_vectors[task]

    def decode_keys(self, queries: Sequence[str], task: str | None = None,
                    granularity: Granularity | None = None) -> tuple[str, list[list[Key]]]:
        """The keys (body n-grams and titles) decoded for each query: ``(task used, keys per query)``;
        ``granularity`` overrides the task prompt's (``entity`` decodes titles only)."""
        task, spec = resolve_prompt(task or self.config.task, self.prompts)
        if granularity is not None:
            spec = spec.model_copy(update={"granularity": granularity})
        cfg, tok = self.config, self.lm.tokenizer
        prefix = self._prefix(task, spec)
        keys: list[list[Key]] = [[] for _ in queries]
        with self._lock:
            if spec.granularity != "entity":  # pages are ranked from body n-grams and titles together
                prompts = [tok(prompt_text(spec, q, "body"))["input_ids"] for q in queries]
                markers = (self.encoder.title_start, self.encoder.title_end)
                for i, ks in enumerate(constrained_beam_search(self.lm, self.fm, prompts, beam=cfg.beam,
                                                               max_len=cfg.max_len, prefix_embeds=prefix,
                                                               constrained=cfg.constrained, banned=markers)):
                    keys[i].extend(ks)
            if cfg.decode_titles or spec.granularity in ("page", "entity"):
                prompts = [tok(prompt_text(spec, q, "title"))["input_ids"] for q in queries]
                marks = self.encoder.title_start, self.encoder.title_end
                for i, ks in enumerate(constrained_beam_search(
                        self.lm, self.fm, prompts, beam=cfg.beam, max_len=cfg.title_max_len,
                        force_prefix=[marks[0]], stop_token=marks[1], prefix_embeds=prefix,
                        constrained=cfg.constrained)):
                    # as in SEAL, a title identifies a page only once complete (ends with the title marker)
                    keys[i].extend(k for k in ks if cfg.partial_titles or k.tokens[-1] == marks[1])
        return task, keys

    # ---- scoring -------------------------------------------------------------------------------------------
    def weights(self, keys: list[Key]) -> tuple[dict[tuple[int, ...], float], dict[tuple[int, ...], int]]:
        """SEAL weight and corpus count of each key.

        Keys absent from the corpus get weight 0; keys with no letter or digit (a lone space or punctuation
        token) are dropped.  When no key beats its corpus frequency (tiny corpora, heavy smoothing), keys are
        weighted by P(n|q) alone, so a query still ranks the units that hold its likeliest keys.
        """
        best: dict[tuple[int, ...], float] = {}
        for k in keys:
            if k.tokens and best.get(k.tokens, float("-inf")) < k.logprob:
                best[k.tokens] = k.logprob
        best = {n: lp for n, lp in best.items() if _has_word(self.encoder.describe(n).removeprefix("title: "))}
        counts = {n: self.fm.count(n) for n in best}
        cfg = self.config.scoring
        weights = {n: key_weight(lp, counts[n], self.fm.n_tokens, cfg) for n, lp in best.items()}
        if not any(w > 0 for w in weights.values()):
            weights = {n: math.exp(lp) if counts[n] else 0.0 for n, lp in best.items()}
        return weights, counts

    def rank_units(self, keys: list[Key], limit: int) -> list[tuple[int, float, list]]:
        """``(unit id, score, matched keys)`` for the best ``limit`` units, best first."""
        return [(u.unit_id, s, m) for u, s, m in self._score_units(*self.weights(keys), limit)]

    def _score_units(self, weights: dict[tuple[int, ...], float], counts: dict[tuple[int, ...], int],
                     limit: int) -> list[tuple[StoredUnit, float, list]]:
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
        token_lists = self.encoder.encode([(u.title, u.text) for u in units])
        scored = []
        for u, toks in zip(units, token_lists):
            s, matched = score_tokens(toks, weights, cfg.beta)
            if s > 0:
                scored.append((u, s, matched))
        scored.sort(key=lambda x: (-x[1], x[0].unit_id))
        return scored[:limit]

    def explain(self, matched: list) -> tuple[tuple[str, float], ...]:
        return tuple((self.encoder.describe(n), round(float(s), 4)) for n, s in matched)

    # ---- the Retriever contract ---------------------------------------------------------------------------
    def batch_search(self, queries: Sequence[str], k: int = 10, *, task: str | None = None,
                     granularity: Granularity | None = None) -> list[list[Hit]]:
        """Hits for each query; ``granularity`` (page, passage, sentence, entity) overrides the one the task
        prompt selects."""
        if k < 1:
            raise ValueError("k must be at least 1")
        out: list[list[Hit]] = []
        size = self.config.batch_size
        for start in range(0, len(queries), size):
            chunk = list(queries[start:start + size])
            task_used, keys = self.decode_keys(chunk, task, granularity)
            used = granularity or resolve_prompt(task_used, self.prompts)[1].granularity
            for ks in keys:
                out.append(self._hits(ks, k, used))
        return out

    def _hits(self, keys: list[Key], k: int, granularity: str) -> list[Hit]:
        if granularity in ("page", "entity"):
            seen, pages = set(), []
            for u, s, matched in self._score_units(*self.weights(keys), max(k * 10, 50)):
                if u.page_id not in seen:
                    seen.add(u.page_id)
                    pages.append((u, s, matched))
            return [Hit(u.unit_id, s, r, Provenance.of(u), u.text, self.explain(m))
                    for r, (u, s, m) in enumerate(pages[:k], start=1)]
        if granularity == "sentence":
            return self._sentence_hits(keys, k)
        return [Hit(u.unit_id, s, r, Provenance.of(u), u.text, self.explain(m))
                for r, (u, s, m) in enumerate(self._score_units(*self.weights(keys), k), start=1)]

    def _sentence_hits(self, keys: list[Key], k: int) -> list[Hit]:
        weights, counts = self.weights(keys)
        pieces: list[tuple[StoredUnit, int, int]] = []
        for u, _, _ in self._score_units(weights, counts, max(3 * k, 10)):
            spans = sentence_spans(u.text) if u.start_paragraph == u.end_paragraph else [(0, len(u.text))]
            pieces.extend((u, s, e) for s, e in spans)
        token_lists = self.encoder.encode([(u.title, u.text[s:e]) for u, s, e in pieces])
        scored = []
        for (u, s, e), toks in zip(pieces, token_lists):
            score, matched = score_tokens(toks, weights, self.config.scoring.beta)
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


def _checkpoint_prompts(checkpoint: str) -> dict[str, PromptSpec]:
    import json

    path = Path(checkpoint) / "prompts.json"
    if not path.is_file():
        return {}
    return {name: PromptSpec.model_validate(p) for name, p in json.loads(path.read_text()).items()}
