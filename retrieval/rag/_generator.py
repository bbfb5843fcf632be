"""Generators: the ``Generator`` interface, its config, and the text helpers every backend shares.

A prompt is a list of chat messages (``{"role": "system"|"user"|"assistant", "content": str}``), so the same
prompt goes to a local model (rendered with its chat template, or plainly when it has none) and to an
OpenAI-compatible chat endpoint.  The backends: ``_local`` (Hugging Face), ``_openai`` and ``_llamacpp`` (GGUF files);
``_backends`` names them.

``stop_when(check)``: generation that nobody waits for any more (a server's caller timed out or went away) stops
at its next decoding step inside the block, with ``GenerationCancelled`` — set by the caller, read by the backends
(``stop_check``), so no backend's signature changes.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Generator as Yielding
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from genret.core import DEFAULT_LM, DTYPES, GenretError

log = logging.getLogger("genret")

Prompt = list[dict[str, str]]
SPAN_TOKENS = 16  # the longest span answer, in tokens: constrained decoding's limit, and what span scoring reads


class GeneratorConfig(BaseModel):
    """Settings of the answer generator (one section; each backend reads the fields it needs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["hf", "openai", "llamacpp"] = Field(
        "hf", description="hf: local model (transformers); openai: OpenAI-compatible endpoint; llamacpp: a GGUF file "
        "through llama-cpp-python (genret[llamacpp])")
    model: str = Field(DEFAULT_LM, description="HF name / local path (hf), the endpoint's model name (openai), a .gguf "
                       "path or the packaged model's alias (llamacpp)")
    device: str = Field("auto", description="hf: auto, cpu, cuda, cuda:N")
    dtype: Literal[DTYPES] = Field(
        "auto", description="hf: auto (bfloat16 where native, else float32), float32, bfloat16, float16, int8")
    max_new_tokens: int = Field(32, ge=1, le=4096)
    max_input_tokens: int = Field(1536, ge=64, description="prompt budget in tokens (RAG truncates to fit)")
    batch_size: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (reproducible)")
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1 (else $OPENAI_BASE_URL)")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    timeout_s: float = Field(120.0, gt=0)


@dataclass(frozen=True, slots=True)
class Completion:
    """One completion: its text, the new tokens it took and whether it stopped at ``max_new_tokens`` (cut short, not
    ended by the model or a stop string) — the backend's own count where it has one (``Generator.complete``)."""

    text: str
    tokens: int
    truncated: bool


class Generator(ABC):
    """Contract: ``generate`` returns one completion per prompt, in prompt order, at most ``max_new_tokens``
    tokens each (default: the config's), greedy unless the config sets a temperature, cut before the first
    of ``stop``.  ``stream`` yields the pieces of one completion whose concatenation equals ``generate``'s (up
    to surrounding whitespace).
    ``loglik`` is the summed log-probability of each target continuing its prompt (backends that cannot
    score raise ``GenretError``).  Safe to call from several threads."""

    name: str = "generator"
    config: GeneratorConfig

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[str]:
        """One completion per prompt."""

    def stream(self, prompt: Prompt, *, max_new_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        """The completion of one prompt, piece by piece (default: all at once)."""
        yield self.generate([prompt], max_new_tokens=max_new_tokens, stop=stop)[0]

    def complete(self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
                 stop: Sequence[str] = ()) -> list[Completion]:
        """``generate``, with each completion's token count and whether it stopped at ``max_new_tokens`` (default:
        estimated from the text, ``count_tokens``; backends that know override it)."""
        limit = max_new_tokens or self.config.max_new_tokens
        return [estimated(self, text, limit) for text in self.generate(prompts, max_new_tokens=max_new_tokens,
                                                                        stop=stop)]

    def stream_complete(self, prompt: Prompt, *, max_new_tokens: int | None = None,
                        stop: Sequence[str] = ()) -> Yielding[str, None, Completion]:
        """``stream``'s pieces, then (the generator's return value) the ``Completion`` they make (default: estimated
        from the text; backends that know override it)."""
        pieces = []
        for piece in self.stream(prompt, max_new_tokens=max_new_tokens, stop=stop):
            pieces.append(piece)
            yield piece
        return estimated(self, "".join(pieces).strip(), max_new_tokens or self.config.max_new_tokens)

    def generate_spans(self, prompts: Sequence[Prompt], sources: Sequence[Sequence[str]], *,
                       max_new_tokens: int | None = None, avoid: Sequence[str] = ()) -> list[str]:
        """One completion per prompt, copied from its sources: the text of a span of one of ``sources[i]`` that
        starts at a word — not a function word nor a word of ``avoid[i]`` (the question) — (decoding constrained
        to those spans; ``rag._spans``).  Backends that cannot constrain
        decoding raise ``GenretError`` (the caller generates freely instead)."""
        raise GenretError(f"generator {self.name!r} cannot constrain decoding to spans (use a local model)")

    def span_logprobs(self, prompt: Prompt, pieces: Sequence[str]) -> list[list[tuple[int, float, float]]]:
        """For each piece (a candidate answer, read after ``prompt``'s answer start), one row per token of it:
        ``(end, logp, end_logp)`` — the character where the token ends in the piece, log p(piece[:end] | prompt)
        and the log-probability that the answer ends right there (end of turn, a full stop or a newline).  Every
        prefix of every piece is thus scored at once (the span reader, ``rag._reader``).  Backends that cannot score
        raise ``GenretError``."""
        raise GenretError(f"generator {self.name!r} cannot score continuations (use a local model)")

    def prompt_features(self, prompts: Sequence[Prompt], depth: tuple[float, float]) -> list[list[float]]:
        """One vector per prompt: the model's hidden state at the prompt's last position (where the answer's first
        token is predicted), averaged over the layers between the fractions ``depth`` of the model's depth (0: the
        embeddings, 1: the last layer; ``(0.6, 0.6)``: one layer at 60 %).  The label head (``rag._label_head``) reads
        them.  Backends without hidden states raise ``GenretError``."""
        raise GenretError(f"generator {self.name!r} cannot give hidden states (use a local model)")

    def loglik(self, prompts: Sequence[Prompt], targets: Sequence[str]) -> list[float]:
        """log p(target | prompt) for each pair."""
        raise GenretError(f"generator {self.name!r} cannot score continuations (use a local model)")

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (for prompt budgets); backends without a tokenizer estimate."""
        return max(1, (len(text) + 3) // 4)

    def close(self) -> None:  # noqa: B027 - a default, not an abstract method: a local model holds no connection
        """Release connections or models this generator holds (default: nothing)."""


def estimated(generator: Generator, text: str, limit: int) -> Completion:
    """A completion whose count is ``generator.count_tokens`` of its text (truncated when that reaches ``limit``)."""
    tokens = generator.count_tokens(text) if text else 0
    return Completion(text, tokens, tokens >= limit)


class GenerationCancelled(GenretError):
    """Generation stopped early because its ``stop_when`` check said nobody waits for it any more."""


_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("genret_generation_stop", default=None)


@contextmanager
def stop_when(check: Callable[[], bool]) -> Iterator[None]:
    """Inside this block (this thread's context), generation stops at its next decoding step once ``check()`` is
    true and raises :class:`GenerationCancelled` (the local backend checks at every step and before each batch; a
    backend that does not check runs to its end)."""
    token = _STOP.set(check)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_check() -> Callable[[], bool] | None:
    """The ``stop_when`` check in force here, if any (for backends)."""
    return _STOP.get()


def raise_if_stopped(check: Callable[[], bool] | None) -> None:
    """``GenerationCancelled`` when ``check`` (a ``stop_check()`` taken earlier) says nobody waits any more."""
    if check is not None and check():
        raise GenerationCancelled("generation stopped: nobody waits for it any more")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def render_plain(prompt: Prompt) -> str:
    """A chat prompt as plain text, for models without a chat template (assistant turns read "Answer: …", and
    the text ends where the next answer starts)."""
    parts = [f"Answer: {m['content']}" if m["role"] == "assistant" else m["content"] for m in prompt]
    return "\n\n".join(parts) + "\nAnswer:"


def stream_until_stop(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass pieces through until a stop string appears (holding back text that may start one); after a stop the
    producer is left unread — its owner stops it (a local model's thread is cancelled, a network stream closed)."""
    if not any(stop):
        yield from (p for p in pieces if p)
        return
    hold = max(len(s) for s in stop) - 1
    buf = ""
    for piece in pieces:
        buf += piece
        cut = cut_at_stop(buf, stop)
        if len(cut) < len(buf):
            if cut:
                yield cut
            return
        if len(buf) > hold:
            yield buf[:len(buf) - hold]
            buf = buf[len(buf) - hold:]
    if buf:
        yield buf
