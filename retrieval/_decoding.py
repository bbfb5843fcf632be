"""Constrained beam search over an FM-index: every generated n-gram occurs in the corpus.

At each step the index lists the distinct tokens that follow each beam's n-gram (``next_tokens`` of
the beam's suffix-array range); only those are scored, with the model's (unconstrained) log-softmax,
so a beam's score is log P(n-gram | prompt).  Every partial n-gram a beam passes through is kept as a
key (SEAL keeps all of them).  Queries are decoded together: the prompts run as one batch and the
beams of all queries share one batch and one KV cache per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Key:
    """A decoded n-gram (token ids) and its log-probability given the prompt."""

    tokens: tuple[int, ...]
    logprob: float


class _Stepper:
    """Runs a model one token at a time over a flat batch of rows (beams), with a KV cache.

    ``start`` encodes the prompts and returns next-token log-probabilities (rows = prompts);
    ``step(parents, tokens)`` makes row i continue row ``parents[i]`` with ``tokens[i]`` and returns the
    new log-probabilities.
    """

    def __init__(self, lm, prefix_embeds=None) -> None:
        import torch

        self.torch = torch
        self.lm = lm
        self.model = lm.model
        self.device = lm.device
        self.prefix = prefix_embeds  # (n_vectors, hidden) learned prompt vectors, or None

    def _embed(self, ids_list: list[list[int]], embed_layer, pad_id: int):
        """Left-padded input embeddings (with the prompt vectors in front) and the attention mask."""
        torch = self.torch
        n_pre = 0 if self.prefix is None else self.prefix.shape[0]
        width = max(len(x) for x in ids_list) + n_pre
        ids = torch.full((len(ids_list), width - n_pre), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for i, x in enumerate(ids_list):
            if x:
                ids[i, width - n_pre - len(x):] = torch.tensor(x)
            mask[i, width - len(x) - n_pre:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        emb = embed_layer(ids)
        if n_pre:
            pre = self.prefix.to(self.device, emb.dtype).unsqueeze(0).expand(len(ids_list), -1, -1)
            # the prompt vectors sit right before the first real token of each row
            full = torch.zeros((len(ids_list), width, emb.shape[-1]), dtype=emb.dtype, device=self.device)
            for i, x in enumerate(ids_list):
                start = width - len(x) - n_pre
                full[i, start:start + n_pre] = pre[i]
                full[i, start + n_pre:] = emb[i, width - n_pre - len(x):]
            emb = full
        return emb, mask

    def start(self, prompts: list[list[int]]):
        torch = self.torch
        pad = self.lm.tokenizer.pad_token_id
        with torch.inference_mode():
            if self.lm.seq2seq:
                emb, mask = self._embed(prompts, self.model.get_input_embeddings(), pad)
                self.enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask)
                self.enc_mask = mask
                start_id = self.model.config.decoder_start_token_id
                dec = torch.full((len(prompts), 1), start_id, dtype=torch.long, device=self.device)
                out = self.model(encoder_outputs=self.enc, attention_mask=mask, decoder_input_ids=dec,
                                 use_cache=True)
            else:
                emb, mask = self._embed(prompts, self.model.get_input_embeddings(), pad)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                out = self.model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True)
                self.mask = mask
            self.cache = out.past_key_values
            return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    def step(self, parents: Sequence[int], tokens: Sequence[int]):
        torch = self.torch
        idx = torch.tensor(list(parents), dtype=torch.long, device=self.device)
        tok = torch.tensor(list(tokens), dtype=torch.long, device=self.device).unsqueeze(-1)
        with torch.inference_mode():
            self.cache.reorder_cache(idx)
            if self.lm.seq2seq:
                self.enc_mask = self.enc_mask.index_select(0, idx)
                hidden = self.enc.last_hidden_state.index_select(0, idx)
                self.enc = type(self.enc)(last_hidden_state=hidden)
                out = self.model(encoder_outputs=self.enc, attention_mask=self.enc_mask, decoder_input_ids=tok,
                                 past_key_values=self.cache, use_cache=True)
            else:
                self.mask = torch.cat([self.mask.index_select(0, idx), torch.ones_like(tok)], dim=-1)
                pos = self.mask.sum(-1, keepdim=True) - 1
                out = self.model(input_ids=tok, attention_mask=self.mask, position_ids=pos,
                                 past_key_values=self.cache, use_cache=True)
            self.cache = out.past_key_values
            return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


@dataclass
class _Beam:
    query: int
    tokens: tuple[int, ...]
    rng: tuple[int, int]
    score: float
    parent_row: int = -1
    done: bool = False


def constrained_beam_search(lm, fm, prompts: list[list[int]], *, beam: int = 10, max_len: int = 10,
                            force_prefix: Sequence[int] = (), stop_token: int | None = None,
                            prefix_embeds=None, constrained: bool = True,
                            banned: Sequence[int] = ()) -> list[list[Key]]:
    """Decode n-grams for each prompt; returns, per prompt, every key met (best log-prob per n-gram).

    ``force_prefix`` tokens are fed first (e.g. the title-start marker; they are part of the keys);
    a beam that emits ``stop_token`` is finished (a complete title).  With ``constrained=False`` the
    index is ignored (for measuring the cost of the constraints): plain top-k beam search.  ``banned``
    tokens are never generated (e.g. the title markers while decoding body n-grams).
    """
    banned_arr = np.asarray(sorted(set(banned)), dtype=np.int64)
    n_q = len(prompts)
    stepper = _Stepper(lm, prefix_embeds)
    logprobs = stepper.start([list(p) + list(force_prefix) for p in prompts])
    base_rng = fm.range_of(list(force_prefix)) if constrained else (0, 0)
    beams = [_Beam(q, tuple(force_prefix), base_rng, 0.0) for q in range(n_q)]
    keys: list[dict[tuple[int, ...], float]] = [{} for _ in range(n_q)]
    for step in range(max_len):
        lp = logprobs.cpu().numpy()
        cands: list[list[tuple[float, int, int]]] = [[] for _ in range(n_q)]  # (score, row, token)
        for row, b in enumerate(beams):
            if constrained:
                ids, _counts = fm.next_tokens_of_range(b.rng)
                ids = np.asarray(ids, dtype=np.int64)
                ids = ids[ids < lp.shape[1]]
                if len(banned_arr):
                    ids = ids[~np.isin(ids, banned_arr)]
                if len(ids) == 0:
                    continue
                scores = lp[row, ids]
                top = np.argsort(-scores, kind="stable")[:beam]
                cands[b.query].extend((b.score + float(scores[i]), row, int(ids[i])) for i in top)
            else:
                if len(banned_arr):
                    lp[row, banned_arr] = -np.inf
                top = np.argpartition(-lp[row], beam)[:beam]
                cands[b.query].extend((b.score + float(lp[row, t]), row, int(t)) for t in top)
        new_beams: list[_Beam] = []
        for q in range(n_q):
            for score, row, tok in sorted(cands[q], key=lambda c: (-c[0], c[1], c[2]))[:beam]:
                parent = beams[row]
                tokens = parent.tokens + (tok,)
                if keys[q].get(tokens, -np.inf) < score:
                    keys[q][tokens] = score
                if stop_token is not None and tok == stop_token:
                    continue  # a finished title: kept as a key, not extended
                rng = fm.extend(parent.rng, tok) if constrained else (0, 0)
                new_beams.append(_Beam(q, tokens, rng, score, row))
        if not new_beams or step == max_len - 1:
            break
        logprobs = stepper.step([b.parent_row for b in new_beams], [b.tokens[-1] for b in new_beams])
        beams = new_beams
    return [[Key(t, s) for t, s in sorted(k.items(), key=lambda kv: -kv[1])] for k in keys]
