"""The llama.cpp generator backend (``kind = "llamacpp"``): a GGUF file used as it is, through llama-cpp-python.

The packaged SmolLM2 is a Q4 GGUF; the ``hf`` backend de-quantises it into a float32 transformers checkpoint, this
one runs the file itself (any GGUF a user has: ``model`` is a ``.gguf`` path or the packaged model's alias).  The
prompt is rendered with the chat template the GGUF carries (``tokenizer.chat_template``, by llama-cpp-python's
Jinja2 formatter, as transformers renders it), else plainly.

What it offers of the ``Generator`` contract: ``generate`` / ``complete`` / ``stream`` (greedy unless a temperature
is set), ``count_tokens``, and scoring from the model's own logits — ``loglik`` (rank classification of labels) and
``span_logprobs`` (the span reader: every prefix of every candidate after one evaluation of the prompt, its KV cache
kept and each candidate evaluated after it).  Not offered: ``generate_spans`` (constrained decoding) and
``prompt_features`` (hidden states), so the label head is skipped for rank classification.

One llama.cpp context serves one call at a time (a lock); ``n_threads`` is torch's thread count, 1 on a shared CPU.
Install with ``pip install 'genret[llamacpp]'`` (it compiles llama.cpp: several minutes on 2 cores).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from genret.core import ConfigError, GenretError, resolve_lm

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

log = logging.getLogger("genret")

_SLACK = 64  # context positions beyond the prompt budget and the answer


def gguf_path(spec: str) -> Path:
    """The GGUF file ``spec`` names: a ``.gguf`` path, or the packaged SmolLM2's alias (``ConfigError`` otherwise)."""
    folder, gguf = resolve_lm(spec)
    if not gguf:
        raise ConfigError(f"generator kind 'llamacpp' runs GGUF files; {spec!r} is not one (give a path to a .gguf "
                          "file, or use --generator hf for a transformers model)")
    return Path(folder) / gguf


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64, copy=False)
    top = rows.max(axis=-1, keepdims=True)
    return rows - top - np.log(np.exp(rows - top).sum(axis=-1, keepdims=True))


