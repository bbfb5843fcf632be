"""The local generator backend: a Hugging Face causal (Llama-class) or seq2seq (T5/BART) model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property

from genret.core import GenretError

from ._generator import (
    SPAN_TOKENS,
    Completion,
    Generator,
    GeneratorConfig,
    Prompt,
    cut_at_stop,
    raise_if_stopped,
    render_plain,
    stop_check,
    stream_until_stop,
)
from ._hf_decoding import counting_streamer, end_bias, stopping

log = logging.getLogger("genret")


class HFGenerator(Generator):
    """A local causal (Llama-class) or seq2seq (T5/BART) model; batched, greedy by default."""

    name = "hf"

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        from .._lm import load_lm

        self.config = config or GeneratorConfig()
        self.lm = load_lm(self.config.model, self.config.device, self.config.dtype, role="generator")
        self.tokenizer = self.lm.tokenizer
        self._lock = threading.Lock()  # one forward pass at a time: HF models are not re-entrant under padding
        # Fast tokenizers keep padding/truncation settings in shared state that every call resets: concurrent
        # calls with different settings corrupt each other's batches, so every encoding call holds this lock
        # (taken after ``_lock`` when both are needed, never before).
        self._tok_lock = threading.Lock()
        self._chat = bool(getattr(self.tokenizer, "chat_template", None))
        _check_stop_per_layer(self.lm.model)

    # --- prompts -----------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The text the model sees for ``prompt`` (chat template with the generation prompt, or plain)."""
        if not prompt:
            raise GenretError("empty prompt")
        if self._chat and not self.lm.seq2seq:
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return render_plain(prompt)

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, texts: list[str], side: str):
        """Token ids padded on ``side``; prompts over ``max_input_tokens`` keep their end (the question and the
        chat template's generation prompt), not their start."""
        tok = self.tokenizer
        limit = self.config.max_input_tokens
        with self._tok_lock:
            # chat templates already carry the special tokens
            ids = tok(texts, add_special_tokens=not (self._chat and not self.lm.seq2seq))["input_ids"]
            if any(len(r) > limit for r in ids):
                log.warning("prompt of %d tokens cut to its last %d (max_input_tokens)", max(map(len, ids)), limit)
                ids = [r[-limit:] for r in ids]
            enc = tok.pad({"input_ids": ids}, padding=True, padding_side=side, return_tensors="pt")
        return {k: v.to(self.lm.device) for k, v in enc.items()}

    # --- generation --------------------------------------------------------------------------------------
    def _gen_kwargs(self, max_new_tokens: int | None) -> dict:
        kw = {"max_new_tokens": max_new_tokens or self.config.max_new_tokens,
              "pad_token_id": self.tokenizer.pad_token_id}
        if self.config.temperature > 0:
            kw.update(do_sample=True, temperature=self.config.temperature)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[str]:
        return [c.text for c in self.complete(prompts, max_new_tokens=max_new_tokens, stop=stop)]

    def complete(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[Completion]:
        """The completions with the model's own count of new tokens (up to its end of sequence); truncated: the
        model wrote ``max_new_tokens`` tokens without ending (nor reaching a stop string)."""
        import torch

        check = stop_check()  # inside ``stop_when``: stop at the next decoding step once nobody waits
        kwargs = self._gen_kwargs(max_new_tokens)
        if check is not None:
            kwargs["stopping_criteria"] = stopping(check)
        texts = [self.render(p) for p in prompts]
        # prompts of similar length go together (less padding: on a CPU the padded prompt dominates the cost)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Completion] = [Completion("", 0, False)] * len(texts)
        limit, ends = kwargs["max_new_tokens"], {*self._eos_ids, self.tokenizer.pad_token_id}
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start:start + self.config.batch_size]
            enc = self._encode([texts[i] for i in rows], "left")
            with self._lock, torch.inference_mode():
                raise_if_stopped(check)  # checked again once the model is ours: the wait may have been long
                ids = self.lm.model.generate(**enc, **kwargs)
            raise_if_stopped(check)  # stopped mid-way: the rows are cut short, not answers
            if not self.lm.seq2seq:
                ids = ids[:, enc["input_ids"].shape[1]:]
            for i, row in zip(rows, ids):
                out[i] = self._completion(row.tolist()[1 if self.lm.seq2seq else 0:], ends, limit, stop)
        return out

    def _completion(self, ids: list[int], ends: set[int], limit: int, stop: Sequence[str]) -> Completion:
        """The completion of one row of new token ids (padded after its end of sequence)."""
        n = next((k for k, t in enumerate(ids) if t in ends), len(ids))
        full = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        text = cut_at_stop(full, stop)
        if len(text) < len(full):  # ended by a stop string
            return Completion(text.strip(), self.count_tokens(text.strip()) if text.strip() else 0, False)
        return Completion(text.strip(), n, n >= limit)

    def generate_spans(self, prompts: Sequence[Prompt], sources: Sequence[Sequence[str]], *,
                       max_new_tokens: int | None = None, avoid: Sequence[str] = ()) -> list[str]:
        """Greedy (or sampled) decoding where every step may only continue a word-initial span of the prompt's
        sources (``SpanTrie``, via ``prefix_allowed_tokens_fn``), ending at a word boundary."""
        import torch

        from ._spans import SpanTrie

        if len(prompts) != len(sources):
            raise GenretError(f"{len(prompts)} prompts but {len(sources)} source lists")
        check = stop_check()
        kwargs = self._gen_kwargs(max_new_tokens)
        if check is not None:
            kwargs["stopping_criteria"] = stopping(check)
        eos = self._eos_ids
        avoid = list(avoid) or [""] * len(sources)
        tries = [SpanTrie(src, self._encode_offsets, eos, max_tokens=min(kwargs["max_new_tokens"], SPAN_TOKENS),
                          avoid=q, focus=FOCUS) for src, q in zip(sources, avoid)]
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], SPAN_TOKENS)
        kwargs["logits_processor"] = end_bias(eos, END_BIAS)
        texts = [self.render(p) for p in prompts]
        out: list[str] = [""] * len(texts)
        for start in range(0, len(texts), self.config.batch_size):
            rows = list(range(start, min(start + self.config.batch_size, len(texts))))
            enc = self._encode([texts[i] for i in rows], "left")
            skip = 1 if self.lm.seq2seq else enc["input_ids"].shape[1]  # decoder start token / the prompt

            def allowed(b: int, ids, rows=rows, skip=skip) -> list[int]:
                return tries[rows[b]].allowed(ids[skip:].tolist())

            with self._lock, torch.inference_mode():
                raise_if_stopped(check)
                ids = self.lm.model.generate(**enc, **kwargs, prefix_allowed_tokens_fn=allowed)
            raise_if_stopped(check)
            if not self.lm.seq2seq:
                ids = ids[:, enc["input_ids"].shape[1]:]
            for i, row in zip(rows, ids):
                out[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return out

    def span_logprobs(self, prompt: Prompt, pieces: Sequence[str]) -> list[list[tuple[int, float, float]]]:
        """Every prefix of every piece scored in two forward passes: the prompt once (its key/value cache), then all
        pieces packed into one sequence whose attention mask lets each token see the prompt and its own piece only
        (block-diagonal causal, each piece's positions restarting after the prompt) — equal, within float error, to
        scoring each piece after the prompt apart (``loglik``), at the cost of one short sequence.  Causal models
        only (a seq2seq model raises ``GenretError``: its short answers use constrained decoding)."""
        import torch

        if self.lm.seq2seq:
            raise GenretError("span scoring needs a causal model; seq2seq models decode spans under a constraint")
        check = stop_check()
        rows = [self._encode_offsets(p)[:SPAN_TOKENS] for p in pieces]
        flat = [t for r in rows for t, _, _ in r]
        if not flat:
            return [[] for _ in pieces]
        enc = self._encode([self.render(prompt)], "left")
        n_prompt, n_flat, device = enc["input_ids"].shape[1], len(flat), self.lm.device
        dtype = next(self.lm.model.parameters()).dtype
        blocked = torch.finfo(dtype).min
        mask = torch.full((n_flat, n_prompt + n_flat), blocked, dtype=dtype)
        mask[:, :n_prompt] = 0
        start, positions = 0, []
        for r in rows:
            n = len(r)
            mask[start:start + n, n_prompt + start:n_prompt + start + n] = torch.triu(
                torch.full((n, n), blocked, dtype=dtype), diagonal=1)
            positions.extend(range(n_prompt, n_prompt + n))
            start += n
        ends = self._end_ids
        with self._lock, torch.inference_mode():
            raise_if_stopped(check)
            first = self.lm.model(**enc, use_cache=True)
            prev = torch.log_softmax(first.logits[0, -1].float(), -1)
            out = self.lm.model(input_ids=torch.tensor([flat], device=device),
                                attention_mask=mask[None, None].to(device),
                                position_ids=torch.tensor([positions], device=device),
                                **self._with_cache(first))
            logp = torch.log_softmax(out.logits[0].float(), -1)
        raise_if_stopped(check)
        result, start = [], 0
        for r in rows:
            row, total = [], 0.0
            for j, (tid, _, end) in enumerate(r):
                total += float((prev if j == 0 else logp[start + j - 1])[tid])
                row.append((end, total, float(torch.logsumexp(logp[start + j, ends], 0))))
            result.append(row)
            start += len(r)
        return result

    @cached_property
    def _eos_ids(self) -> list[int]:
        """The model's end-of-sequence ids (its generation config's, else the tokenizer's)."""
        eos = self.lm.model.generation_config.eos_token_id
        eos = [e for e in ([eos] if isinstance(eos, int) else list(eos or [])) if e is not None]
        return eos or [self.tokenizer.eos_token_id]

    @cached_property
    def _end_ids(self) -> list[int]:
        """Tokens that end a short answer: end of turn (the model's EOS ids), a full stop, a newline."""
        ids = {*self._eos_ids, self.tokenizer.eos_token_id}
        for text in (".", "\n"):
            with self._tok_lock:
                toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(toks) == 1:
                ids.add(toks[0])
        return sorted(i for i in ids if i is not None)

    @cached_property
    def _cache_kwarg(self) -> str:
        """The keyword the model's forward takes a key/value cache by (``cache`` in transformers ≥ 5.2x,
        ``past_key_values`` before)."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.lm.model.forward).parameters else "past_key_values"

    def _with_cache(self, output) -> dict:
        """``output``'s key/value cache, under the keyword the model's forward takes it by."""
        return {self._cache_kwarg: getattr(output, self._cache_kwarg)}

    def _encode_offsets(self, text: str) -> list[tuple[int, int, int]]:
        with self._tok_lock:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(t, a, b) for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]

    def stream(self, prompt: Prompt, *, max_new_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        return (yield from self.stream_complete(prompt, max_new_tokens=max_new_tokens, stop=stop))

    def stream_complete(self, prompt: Prompt, *, max_new_tokens: int | None = None,
                        stop: Sequence[str] = ()) -> Iterator[str]:
        """``stream``, returning the ``Completion`` (the model's own count of new tokens; truncated: it wrote
        ``max_new_tokens`` without ending nor reaching a stop string)."""
        import torch

        enc = self._encode([self.render(prompt)], "left")
        streamer = counting_streamer(self.tokenizer, not self.lm.seq2seq, {*self._eos_ids,
                                                                             self.tokenizer.pad_token_id})
        errors: list[BaseException] = []
        cancelled = threading.Event()  # the consumer went away: stop at the next decoding step

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.lm.model.generate(**enc, **self._gen_kwargs(max_new_tokens), streamer=streamer,
                                           stopping_criteria=stopping(cancelled.is_set))
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        pieces: list[str] = []
        read_all: list[bool] = []

        def source() -> Iterator[str]:
            yield from streamer
            read_all.append(True)  # not reached when a stop string ended the stream

        try:  # after a stop string the rest is not read: cancelling stops the model instead
            for piece in stream_until_stop(source(), stop):
                pieces.append(piece)
                yield piece
        finally:  # also when the consumer closes this iterator early: the model thread ends promptly
            cancelled.set()
        thread.join()
        if errors:
            raise errors[0]
        text = "".join(pieces).strip()
        if not read_all:  # a stop string ended it
            return Completion(text, self.count_tokens(text) if text else 0, False)
        limit = self._gen_kwargs(max_new_tokens)["max_new_tokens"]
        return Completion(text, streamer.new_tokens, not streamer.saw_end and streamer.new_tokens >= limit)

    # --- scoring -----------------------------------------------------------------------------------------
    def loglik(self, prompts: Sequence[Prompt], targets: Sequence[str]) -> list[float]:
        import torch

        if len(prompts) != len(targets):
            raise GenretError(f"{len(prompts)} prompts but {len(targets)} targets")
        tok = self.tokenizer
        check = stop_check()
        scores: list[float] = []
        for start in range(0, len(prompts), self.config.batch_size):
            raise_if_stopped(check)
            ps = [self.render(p) for p in prompts[start:start + self.config.batch_size]]
            ts = list(targets[start:start + self.config.batch_size])
            with self._lock, torch.inference_mode():
                scores.extend(self._loglik_seq2seq(ps, ts) if self.lm.seq2seq else self._loglik_causal(ps, ts, tok))
        return scores

    def prompt_features(self, prompts: Sequence[Prompt], depth: tuple[float, float]) -> list[list[float]]:
        import torch

        if self.lm.seq2seq:
            raise GenretError("prompt features need a causal model (a seq2seq model's answer starts in its decoder)")
        check = stop_check()
        out: list[list[float]] = []
        for start in range(0, len(prompts), self.config.batch_size):
            raise_if_stopped(check)
            texts = [self.render(p) for p in prompts[start:start + self.config.batch_size]]
            enc = self._encode(texts, "left")  # left padding: every row's last position is its prompt's end
            with self._lock, torch.inference_mode():
                states = self.lm.model(**enc, output_hidden_states=True).hidden_states
            layers = len(states) - 1
            lo, hi = (min(layers, max(0, round(f * layers))) for f in depth)
            picked = torch.stack([states[k][:, -1].float() for k in range(min(lo, hi), max(lo, hi) + 1)])
            out.extend(picked.mean(0).cpu().tolist())
        return out

    def _loglik_causal(self, ps: list[str], ts: list[str], tok) -> list[float]:
        import torch

        special = not self._chat
        rows, spans = [], []
        for p, t in zip(ps, ts):
            with self._tok_lock:
                pid = tok(p, add_special_tokens=special)["input_ids"]
                tid = tok(t, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
            budget = self.config.max_input_tokens
            pid = pid[-max(1, budget - len(tid)):]  # keep the end of the prompt next to the target
            rows.append(pid + tid)
            spans.append((len(pid), len(pid) + len(tid)))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        logits = self.lm.model(input_ids=ids.to(self.lm.device), attention_mask=mask.to(self.lm.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i, (a, b) in enumerate(spans):
            target = ids[i, a:b].to(self.lm.device)
            out.append(float(logp[i, a - 1:b - 1].gather(1, target[:, None]).sum()))
        return out

    def _loglik_seq2seq(self, ps: list[str], ts: list[str]) -> list[float]:
        import torch

        enc = self._encode(ps, "right")
        with self._tok_lock:
            lab = self.tokenizer(text_target=ts, return_tensors="pt", padding=True)["input_ids"].to(self.lm.device)
        lab_mask = lab != self.tokenizer.pad_token_id
        logits = self.lm.model(**enc, labels=lab.masked_fill(~lab_mask, -100)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, lab[..., None]).squeeze(-1)
        return [float(x) for x in (logp * lab_mask).sum(1)]


FOCUS = 1  # spans come from the sentence of the passages sharing most words with the question
# added to the end-of-answer logit where a span may end: short spans, as short answers are (24 squad train
# questions, bm25, EM: bias 2 0.12, 8 0.21, 20 0.25)
END_BIAS = 20.0


def _check_stop_per_layer(model) -> None:
    """Inside ``stop_when``, stop even in the middle of a forward pass: the prompts' pass over a batch (prefill) is
    one forward of seconds on a CPU, so the ``stop_when`` check also runs before every layer (of every layer list)."""
    import torch

    def check(module, args) -> None:
        raise_if_stopped(stop_check())

    for layers in model.modules():
        if isinstance(layers, torch.nn.ModuleList):
            for layer in layers:
                layer.register_forward_pre_hook(check)

