"""Scores from an OpenAI-compatible endpoint: log-probabilities of a prompt's continuations through
``POST {base}/completions`` with ``echo`` and ``logprobs`` (vLLM, llama.cpp's servers and others offer it; OpenAI's
chat models do not).

The span reader (``Generator.span_logprobs``) and rank classification of labels (``Generator.loglik``) need the
log-probability of given text after a prompt.  A chat endpoint gives none, but a completions endpoint asked to echo
its prompt with log-probabilities does: the prompt is rendered to text as the model expects it (the chat template
of ``GeneratorConfig.model`` where that names a model genret can read locally — the packaged SmolLM2, a folder, a
GGUF file —, else plain text), the candidate appended, and the echoed tokens that end inside the candidate summed.
The probability that an answer ends after a token (end of turn, a full stop, a newline) comes from the next
position's ``top_logprobs`` (``TOP_LOGPROBS`` alternatives; where none of them ends an answer, the least of them
stands in, an upper bound); one extra generated token gives the last position's.

Whether the endpoint can do this is found once, before its first scoring request, and logged: it must echo
log-probabilities, and they must be the prompt's — on a counting sequence, the later numbers likely (llama-cpp-python's
server echoes each token's log-probability one position late: refused, with that reason).  Where it cannot, the
methods raise ``GenretError`` and the RAG pipeline falls back (a free answer, the chat completion's label).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from genret.core import GenretError

from ._generator import SPAN_TOKENS, Prompt, render_plain

log = logging.getLogger("genret")

_PROBE = "Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16"
_PROBE_FLOOR = -1.5  # mean log-probability of the probe's second half: any LM counts with near certainty
TOP_LOGPROBS = 5  # OpenAI's legacy limit; vLLM and llama.cpp allow more
_END_TEXTS = (".", "\n")
_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<|end|>")


class NoPromptLogprobs(GenretError):
    """The endpoint does not return its prompt's log-probabilities (``echo`` + ``logprobs`` on ``/completions``)."""


