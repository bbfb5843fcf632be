"""The trainable module: the LM plus learned prompt vectors, and what can be frozen in it.

The module of ``make_train_module`` takes (task, prompt ids, target ids) rows and returns the teacher-forced
log-probability of every target token.  Everything the loss needs happens inside ``forward`` so that
``accelerate`` can wrap it (autocast for bf16/fp16, DistributedDataParallel across GPUs), and the prompt vectors
are parameters of the same module, so they are synchronised across GPUs like the LM's weights.  Causal rows
are left-padded (position ids follow the mask), so every target ends at the last position and only the
target positions' logits are computed (``logits_to_keep``): the vocabulary projection of the prompt tokens,
a large share of a small LM's compute, is skipped.
"""

from __future__ import annotations

import inspect
import logging

log = logging.getLogger("genret")

Row = tuple[str, list[int], list[int]]  # (task, prompt token ids, target token ids)


def make_train_module(model, seq2seq: bool, pad_id: int, vectors: dict):
    """A ``torch.nn.Module`` around ``model`` holding ``vectors`` ({task: (n, hidden) tensor}) as parameters."""
    import torch

    class _TrainModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model
            self.tasks = sorted(vectors)
            self.prompt_vectors = torch.nn.ParameterList(
                [torch.nn.Parameter(vectors[t].detach().float().clone()) for t in self.tasks])
            self.seq2seq, self.pad_id = seq2seq, pad_id
            self._keep = "logits_to_keep" in inspect.signature(model.forward).parameters

        def vectors(self) -> dict:
            return {t: p for t, p in zip(self.tasks, self.prompt_vectors)}

        def forward(self, rows: list[Row]):
            """``(token_logprobs, mask)``, both (rows, longest target); targets right-aligned for causal
            models, left-aligned for seq2seq; ``mask`` marks real target tokens."""
            dev = self.lm.get_input_embeddings().weight.device
            vecs = self.vectors()
            seqs = [(vecs.get(t), p if self.seq2seq else p + y) for t, p, y in rows]
            width = max(len(s) + (0 if v is None else v.shape[0]) for v, s in seqs)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros((len(rows), width), dtype=torch.long, device=dev)
            for i, (v, s) in enumerate(seqs):
                n = len(s) + (0 if v is None else v.shape[0])
                ids[i, width - len(s):] = torch.tensor(s, device=dev)
                mask[i, width - n:] = 1
            embeds = self.lm.get_input_embeddings()(ids)
            if any(v is not None for v, _ in seqs):
                rows_e = []
                for i, (v, s) in enumerate(seqs):
                    if v is None:
                        rows_e.append(embeds[i])
                    else:
                        cut = width - len(s) - v.shape[0]
                        rows_e.append(torch.cat([embeds[i, :cut], v.to(embeds.dtype), embeds[i, width - len(s):]]))
                embeds = torch.stack(rows_e)
            t_len = max(len(y) for _, _, y in rows)
            labels = torch.full((len(rows), t_len), -100, dtype=torch.long, device=dev)
            for i, (_, _, y) in enumerate(rows):
                if self.seq2seq:
                    labels[i, :len(y)] = torch.tensor(y, device=dev)
                else:
                    labels[i, t_len - len(y):] = torch.tensor(y, device=dev)
            if self.seq2seq:
                logits = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits
            else:
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                kw = {"logits_to_keep": t_len + 1} if self._keep else {}
                logits = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, **kw).logits
                logits = logits[:, -(t_len + 1):-1]
            flat = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                                     ignore_index=-100, reduction="none")
            return -flat.view(len(rows), t_len), labels.ne(-100)

    return _TrainModule()


def layer_stacks(model) -> list[tuple[str, object]]:
    """The transformer layer stacks of ``model``, found generically: the outermost ``ModuleList``s whose items
    are all of one class (``model.layers`` for Llama-class models, ``transformer.h`` for GPT-2,
    ``encoder.block`` and ``decoder.block`` for T5, ``model.encoder.layers`` / ``model.decoder.layers`` for BART)."""
    import torch

    stacks: list[tuple[str, object]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(m) for m in mod}) != 1 or any(name.startswith(s + ".") for s, _ in stacks):
            continue
        stacks.append((name, mod))
    return stacks


def freeze(model, *, embeddings: bool, layers: int) -> list[str]:
    """Freeze the input embeddings (with tied output embeddings, those too: they are the same weights) and the
    lowest ``layers`` layers of every layer stack (encoder and decoder of a seq2seq model); returns what it froze."""
    frozen = []
    if embeddings:
        for p in model.get_input_embeddings().parameters():
            p.requires_grad_(False)
        frozen.append("input embeddings")
    if layers:
        stacks = layer_stacks(model)
        if not stacks:
            log.warning("freeze_layers: found no layer stack in %s; nothing frozen", type(model).__name__)
        for name, stack in stacks:
            if layers > len(stack):
                log.warning("freeze_layers=%d but %s has %d layers: freezing all of them", layers, name, len(stack))
            for layer in list(stack)[:layers]:
                for p in layer.parameters():
                    p.requires_grad_(False)
            frozen.append(f"{name}[:{min(layers, len(stack))}]")
    if frozen:
        log.info("frozen: %s", ", ".join(frozen))
    return frozen
