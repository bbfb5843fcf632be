"""One prompt pass, then cheap continuations: the KV-cache machinery behind decoding and key scoring.

``Stepper.start`` runs a batch of prompts once (left-padded, learned prompt vectors in front) and keeps the
KV cache.  From there:

- ``step(parents, tokens)`` extends rows one token at a time (beam search);
- ``fork(rows)`` copies the prompt state for the given prompt rows (a row may repeat), so that several
  continuations share one prompt pass;
- ``teacher_force(rows, sequences)`` returns log P(sequence | prompt of its row), summed over its tokens,
  for many sequences at once, all reading the prompt's cache instead of re-encoding the prompt.

Causal models (Llama-class) and encoder-decoder models (T5/BART: the prompt is the encoder input) are both
handled; log-probabilities are the model's unconstrained log-softmax.

The KV cache is transformers' ``Cache`` API: the stepper makes the ``DynamicCache`` (``EncoderDecoderCache`` for
seq2seq) the model would make itself, hands it over by the keyword the model's ``forward`` takes (``cache``;
``past_key_values`` on older transformers, where ``cache`` does not exist yet), and the model fills it in place —
nothing reads the deprecated ``past_key_values`` names of newer versions.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Sequence

import numpy as np

from ._prefix_tree import PrefixTree, child_logprobs, running_sums


@functools.cache
def _cache_keyword(forward_owner: type) -> str:
    """The keyword ``forward_owner.forward`` takes a KV cache by: ``cache`` (current transformers) or
    ``past_key_values`` (older ones)."""
    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


@functools.cache
def _last_logits_kwargs(forward_owner: type) -> tuple[tuple[str, int], ...]:
    """``logits_to_keep=1`` where ``forward_owner.forward`` takes it (the output layer at the last position only:
    a prompt pass needs no other logits, and the output layer is ~20 % of a small LM's work a token)."""
    return (("logits_to_keep", 1),) if "logits_to_keep" in inspect.signature(forward_owner.forward).parameters \
        else ()


def new_cache(model, seq2seq: bool):
    """An empty KV cache of the kind ``model`` makes itself when asked to cache: ``DynamicCache`` (causal) or
    ``EncoderDecoderCache`` over two of them (seq2seq: self-attention, cross-attention); the plain-torch Llama's
    own (``new_cache``)."""
    if hasattr(model, "new_cache"):
        return model.new_cache()
    from transformers import DynamicCache, EncoderDecoderCache

    def dynamic():
        try:
            return DynamicCache(config=model.config)
        except TypeError:  # older transformers: DynamicCache() takes no config
            return DynamicCache()

    return EncoderDecoderCache(dynamic(), dynamic()) if seq2seq else dynamic()


def cache_kwargs(module, cache_obj) -> dict:
    """``{keyword: cache_obj, "use_cache": True}`` for a call of ``module`` (a model or its base model)."""
    return {_cache_keyword(type(module)): cache_obj, "use_cache": True}


class Stepper:
    """Runs a model over a flat batch of rows with a KV cache (see the module doc)."""

    def __init__(self, lm, prefix_embeds=None) -> None:
        import torch

        self.torch = torch
        self.lm = lm
        self.model = lm.model
        self.device = lm.device
        self.prefix = prefix_embeds  # (n_vectors, hidden) learned prompt vectors, or None
        self.cache = None
        self.mask = None  # causal: attention mask over prompt + generated tokens
        self.enc = None  # seq2seq: encoder outputs
        self.first = None  # next-token log-probs right after each prompt (rows = prompts)

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
        """Encode the prompts; returns next-token log-probabilities (rows = prompts), also kept as ``first``."""
        torch = self.torch
        pad = self.lm.tokenizer.pad_token_id
        with torch.inference_mode():
            emb, mask = self._embed(prompts, self.model.get_input_embeddings(), pad)
            self.cache = new_cache(self.model, self.lm.seq2seq)
            kv = cache_kwargs(self.model, self.cache)
            if self.lm.seq2seq:
                self.enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask)
                self.mask = mask
                start_id = self.model.config.decoder_start_token_id
                dec = torch.full((len(prompts), 1), start_id, dtype=torch.long, device=self.device)
                out = self.model(encoder_outputs=self.enc, attention_mask=mask, decoder_input_ids=dec, **kv)
            else:
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                out = self.model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, **kv,
                                 **dict(_last_logits_kwargs(type(self.model))))
                self.mask = mask
            self.first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            return self.first

    @property
    def plain(self) -> bool:
        """Whether the model is the plain-torch Llama (``_llama``): causal, its cache plain tensors, and it takes
        a 4-D attention mask (a prefix tree's)."""
        return hasattr(self.model, "new_cache") and not self.lm.seq2seq

    def can_stack(self, other: Stepper) -> bool:
        """Whether ``stacked`` can join this stepper's rows with ``other``'s: one plain model, both started."""
        return self.lm is other.lm and self.plain and self.cache is not None and other.cache is not None

    def stacked(self, other: Stepper) -> Stepper:
        """A stepper whose rows are this one's, then ``other``'s (``can_stack``): the shorter side's cache and mask
        left-padded (masked out), so that one pass can teacher-force sequences after prompts of both — a weight
        read costs a small model as much as its tokens do on one CPU thread."""
        torch = self.torch
        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t, n: int, dim: int):
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        out = copy.copy(self)
        out.cache = self.model.new_cache()
        for layer in range(len(self.cache.keys)):
            for name in ("keys", "values"):
                a, b = getattr(self.cache, name)[layer], getattr(other.cache, name)[layer]
                getattr(out.cache, name)[layer] = torch.cat(
                    [pad(a, width - a.shape[2], 2), pad(b, width - b.shape[2], 2)], dim=0)
        out.mask = torch.cat([pad(self.mask, width - self.mask.shape[1], 1),
                              pad(other.mask, width - other.mask.shape[1], 1)], dim=0)
        out.first = torch.cat([self.first, other.first], dim=0)
        return out

    def fork(self, rows: Sequence[int]) -> Stepper:
        """A new stepper whose row i continues prompt ``rows[i]`` (this one is left untouched)."""
        torch = self.torch
        idx = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        other = copy.copy(self)
        other.cache = copy.deepcopy(self.cache)
        other.cache.reorder_cache(idx)
        other.mask = self.mask.index_select(0, idx)
        other.first = self.first.index_select(0, idx)
        if self.lm.seq2seq:
            other.enc = type(self.enc)(last_hidden_state=self.enc.last_hidden_state.index_select(0, idx))
        return other

    def step(self, parents: Sequence[int], tokens: Sequence[int]):
        """Row i continues row ``parents[i]`` with ``tokens[i]``; returns the new next-token log-probs."""
        torch = self.torch
        idx = torch.tensor(list(parents), dtype=torch.long, device=self.device)
        tok = torch.tensor(list(tokens), dtype=torch.long, device=self.device).unsqueeze(-1)
        with torch.inference_mode():
            self.cache.reorder_cache(idx)
            kv = cache_kwargs(self.model, self.cache)  # the model appends this step to the cache, in place
            if self.lm.seq2seq:
                self.mask = self.mask.index_select(0, idx)
                hidden = self.enc.last_hidden_state.index_select(0, idx)
                self.enc = type(self.enc)(last_hidden_state=hidden)
                out = self.model(encoder_outputs=self.enc, attention_mask=self.mask, decoder_input_ids=tok, **kv)
            else:
                self.mask = torch.cat([self.mask.index_select(0, idx), torch.ones_like(tok)], dim=-1)
                pos = self.mask.sum(-1, keepdim=True) - 1
                out = self.model(input_ids=tok, attention_mask=self.mask, position_ids=pos, **kv)
            return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    def extend(self, tokens: Sequence[Sequence[int]]):
        """Row i reads ``tokens[i]`` (all of one length) after what it read so far, in one pass; returns the new
        next-token log-probs (also kept as ``first``).  Causal models only: a prompt read in two parts, so that
        prompts sharing a beginning read it once (``start`` on the shared part, ``fork``, ``extend``)."""
        torch = self.torch
        if self.lm.seq2seq:
            raise ValueError("extend: causal models only (a seq2seq prompt is the encoder's input)")
        ids = torch.tensor([list(t) for t in tokens], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            pos = self.mask.sum(-1, keepdim=True) + torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
            self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=-1)
            out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=pos,
                             **cache_kwargs(self.model, self.cache), **dict(_last_logits_kwargs(type(self.model))))
            self.first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            return self.first

    def teacher_force(self, rows: Sequence[int], sequences: Sequence[Sequence[int]], chunk: int = 64) -> np.ndarray:
        """log P(sequences[i] | prompt ``rows[i]``), summed over the sequence's tokens (needs ``start`` first).

        Every sequence reads its prompt's KV cache (one prompt pass for all of them).  The plain Llama packs
        a prompt's sequences as a prefix tree (``_tree_force``).  Other models run one row per sequence: only
        the maximal sequences of each row are run — a sequence that is a prefix of another one of the same row
        is read off the longer one's running sum, so the partial n-grams a beam passes through cost nothing
        more — in chunks of ``chunk``, right-padded (padding after a sequence cannot change it under causal
        attention), and the output layer is applied only at real positions.
        """
        out = np.zeros(len(sequences), dtype=np.float64)
        if not len(sequences):
            return out
        seqs = [tuple(int(t) for t in x) for x in sequences]
        if self.plain:
            return self._tree_force(rows, seqs, chunk=4 * chunk)
        prefixes = {(r, x[:j]) for r, x in zip(rows, seqs) for j in range(1, len(x))}
        maximal = list(dict.fromkeys((r, x) for r, x in zip(rows, seqs) if x and (r, x) not in prefixes))
        # longest first, so that chunks hold sequences of similar length
        maximal.sort(key=lambda rx: -len(rx[1]))
        running: dict[tuple[int, tuple[int, ...]], float] = {}
        for s in range(0, len(maximal), chunk):
            part = maximal[s:s + chunk]
            for (r, x), cum in zip(part, self._force_chunk([r for r, _ in part], [list(x) for _, x in part])):
                for j in range(1, len(x) + 1):
                    running.setdefault((r, x[:j]), float(cum[j - 1]))
        for i, (r, x) in enumerate(zip(rows, seqs)):
            out[i] = running[(r, x)] if x else 0.0
        return out

    def _tree_force(self, rows: Sequence[int], seqs: list[tuple[int, ...]], chunk: int) -> np.ndarray:
        """``teacher_force`` with each prompt's sequences packed as a prefix tree (``_prefix_tree``): one row
        per prompt, no copy of its cache, each shared prefix computed once; up to ``chunk`` sequences of a
        prompt per pass (sorted, so that a pass holds whole subtrees)."""
        by_row: dict[int, list[tuple[int, ...]]] = {}
        for r, x in zip(rows, seqs):
            if x:
                by_row.setdefault(int(r), []).append(x)
        groups = {r: sorted(set(xs)) for r, xs in by_row.items()}
        sums: dict[tuple[int, tuple[int, ...]], float] = {}
        rounds = max((len(xs) + chunk - 1) // chunk for xs in groups.values()) if groups else 0
        for k in range(rounds):
            part = {r: xs[k * chunk:(k + 1) * chunk] for r, xs in groups.items() if xs[k * chunk:(k + 1) * chunk]}
            for r, xs, cums in self._tree_pass(part):
                for x, cum in zip(xs, cums):
                    sums[(r, x)] = float(cum[-1])
        return np.array([sums[(int(r), x)] if x else 0.0 for r, x in zip(rows, seqs)], dtype=np.float64)

    def _tree_pass(self, part: dict[int, list[tuple[int, ...]]], block: int = 256):
        """One pass over the trees of ``part`` (prompt row -> its sequences); yields ``(row, sequences,
        running sums)``."""
        torch = self.torch
        used = sorted(part)
        trees = [PrefixTree.build(part[r]) for r in used]
        idx = torch.tensor(used, dtype=torch.long, device=self.device)
        first = self.first.index_select(0, idx)
        node_lp = [np.zeros(len(t.tokens)) for t in trees]
        for b, t in enumerate(trees):  # tokens right after the prompt: its own next-token distribution
            roots = np.flatnonzero(t.parent < 0)
            node_lp[b][roots] = first[b, torch.from_numpy(t.tokens[roots])].double().cpu().numpy()
        width = max(len(t.inputs) for t in trees)
        if width:
            prompt_mask = self.mask.index_select(0, idx).bool()
            length = prompt_mask.shape[1]
            ids = torch.zeros((len(used), width), dtype=torch.long)
            pos = torch.zeros((len(used), width), dtype=torch.long)
            seen = torch.zeros((len(used), 1, width, length + width), dtype=torch.bool)
            seen[:, 0, :, length:] = torch.eye(width, dtype=torch.bool)  # padding sees itself only
            for b, t in enumerate(trees):
                n = len(t.inputs)
                ids[b, :n] = torch.from_numpy(t.tokens[t.inputs])
                pos[b, :n] = torch.from_numpy(t.depth[t.inputs]) + int(prompt_mask[b].sum())
                seen[b, 0, :n, :length] = prompt_mask[b]
                seen[b, 0, :n, length:length + n] = torch.from_numpy(t.visibility())
            cache = copy.deepcopy(self.cache)  # shares its tensors; the pass's keys go to the copy only
            if len(used) != self.first.shape[0] or used != list(range(len(used))):
                cache.reorder_cache(idx)
            base = self.model.base_model
            with torch.inference_mode():
                hidden = base(input_ids=ids.to(self.device), attention_mask=seen.to(self.device),
                              position_ids=pos.to(self.device), past_key_values=cache).last_hidden_state
                head = self.model.get_output_embeddings()
                for b, t in enumerate(trees):
                    inner = t.parent >= 0
                    node_lp[b][inner] = child_logprobs(t, hidden[b, :len(t.inputs)], head, block)
        for b, (r, t) in enumerate(zip(used, trees)):
            yield r, part[r], running_sums(t, node_lp[b])

    def _force_chunk(self, rows: list[int], seqs: list[list[int]]) -> list[np.ndarray]:
        """Running sums of token log-probabilities (one array per sequence, same length as it)."""
        torch = self.torch
        lengths = [len(x) for x in seqs]
        width = max(lengths)
        pad = self.lm.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        valid = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, x in enumerate(seqs):
            ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            valid[i, :len(x)] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        row = self.fork(rows)  # row i: the prompt of sequence i, its cache, mask and first log-probabilities
        lp = torch.zeros((len(seqs), width), dtype=torch.float32, device=self.device)
        lp[:, 0] = row.first.gather(1, ids[:, :1]).squeeze(1)  # log P(token 0 | prompt)
        if width > 1:
            with torch.inference_mode():
                if self.lm.seq2seq:
                    start_id = self.model.config.decoder_start_token_id
                    dec = torch.cat([torch.full((len(seqs), 1), start_id, dtype=torch.long, device=self.device),
                                     ids[:, :-1]], dim=1)
                    logits = self.model(encoder_outputs=row.enc, attention_mask=row.mask,
                                        decoder_input_ids=dec).logits[:, 1:]
                else:
                    mask = torch.cat([row.mask, valid[:, :-1].long()], dim=1)
                    pos = row.mask.sum(-1, keepdim=True) + torch.arange(width - 1, device=self.device).unsqueeze(0)
                    base = self.model.base_model
                    hidden = base(input_ids=ids[:, :-1], attention_mask=mask, position_ids=pos,
                                  **cache_kwargs(base, row.cache)).last_hidden_state
                sel = valid[:, 1:]
                if self.lm.seq2seq:
                    logits = logits[sel].float()
                else:  # only real positions reach the output layer
                    logits = self.model.get_output_embeddings()(hidden[sel]).float()
                tgt = ids[:, 1:][sel]
                lp[:, 1:][sel] = logits.gather(1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        cum = lp.cumsum(1).double().cpu().numpy()
        return [cum[i, :n] for i, n in enumerate(lengths)]