def _is_end(token: str) -> bool:
    return token in _END_TEXTS or token.startswith(_END_TOKENS) or token.strip() == "" and "\n" in token


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class EndpointScorer:
    """``loglik`` and ``span_logprobs`` for an ``OpenAIGenerator`` (see the module doc)."""

    def __init__(self, generator) -> None:
        self.generator = generator
        self.supported: bool | None = None  # None: not asked yet
        self.why = ""  # why not, once known
        self._lock = threading.Lock()
        self._template = None

    # --- prompts -----------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The prompt as text: the model's own chat template where genret can read the model here, else plain."""
        if not prompt:
            raise GenretError("empty prompt")
        with self._lock:
            if self._template is None:
                self._template = _local_template(self.generator.config.model)
        if self._template is False:
            return render_plain(prompt)
        return self._template.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)

    # --- requests ----------------------------------------------------------------------------------------
    def _echo(self, text: str) -> dict[str, Any]:
        """The endpoint's ``logprobs`` object for ``text`` echoed, plus one generated token (the endpoint checked
        first, once: ``_probe``)."""
        self._refuse_if_unsupported()
        if self.supported is None:
            with self._lock:
                if self.supported is None:
                    self._probe()
        return self._request(text)

    def _probe(self) -> None:
        """Whether the echoed log-probabilities are the prompt's: on a counting sequence every model continues,
        the last tokens must be likely under OpenAI's semantics (``token_logprobs[i]`` = log P(token i | tokens
        before it)).  llama-cpp-python's server gives log P(token i | tokens up to and including it) instead (its
        issue #1983): the same numbers one position late, useless for scoring."""
        lp = self._request(_PROBE)
        tail = [v for v in lp["token_logprobs"][len(lp["tokens"]) // 2:] if v is not None]
        if tail and sum(tail) / len(tail) > _PROBE_FLOOR:
            self.supported = True
            log.info("generator endpoint %s/completions returns prompt log-probabilities: span answers and label "
                     "scores use them", self.generator.base_url)
            return
        tops, tokens = lp.get("top_logprobs") or [], lp["tokens"]
        late = sum(1 for i in range(len(tokens) // 2, len(tokens) - 1)
                   if i < len(tops) and isinstance(tops[i], dict) and tops[i]
                   and max(tops[i], key=tops[i].get) == tokens[i + 1])
        mean = sum(tail) / max(1, len(tail))
        self._unsupported("its echoed log-probabilities are one token late (llama-cpp-python's server, its issue "
                          "#1983)" if late >= (len(tokens) - 1 - len(tokens) // 2) // 2 else
                          f"the echoed log-probabilities of a counting sequence average {mean:.1f}: not the prompt's")

    def _request(self, text: str) -> dict[str, Any]:
        body = {"model": self.generator.config.model, "prompt": text, "max_tokens": 1, "temperature": 0.0,
                "echo": True, "logprobs": TOP_LOGPROBS}
        try:
            reply = self.generator._post(body, "completions")  # noqa: SLF001 - the generator's own connection
            lp = reply["choices"][0]["logprobs"]
            tokens, values, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
            if not (isinstance(tokens, list) and len(tokens) == len(values) == len(offsets) and len(tokens) > 1):
                raise TypeError("tokens, token_logprobs and text_offset do not line up")
            if all(v is None for v in values[1:]):
                raise TypeError("no log-probabilities for the echoed prompt")
        except GenretError as exc:  # the generator's EndpointError, with the HTTP status where there was one
            status = getattr(exc, "status", None)
            if status is None or status >= 500:
                raise  # down, slow, failing: not an answer about what it supports
            self._unsupported(f"HTTP {status}")
        except (KeyError, IndexError, TypeError) as exc:
            self._unsupported(str(exc) or type(exc).__name__)
        return lp

    def _refuse_if_unsupported(self) -> None:
        if self.supported is False:
            raise NoPromptLogprobs(f"generator endpoint {self.generator.base_url}/completions gives no prompt "
                                   f"log-probabilities ({self.why})")

    def _unsupported(self, why: str):
        if self.supported is not False:
            log.warning("generator endpoint %s/completions gives no prompt log-probabilities (%s): short answers are "
                        "free text and labels the chat answer's", self.generator.base_url, why)
        self.supported, self.why = False, why
        self._refuse_if_unsupported()

    # --- scores ------------------------------------------------------------------------------------------
    def loglik(self, prompts: Sequence[Prompt], targets: Sequence[str]) -> list[float]:
        if len(prompts) != len(targets):
            raise GenretError(f"{len(prompts)} prompts but {len(targets)} targets")
        self._refuse_if_unsupported()
        out = []
        for prompt, target in zip(prompts, targets):
            head = self.render(prompt)
            lp = self._echo(head + target)
            out.append(sum(v for _, v, _ in _inside(lp, len(head), len(head) + len(target))))
        return out

    def span_logprobs(self, prompt: Prompt, pieces: Sequence[str]) -> list[list[tuple[int, float, float]]]:
        self._refuse_if_unsupported()
        head = self.render(prompt)
        result = []
        for piece in pieces:
            if not piece:
                result.append([])
                continue
            lp = self._echo(head + piece)
            rows, total = [], 0.0
            inside = _inside(lp, len(head), len(head) + len(piece))[:SPAN_TOKENS]
            for i, value, end in inside:
                total += value
                rows.append((min(end, len(head) + len(piece)) - len(head), total, _end_logprob(lp, i + 1)))
            result.append(rows)
        return result


def _inside(lp: dict, start: int, stop: int) -> list[tuple[int, float, int]]:
    """``(position, log-probability, end offset)`` of the echoed tokens that end after ``start`` and begin before
    ``stop`` (a token across the boundary counts with the continuation)."""
    out = []
    for i, (tok, value, off) in enumerate(zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"])):
        end = off + len(tok)
        if end > start and off < stop and value is not None:
            out.append((i, float(value), end))
    return out


def _end_logprob(lp: dict, position: int) -> float:
    """log P(the answer ends here): the end tokens among ``top_logprobs`` at ``position`` (the next token's)."""
    tops = lp.get("top_logprobs") or []
    if position >= len(tops) or not isinstance(tops[position], dict) or not tops[position]:
        return -30.0  # no distribution for that position: an end stays possible, barely
    alts = {str(k): float(v) for k, v in tops[position].items() if v is not None}
    ends = [v for k, v in alts.items() if _is_end(k)]
    return _logsumexp(ends) if ends else min(alts.values())


def _local_template(model: str):
    """The Hugging Face tokenizer of ``model`` when it is one genret can load here and has a chat template, else
    False (the endpoint's model is unknown here: plain prompts)."""
    from genret.core import load_tokenizer, resolve_lm

    try:
        resolve_lm(model)  # a bad alias or a missing GGUF file: no template
        tok = load_tokenizer(model)
    except Exception as exc:  # noqa: BLE001 - any failure means: no local template
        log.info("generator endpoint model %s: no local chat template (%s); plain prompts for scoring", model, exc)
        return False
    return tok if getattr(tok, "chat_template", None) else False