class LlamaCppGenerator(Generator):
    """Completions and scores from a GGUF model through llama-cpp-python (see the module doc)."""

    name = "llamacpp"

    def __init__(self, config: GeneratorConfig) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigError("generator kind 'llamacpp' needs llama-cpp-python: pip install 'genret[llamacpp]'") \
                from exc
        self.config = config
        self.path = gguf_path(config.model)
        n_ctx = config.max_input_tokens + config.max_new_tokens + _SLACK
        try:
            import torch

            threads = torch.get_num_threads()
        except ImportError:  # pragma: no cover - torch is a dependency
            threads = 1
        self._llm = Llama(str(self.path), n_ctx=n_ctx, n_batch=min(512, n_ctx), n_threads=threads,
                          n_threads_batch=threads, logits_all=False, verbose=False, seed=0)
        self._lock = threading.Lock()
        self._prompt: tuple[list[int], np.ndarray] | None = None  # the prompt in the cache and its last logits
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        self._format = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def special(key: str) -> str:
                tid = meta.get(key)
                return self._llm.detokenize([int(tid)], special=True).decode("utf-8", "replace") if tid else ""

            self._format = Jinja2ChatFormatter(template, eos_token=special("tokenizer.ggml.eos_token_id"),
                                               bos_token=special("tokenizer.ggml.bos_token_id"))
        self._ends = self._end_ids()
        log.info("generator %s (llama.cpp, %s, %d threads, context %d)", config.model, self.path.name, threads, n_ctx)

    # --- prompts -----------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The text the model sees for ``prompt`` (the GGUF's chat template with the generation prompt, or plain)."""
        if not prompt:
            raise GenretError("empty prompt")
        if self._format is not None:
            return self._format(messages=list(prompt)).prompt
        return render_plain(prompt)

    def _tokens(self, text: str, *, prompt: bool) -> list[int]:
        """Token ids of ``text``: a rendered prompt with its special tokens parsed (and a BOS only where the
        template did not write one), or a continuation as plain text."""
        data = text.encode("utf-8")
        if not prompt:
            return self._llm.tokenize(data, add_bos=False, special=False)
        ids = self._llm.tokenize(data, add_bos=False, special=True)
        bos = self._llm.token_bos()
        if self._format is None and bos >= 0 and self._llm.metadata.get("tokenizer.ggml.add_bos_token") == "true" \
                and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._tokens(text, prompt=False))

    def _end_ids(self) -> list[int]:
        """Tokens that end a short answer: end of sequence / turn, a full stop, a newline."""
        ids = {self._llm.token_eos()}
        for text, special in (("<|im_end|>", True), ("<|eot_id|>", True), ("<end_of_turn>", True), (".", False),
                              ("\n", False)):
            toks = self._llm.tokenize(text.encode(), add_bos=False, special=special)
            if len(toks) == 1 and (not special or self._llm.detokenize(toks, special=True).decode() == text):
                ids.add(toks[0])
        return sorted(i for i in ids if i is not None and i >= 0)

    # --- generation --------------------------------------------------------------------------------------
    def _request(self, prompt: Prompt, max_new_tokens: int | None, stop: Sequence[str], stream: bool):
        self._prompt = None  # generation overwrites the cache positions a scoring prompt held
        return self._llm.create_completion(self.render(prompt), max_tokens=max_new_tokens or self.config.max_new_tokens,
                                           temperature=self.config.temperature, stop=[s for s in stop if s] or None,
                                           stream=stream, seed=0)

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[str]:
        return [c.text for c in self.complete(prompts, max_new_tokens=max_new_tokens, stop=stop)]

    def complete(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[Completion]:
        prompts = list(prompts)
        for p in prompts:
            if not p:
                raise GenretError("empty prompt")
        check, out = stop_check(), []
        for p in prompts:
            raise_if_stopped(check)
            with self._lock:
                reply = self._request(p, max_new_tokens, stop, stream=False)
            choice = reply["choices"][0]
            text = cut_at_stop(choice["text"], stop).strip()
            out.append(Completion(text, int(reply["usage"]["completion_tokens"]), choice["finish_reason"] == "length"))
        return out

    def stream(self, prompt: Prompt, *, max_new_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        check = stop_check()

        def pieces() -> Iterator[str]:
            with self._lock:
                for chunk in self._request(prompt, max_new_tokens, stop, stream=True):
                    raise_if_stopped(check)
                    yield chunk["choices"][0]["text"]

        source = pieces()
        try:
            yield from stream_until_stop(source, stop)
        finally:
            source.close()  # a stop string left it unread: release the context now, not at garbage collection

    # --- scoring -----------------------------------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], n_past: int, every: bool) -> np.ndarray:
        """Feed ``tokens`` after the first ``n_past`` cached positions (the cache beyond them dropped): the logits of
        every token (``every``) or of the last only, one row each.  The output layer runs only where logits are
        asked for — a context built with ``logits_all`` computes it at every prompt position (≈ 8× slower here).
        Goes below ``Llama.eval`` (its batch and context objects), which keeps all logits or none."""
        llm, vocab, rows = self._llm, self._llm.n_vocab(), []
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)  # noqa: SLF001 - as Llama.eval does
        for i in range(0, len(tokens), llm.n_batch):
            chunk = list(tokens[i:i + llm.n_batch])
            last = i + llm.n_batch >= len(tokens)
            llm._batch.set_batch(batch=chunk, n_past=n_past + i, logits_all=every)  # noqa: SLF001
            llm._ctx.decode(llm._batch)  # noqa: SLF001
            if every or last:
                n = len(chunk) if every else 1
                rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n * vocab,))  # noqa: SLF001
                            .reshape(n, vocab).copy())
        llm.n_tokens = 0  # generation re-reads its prompt (our cache positions are not its tokens)
        return np.concatenate(rows) if rows else np.zeros((0, vocab), np.float32)

    def _after_prompt(self, pid: list[int]) -> np.ndarray:
        """log-probabilities of the token after prompt ``pid``, its positions left in the cache (read once for
        consecutive calls with the same prompt: the labels of one claim, the candidates of one question)."""
        if self._prompt is None or self._prompt[0] != pid:
            self._prompt = None
            self._prompt = (list(pid), _log_softmax(self._decode(pid, 0, every=False)[-1]))
        return self._prompt[1]

    def _continuation(self, pid: list[int], tid: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(log-probabilities after the prompt, log-probabilities after each of tid's tokens)``."""
        first = self._after_prompt(pid)
        return first, _log_softmax(self._decode(tid, len(pid), every=True))

    def _prompt_ids(self, prompt: Prompt, room: int) -> list[int]:
        ids = self._tokens(self.render(prompt), prompt=True)
        keep = max(1, self._llm.n_ctx() - room - 1)
        return ids[-keep:]  # the end of a prompt too long for the context: next to what is scored

    def loglik(self, prompts: Sequence[Prompt], targets: Sequence[str]) -> list[float]:
        if len(prompts) != len(targets):
            raise GenretError(f"{len(prompts)} prompts but {len(targets)} targets")
        check, out = stop_check(), []
        for prompt, target in zip(prompts, targets):
            raise_if_stopped(check)
            with self._lock:
                tid = self._tokens(target, prompt=False) or [self._llm.token_eos()]
                first, rest = self._continuation(self._prompt_ids(prompt, len(tid)), tid)
            out.append(float(first[tid[0]] + sum(rest[j - 1, t] for j, t in enumerate(tid) if j)))
        return out

    def span_logprobs(self, prompt: Prompt, pieces: Sequence[str]) -> list[list[tuple[int, float, float]]]:
        """``Generator.span_logprobs``: the prompt read once, each piece after it in the cache, the scores read off
        the model's logits."""
        check = stop_check()
        rows = [self._offsets(p)[:SPAN_TOKENS] for p in pieces]
        if not any(rows):
            return [[] for _ in pieces]
        result = []
        with self._lock:
            pid = self._prompt_ids(prompt, max(len(r) for r in rows))
            for r in rows:
                raise_if_stopped(check)
                if not r:
                    result.append([])
                    continue
                prev, logp = self._continuation(pid, [t for t, _ in r])
                row, total = [], 0.0
                for j, (tid, end) in enumerate(r):
                    total += float((prev if j == 0 else logp[j - 1])[tid])
                    ends = logp[j, self._ends]
                    row.append((end, total, float(np.log(np.exp(ends - ends.max()).sum()) + ends.max())))
                result.append(row)
        return result

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        """``(token id, character where it ends in text)`` for each token of ``text``."""
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        data, out, nbytes = text.encode("utf-8"), [], 0
        for tid in ids:
            nbytes += len(self._llm.detokenize([tid]))
            out.append((tid, len(data[:nbytes].decode("utf-8", errors="ignore"))))
        return out

    def close(self) -> None:
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

