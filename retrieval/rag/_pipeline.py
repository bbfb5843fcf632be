"""The RAG pipeline: retrieve passages, pick demonstrations, assemble the prompt, generate, map citations back.

``RagPipeline(retriever, generator, demos, config)``: ``answer`` / ``batch_answer`` give a frozen ``RagAnswer``
(answer, cited passages with KILT provenance, the passages and demonstrations used, the prompt); ``stream``
yields events for server-sent streaming.  Label tasks (fact checking) are answered by rank classification
when the generator can score continuations (the label the model finds most likely), else by generation.  Short
answers are spans copied from the passages: chosen by the span reader (``_reader``) when the generator can score
continuations, else decoded under a constraint (``_spans``) when it can do that (``span_answers``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genret.core import ConfigError, GenretError

from .._contract import Demo, Hit, Retriever
from ._generator import Completion, GenerationCancelled, Generator, Prompt, estimated
from ._label_head import LabelHead
from ._labels import Calibration, LabelScorer, with_labels
from ._prompt import ANSWER_TASKS, AnswerTask, build_prompt, one_line, parse_answer, readable, resolve_answer_task
from ._reader import SpanReader
from ._spans import AnswerSpan, ground


class RagConfig(BaseModel):
    """Settings of the RAG pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    passages: int = Field(3, ge=0, le=50, description="retrieved passages put in the prompt (0: no retrieval)")
    demos: int = Field(2, ge=0, le=32, description="demonstrations put in the prompt")
    demo_source: Literal["udr", "bm25", "random"] = Field("udr", description="how demonstrations are chosen")
    max_passage_tokens: int = Field(200, ge=8)
    span_answers: bool = Field(True, description="short answers: copy a span of the passages in the prompt "
                                                 "(when the generator can score or constrain decoding; else generate "
                                                 "freely)")
    span_reader: str = Field("packaged", description="span answers: 'packaged' (the span reader fitted for the "
                                                     "packaged model), a reader JSON file (`genret train reader`), "
                                                     "or 'greedy' (constrained greedy decoding, no reader)")
    label_scoring: bool = Field(True, description="label tasks: pick the most likely label when possible")
    label_calibration: Calibration = Field(
        "none", description="label scoring: plain log-likelihood, or calibrated (content-free inputs or the "
                            "batch's mean label distribution: _labels); none measured best on mini-KILT train")
    labels: tuple[str, ...] = Field((), description="label tasks: this label set instead of the task's (empty: its)")
    label_head: str = Field("packaged", description="label tasks: 'packaged' (the label head fitted for the packaged "
                                                    "model, used with that model and its labels), a head JSON file "
                                                    "(`genret train labels`), or 'none' (rank classification)")


def _label_head(config: RagConfig, model: str | None) -> LabelHead | None:
    """``config.label_head`` loaded (None: none); a head file fitted for another model than ``model`` is refused."""
    head = config.label_head
    found = None if head == "none" else LabelHead.default() if head == "packaged" else LabelHead.load(head)
    if head not in ("none", "packaged") and model is not None and found.model != model:
        raise ConfigError(f"label head {head} was fitted for the model {found.model!r}, not {model!r}: fit one "
                          "with `genret train labels`")
    return found


def _scores_labels(spec: AnswerTask, config: RagConfig) -> bool:
    """Whether ``spec``'s answers are labels picked by score (the label head or rank classification)."""
    return spec.form == "label" and bool(spec.labels) and config.label_scoring


