"""The RAG pipeline: retrieve passages, pick demonstrations, assemble the prompt, generate, map citations back.

``RagPipeline(retriever, generator, demos, config)``: ``answer`` / ``batch_answer`` give a frozen ``RagAnswer``
(answer, cited passages with KILT provenance, the passages and demonstrations used, the prompt); ``stream``
yields events for server-sent streaming.  Label tasks (fact checking) are answered by rank classification
when the generator can score continuations (the label the model finds most likely), else by generation.  Short
answers are spans copied from the passages when the generator can constrain decoding (``_spans``; ``span_answers``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genret.indexing import GenretError

from .._contract import Demo, Hit, Retriever
from ._generator import Generator, Prompt
from ._labels import Calibration, LabelScorer, with_labels
from ._prompt import ANSWER_TASKS, AnswerTask, build_prompt, one_line, parse_answer, resolve_answer_task
from ._spans import AnswerSpan, ground


class RagConfig(BaseModel):
    """Settings of the RAG pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    passages: int = Field(3, ge=0, le=50, description="retrieved passages put in the prompt (0: no retrieval)")
    demos: int = Field(2, ge=0, le=32, description="demonstrations put in the prompt")
    demo_source: Literal["udr", "bm25", "random"] = Field("udr", description="how demonstrations are chosen")
    max_passage_tokens: int = Field(200, ge=8)
    span_answers: bool = Field(True, description="short answers: decode only spans of the passages in the prompt "
                                                 "(when the generator can constrain decoding; else generate freely)")
    label_scoring: bool = Field(True, description="label tasks: pick the most likely label when possible")
    label_calibration: Calibration = Field(
        "none", description="label scoring: plain log-likelihood, or calibrated (content-free inputs or the "
                            "batch's mean label distribution: _labels); none measured best on mini-KILT train")
    labels: tuple[str, ...] = Field((), description="label tasks: this label set instead of the task's (empty: its)")


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage the answer cites: its number in the prompt and the hit (with KILT provenance)."""

    number: int
    hit: Hit


@dataclass(frozen=True, slots=True)
class RagAnswer:
    """The answer to one input, with what it was made from."""

    query: str
    task: str
    answer: str
    raw: str
    citations: tuple[Citation, ...]
    passages: tuple[Hit, ...]
    demos: tuple[Demo, ...]
    prompt: tuple[dict, ...]
    span: AnswerSpan | None = None  # a short answer found in a passage (a cited one first): where

    def to_dict(self) -> dict:
        return asdict(self)


class RagPipeline:
    """Retriever (optional) + demonstration source (optional) + generator.  Thread-safe when its parts are."""

    def __init__(self, generator: Generator, retriever: Retriever | None = None, demo_source: Any | None = None,
                 config: RagConfig | None = None, tasks: dict[str, AnswerTask] | None = None) -> None:
        self.generator = generator
        self.retriever = retriever
        self.demo_source = demo_source
        self.config = config or RagConfig()
        self.tasks = with_labels(tasks or ANSWER_TASKS, self.config.labels)
        self._labels = LabelScorer(generator, self.config.label_calibration)

    # --- the parts -------------------------------------------------------------------------------------
    def _retrieve(self, queries: Sequence[str], task: str | None) -> list[list[Hit]]:
        if self.retriever is None or self.config.passages == 0:
            return [[] for _ in queries]
        return self.retriever.batch_search(list(queries), self.config.passages, task=task)

    def _demos(self, queries: Sequence[str], task: str | None,
               exclude: Sequence[Sequence[str]] | None) -> list[list[Demo]]:
        if self.demo_source is None or self.config.demos == 0:
            return [[] for _ in queries]
        if not task:
            raise GenretError("demonstrations need a task (its training pool): pass task=…")
        found = self.demo_source.batch_search(list(queries), self.config.demos, task=task, exclude=exclude)
        return [list(reversed(d)) for d in found]  # most similar last, next to the input

    def prepare(self, queries: Sequence[str], task: str | None = None,
                exclude: Sequence[Sequence[str]] | None = None,
                history: Sequence[dict] = ()) -> list[tuple[Prompt, list[Hit], list[Demo]]]:
        """The prompt of each query with the passages and demonstrations it kept (after the token budget);
        ``history``: chat messages before each query (``build_prompt``)."""
        _, spec = resolve_answer_task(task, self.tasks)
        hits, demos = self._retrieve(queries, task), self._demos(queries, task, exclude)
        budget = self.generator.config.max_input_tokens - self.generator.config.max_new_tokens
        return [build_prompt(spec, q, demos=d, passages=h, history=history, count_tokens=self.generator.count_tokens,
                             budget=budget, max_passage_tokens=self.config.max_passage_tokens)
                for q, h, d in zip(queries, hits, demos)]

    def _label_by_score(self, spec: AnswerTask, prepared: list) -> list[str] | None:
        if spec.form != "label" or not spec.labels or not self.config.label_scoring:
            return None
        return self._labels.pick(spec, [p for p, _, _ in prepared], [len(h) for _, h, _ in prepared])

    def _answer(self, query: str, name: str, spec: AnswerTask, raw: str, prepared) -> RagAnswer:
        prompt, hits, demos = prepared
        answer, cited = parse_answer(spec, raw, len(hits))
        answer, cited, span = ground(spec.form, answer, cited, hits)
        return RagAnswer(query=query, task=name, answer=answer, raw=raw,
                         citations=tuple(Citation(n, hits[n - 1]) for n in cited), passages=tuple(hits),
                         demos=tuple(demos), prompt=tuple(prompt), span=span)

    def _spans(self, spec: AnswerTask, prepared: list, queries: Sequence[str],
               max_new_tokens: int | None) -> list[str] | None:
        """Short answers copied from the passages (constrained decoding), or None (other forms, no passages,
        ``span_answers`` off, or a generator that cannot constrain decoding)."""
        if spec.form != "short" or not self.config.span_answers or not all(h for _, h, _ in prepared):
            return None
        try:
            return self.generator.generate_spans([p for p, _, _ in prepared],
                                                 [[one_line(h.text or "") for h in hits] for _, hits, _ in prepared],
                                                 max_new_tokens=max_new_tokens, avoid=queries)
        except GenretError:
            return None

    # --- public ----------------------------------------------------------------------------------------
    def batch_answer(self, queries: Sequence[str], *, task: str | None = None,
                     exclude: Sequence[Sequence[str]] | None = None, max_new_tokens: int | None = None,
                     stop: Sequence[str] = (), history: Sequence[dict] = ()) -> list[RagAnswer]:
        """One answer per query, in order (``exclude``: demonstration ids never used, per query;
        ``max_new_tokens`` / ``stop``: passed to the generator; ``history``: the chat messages before each query
        — system messages and earlier turns —, in the prompt as far as the token budget allows)."""
        if any(not q.strip() for q in queries):
            raise GenretError("empty input")
        name, spec = resolve_answer_task(task, self.tasks)
        prepared = self.prepare(queries, task, exclude, history)
        prompts = [p for p, _, _ in prepared]
        raws = self._label_by_score(spec, prepared)
        if raws is None:
            raws = self._spans(spec, prepared, queries, max_new_tokens)
        if raws is None:
            raws = self.generator.generate(prompts, max_new_tokens=max_new_tokens, stop=stop)
        return [self._answer(q, name, spec, raw, prep) for q, raw, prep in zip(queries, raws, prepared)]

    def answer(self, query: str, *, task: str | None = None, max_new_tokens: int | None = None,
               stop: Sequence[str] = (), history: Sequence[dict] = ()) -> RagAnswer:
        """The answer to one query."""
        return self.batch_answer([query], task=task, max_new_tokens=max_new_tokens, stop=stop, history=history)[0]

    def stream_events(self, query: str, *, task: str | None = None, max_new_tokens: int | None = None,
                      stop: Sequence[str] = (), history: Sequence[dict] = ()) -> Iterator[tuple[str, Any]]:
        """Typed events: ``("passages", (hits, demos))``, then ``("token", text)`` pieces, then
        ``("answer", RagAnswer)`` (label tasks send the label as one token).  Closing the iterator early
        closes the generator's stream (a local model stops at its next decoding step)."""
        if not query.strip():
            raise GenretError("empty input")
        name, spec = resolve_answer_task(task, self.tasks)
        prepared = self.prepare([query], task, history=history)[0]
        prompt, hits, demos = prepared
        yield "passages", (hits, demos)
        labels = self._label_by_score(spec, [prepared]) or self._spans(spec, [prepared], [query], max_new_tokens)
        if labels is not None:
            raw = labels[0]
            yield "token", raw
        else:
            pieces = []
            with closing(self.generator.stream(prompt, max_new_tokens=max_new_tokens, stop=stop)) as stream:
                for piece in stream:
                    pieces.append(piece)
                    yield "token", piece
            raw = "".join(pieces).strip()
        yield "answer", self._answer(query, name, spec, raw, prepared)

    def stream(self, query: str, *, task: str | None = None, max_new_tokens: int | None = None,
               stop: Sequence[str] = ()) -> Iterator[dict]:
        """Events: ``{"event": "passages", …}``, then ``{"event": "token", "text": …}`` pieces, then
        ``{"event": "answer", …}`` with the parsed answer and citations (label tasks send the label as one token)."""
        with closing(self.stream_events(query, task=task, max_new_tokens=max_new_tokens, stop=stop)) as events:
            for kind, value in events:
                if kind == "passages":
                    hits, demos = value
                    yield {"event": "passages", "passages": [h.to_dict() for h in hits],
                           "demos": [d.to_dict() for d in demos]}
                elif kind == "token":
                    yield {"event": "token", "text": value}
                else:
                    yield {"event": "answer", "answer": value.answer, "task": value.task,
                           "citations": [{"number": c.number, **c.hit.to_dict()} for c in value.citations]}