def default_demos(config: RagConfig, model: str, task: str | None) -> int:
    """The demonstrations a question of ``task`` gets when it asks for none in particular: ``config.demos``, except
    0 for a label task whose label head (for ``model``) reads prompts without demonstrations only — with them the
    head would step aside for rank classification, which answered SUPPORTS to nearly every mini-KILT claim (README,
    "Labels")."""
    _, spec = resolve_answer_task(task, with_labels(ANSWER_TASKS, config.labels))
    if not _scores_labels(spec, config):
        return config.demos
    head = _label_head(config, model)
    if head is not None and head.applies(model, spec.labels, False) and not head.applies(model, spec.labels, True):
        return 0
    return config.demos


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage the answer cites: its number in the prompt and the hit (with KILT provenance)."""

    number: int
    hit: Hit


# How an answer was chosen: a span the span reader picked from the scored candidates, a span decoded under the
# passages' constraint, a label by the label head or by the labels' scores (rank classification), or text the model
# wrote (a label parsed from it) — where the generator can score, constrain or give hidden states, the first that
# applies; the rest is the fallback
METHODS = ("span reader", "constrained span", "label head", "label scores", "free text")


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
    reply: str = ""  # the answer as a person reads it: with its citations [n] (_prompt.readable)
    tokens: int | None = None  # new tokens the generator wrote for it (None: not counted)
    truncated: bool = False  # the generator stopped at max_new_tokens (raw is cut short)
    method: str = "free text"  # how the answer was chosen: one of ``METHODS``
    # a label answer: the probability the deciding model (label head, or the labels' scores) gives it over the
    # label set; None for other answers.  Read with the head's held-out record (docs: "Labels")
    confidence: float | None = None

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
        self._head = _label_head(self.config, generator.config.model if generator is not None else None)
        reader = self.config.span_reader
        self._reader = (None if reader == "greedy" else SpanReader.default() if reader == "packaged"
                        else SpanReader.load(reader))

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

    def _label_by_score(self, spec: AnswerTask, prepared: list) -> tuple[list[tuple[str, float]], str] | None:
        """``([(label, its probability)], method)``: by the label head where it applies (this model, this label set,
        prompts with demonstrations or without as when it was fitted), else by rank classification;
        None: not a label task, or a generator that can do neither (the caller generates)."""
        if not _scores_labels(spec, self.config):
            return None
        prompts = [p for p, _, _ in prepared]
        head = self._head
        shown = [bool(d) for _, _, d in prepared]
        if head is not None and len(set(shown)) == 1 and head.applies(self.generator.config.model, spec.labels,
                                                                     shown[0]):
            try:
                return head.decide(self.generator.prompt_features(prompts, head.depth)), "label head"
            except GenerationCancelled:
                raise
            except GenretError:  # a backend without hidden states: rank classification
                pass
        labels = self._labels.pick(spec, prompts, [len(h) for _, h, _ in prepared])
        return None if labels is None else (labels, "label scores")

    def label_features(self, queries: Sequence[str], *, task: str | None = None,
                       depth: tuple[float, float] = (0.6, 0.6),
                       exclude: Sequence[Sequence[str]] | None = None) -> list[list[float]]:
        """The label head's input for each query under this pipeline's prompt, passages and demonstrations (never
        those in ``exclude``, per query: a training claim is not its own demonstration), for fitting a head."""
        return self.generator.prompt_features([p for p, _, _ in self.prepare(queries, task, exclude)], depth)

    def _answer(self, query: str, name: str, spec: AnswerTask, raw: str, prepared, copied: int = 0,
                done: Completion | None = None, method: str = "free text",
                confidence: float | None = None) -> RagAnswer:
        prompt, hits, demos = prepared
        cut = done is None or done.truncated  # a free answer cut by the token budget ends at a sentence end
        answer, cited = parse_answer(spec, raw, len(hits), truncated=cut)
        answer, cited, span = ground(spec.form, answer, cited or ([copied] if copied else []), hits)
        return RagAnswer(query=query, task=name, answer=answer, raw=raw,
                         citations=tuple(Citation(n, hits[n - 1]) for n in cited), passages=tuple(hits),
                         demos=tuple(demos), prompt=tuple(prompt), span=span,
                         reply=readable(spec, raw, answer, cited, len(hits), truncated=cut),
                         tokens=done.tokens if done is not None else None,
                         truncated=done is not None and done.truncated, method=method,
                         confidence=None if confidence is None else round(confidence, 4))

    def _spans(self, spec: AnswerTask, prepared: list, queries: Sequence[str],
               max_new_tokens: int | None) -> list[tuple[str, int, str]] | None:
        """Short answers copied from the passages, each with the number of the passage it was copied from (0: not
        known) and the method — chosen by the span reader where the generator can score, else by constrained
        decoding —, or None (other forms, no passages, ``span_answers`` off, or a generator that can do neither)."""
        if spec.form != "short" or not self.config.span_answers or not all(h for _, h, _ in prepared):
            return None
        texts = [[one_line(h.text or "") for h in hits] for _, hits, _ in prepared]
        out: list[tuple[str, int, str] | None] = [None] * len(prepared)
        if self._reader is not None:
            try:
                for i, ((prompt, hits, _), t, q) in enumerate(zip(prepared, texts, queries)):
                    best = self._reader.read(self.generator, prompt, t, q, [h.provenance.title for h in hits],
                                             max_tokens=max_new_tokens)
                    out[i] = (best.text, best.number, "span reader") if best else None
            except GenerationCancelled:
                raise
            except GenretError:  # a generator that cannot score: constrained decoding below
                pass
        rest = [i for i, o in enumerate(out) if o is None]  # no reader, or no candidate in the focus sentences
        if rest:
            try:
                raws = self.generator.generate_spans([prepared[i][0] for i in rest], [texts[i] for i in rest],
                                                     max_new_tokens=max_new_tokens, avoid=[queries[i] for i in rest])
            except GenerationCancelled:
                raise
            except GenretError:
                return None
            for i, raw in zip(rest, raws):
                out[i] = (raw, 0, "constrained span")
        return out

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
        copied = self._spans(spec, prepared, queries, max_new_tokens)
        done: list[Completion | None] = [None] * len(queries)
        sure: list[float | None] = [None] * len(queries)
        if copied is None:
            labels = self._label_by_score(spec, prepared)
            if labels is None:
                done = list(self.generator.complete(prompts, max_new_tokens=max_new_tokens, stop=stop))
                copied = [(c.text, 0, "free text") for c in done]
            else:
                copied = [(label, 0, labels[1]) for label, _ in labels[0]]
                sure = [p for _, p in labels[0]]
        return [self._answer(q, name, spec, raw, prep, n, d, how, p)
                for q, (raw, n, how), prep, d, p in zip(queries, copied, prepared, done, sure)]

    def span_candidates(self, query: str, *, task: str | None = None, reader: SpanReader | None = None) -> list:
        """The span reader's candidates for ``query`` (``_reader.Candidate``: text, passage number, offsets, features)
        under this pipeline's prompt and passages; ``reader``: another reader's candidate settings (for fitting)."""
        reader = reader or self._reader or SpanReader()
        prompt, hits, _ = self.prepare([query], task)[0]
        if not hits:
            return []
        return reader.candidates(self.generator, prompt, [one_line(h.text or "") for h in hits], query,
                                 [h.provenance.title for h in hits])

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
        copied = self._spans(spec, [prepared], [query], max_new_tokens)
        labels = self._label_by_score(spec, [prepared])
        number, done, method, sure = 0, None, "free text", None
        if copied is not None or labels is not None:
            if copied is not None:
                raw, number, method = copied[0]
            else:
                (raw, sure), method = labels[0][0], labels[1]
            yield "token", raw
        else:
            pieces = []
            with closing(self.generator.stream_complete(prompt, max_new_tokens=max_new_tokens, stop=stop)) as stream:
                while True:
                    try:
                        piece = next(stream)
                    except StopIteration as end:  # the stream's return value: its Completion
                        done = end.value
                        break
                    pieces.append(piece)
                    yield "token", piece
            raw = "".join(pieces).strip()
            if not isinstance(done, Completion):  # a stream_complete that returns nothing
                done = estimated(self.generator, raw, max_new_tokens or self.generator.config.max_new_tokens)
        yield "answer", self._answer(query, name, spec, raw, prepared, number, done, method, sure)

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
                    yield {"event": "answer", "answer": value.answer, "task": value.task, "method": value.method,
                           "confidence": value.confidence,
                           "citations": [{"number": c.number, **c.hit.to_dict()} for c in value.citations]}
