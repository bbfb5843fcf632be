"""RAG over the served indexes, with no knowledge of HTTP: the generator, the demonstration sources, the pipelines.

One generator (``settings.generator``) is shared by all requests, loaded on first use (the app loads and warms it
at start unless ``server.lazy``: ``_warmup``); demonstration sources over ``settings.demos``, one per kind, loaded
on first use.  A :class:`RagSpec` is everything a RAG request asks besides its query — requests with equal specs
can share one ``batch_answer`` call (``_batcher``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genret.core import GenretError
from genret.retrieval import Retriever
from genret.retrieval.demos import DemoSource
from genret.retrieval.rag import Generator, RagAnswer, RagPipeline, default_demos, load_generator, prompt_size

from ._checks import check_queries
from ._errors import RequestError, Unavailable

if TYPE_CHECKING:
    from ._pool import IndexPool
    from ._settings import Settings

__all__ = ["RagOutcome", "RagService", "RagSpec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RagSpec:
    """A RAG request but its query (hashable: the micro-batching key)."""

    index: str
    retriever: str | None  # None: no retrieval
    task: str | None
    passages: int
    demos: int
    demo_source: str
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()  # a chat's (role, text) messages before the query
    rerank: bool = True  # False: the retriever's first stage only (no reranking stage)

    def messages(self) -> list[dict[str, str]]:
        """``history`` as chat messages (``RagPipeline``'s ``history``)."""
        return [{"role": role, "content": text} for role, text in self.history]


@dataclass(frozen=True, slots=True)
class RagOutcome:
    """An answer and its token counts (the generator's own count of new tokens, or its tokenizer's estimate)."""

    answer: RagAnswer
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int

    @property
    def truncated(self) -> bool:
        """The generator stopped at ``max_new_tokens`` (OpenAI's finish_reason "length"); an answer it did not write
        token by token (a span, a label): when it holds that many tokens."""
        if self.answer.tokens is not None:
            return self.answer.truncated
        return self.completion_tokens >= self.max_new_tokens


class RagService:
    """Answers over ``pool``'s retrievers with the one generator and the demonstration pools (``demo_tasks``)."""

    def __init__(self, settings: Settings, pool: IndexPool) -> None:
        self.settings, self.pool = settings, pool
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()
        self._demos_by_task: dict[tuple[str, str | None], int] = {}
        self._demo_sources: dict[str, DemoSource] = {}
        self.demo_tasks: list[str] = []
        if settings.demos is not None:
            from genret.retrieval.demos import list_tasks

            self.demo_tasks = list_tasks(settings.demos)  # a missing directory fails here, at start
            if not self.demo_tasks:
                raise GenretError(f"{settings.demos} holds no demonstration pool (genret index-demos)")

    def spec(self, query: str, *, index: str | None = None, retriever: str | None = None, task: str | None = None,
             passages: int | None = None, demos: int | None = None, demo_source: str | None = None,
             max_new_tokens: int | None = None, stop: Sequence[str] = (),
             history: Sequence[tuple[str, str]] = (), rerank: bool = True) -> RagSpec:
        """Check a RAG request and fill in the defaults (``settings.rag``); cheap, loads nothing.  ``max_new_tokens``:
        at most ``server.max_tokens``; ``history``: a chat's ``(role, text)`` messages before the query; ``rerank``
        False: the passages from the retriever's first stage only."""
        check_queries([query], self.settings.server)
        rag = self.settings.rag
        passages = rag.passages if passages is None else passages
        index, name = self.pool.resolve(index, retriever)
        if demos is None:
            demos = self._default_demos(task) if task in self.demo_tasks else 0
        elif demos > 0:
            if self.settings.demos is None:
                raise RequestError("demonstrations need a demonstrations directory, and this server has none "
                                   "(settings demos / GENRET_DEMOS); ask with demos 0")
            if not task:
                raise RequestError(f"demonstrations need a task (its pool); pools: {self.demo_tasks}")
            if task not in self.demo_tasks:
                raise RequestError(f"no demonstration pool for task {task!r}; pools: {self.demo_tasks}")
        if any(not s for s in stop):
            raise RequestError("stop strings must not be empty")
        cap = self.settings.server.max_tokens
        if max_new_tokens is not None and max_new_tokens > cap:
            raise RequestError(f"max_tokens {max_new_tokens} is over this server's limit of {cap} new tokens "
                               "(server.max_tokens)", param="max_tokens")
        return RagSpec(index=index, retriever=name if passages > 0 else None, task=task, passages=passages,
                       demos=demos, demo_source=demo_source or rag.demo_source, max_new_tokens=max_new_tokens,
                       stop=tuple(stop), history=tuple(history), rerank=rerank)

    # ---- the generator and the demonstration sources (blocking: call it off the event loop) -----------------
    def generator(self, *, log_failure: bool = True) -> Generator:
        """The one generator of this service, loaded on first use (a failure to load it: ``Unavailable``)."""
        with self._generator_lock:
            if self._generator is None:
                try:
                    self._generator = load_generator(self.settings.generator)
                except Exception as exc:  # the server's configuration, not the request: 503
                    if log_failure:
                        log.error("loading the generator %r failed: %s: %s", self.settings.generator.model,
                                  type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                    raise Unavailable(f"the generator could not be loaded: {type(exc).__name__}: {exc}",
                                      self.settings.server.retry_after_s) from exc
            return self._generator

    def _default_demos(self, task: str | None) -> int:
        """``default_demos`` for the generator's model (the one in use, else the configured one: nothing is
        loaded), kept per model and task (a head file is read once)."""
        with self._generator_lock:
            model = self._generator.config.model if self._generator is not None else self.settings.generator.model
        key = (model, task)
        if key not in self._demos_by_task:
            self._demos_by_task[key] = default_demos(self.settings.rag, model, task)
        return self._demos_by_task[key]

    def use_generator(self, generator: Generator | None) -> Generator | None:
        """Answer with ``generator`` from now on (None: load ``settings.generator`` on next use); returns the one
        it replaces, if any, which the caller closes."""
        with self._generator_lock:
            old, self._generator = self._generator, generator
            return old

    def demo_source(self, kind: str) -> DemoSource:
        with self._generator_lock:
            if kind not in self._demo_sources:
                from genret.retrieval.demos import load_demo_source

                self._demo_sources[kind] = load_demo_source(self.settings.demos, kind,
                                                            device=self.settings.retrieval.dense.device)
            return self._demo_sources[kind]

    # ---- answers (blocking: call it off the event loop) -----------------------------------------------------
    @contextmanager
    def pipeline(self, spec: RagSpec) -> Iterator[RagPipeline]:
        """The RAG pipeline of ``spec`` over the shared generator, retriever (its snapshot kept open until the
        block ends) and demonstration source."""
        if spec.retriever and spec.passages:
            with self.pool.using(spec.index, spec.retriever, spec.rerank) as retriever:
                yield self._pipeline(spec, retriever)
        else:
            yield self._pipeline(spec, None)

    def _pipeline(self, spec: RagSpec, retriever: Retriever | None) -> RagPipeline:
        generator = self.generator()
        demos = self.demo_source(spec.demo_source) if spec.demos else None
        config = self.settings.rag.model_copy(update={"passages": spec.passages, "demos": spec.demos,
                                                      "demo_source": spec.demo_source})
        return RagPipeline(generator, retriever, demos, config)

    @staticmethod
    def _outcome(generator: Generator, spec: RagSpec, answer: RagAnswer) -> RagOutcome:
        completion = answer.tokens if answer.tokens is not None else \
            generator.count_tokens(answer.raw) if answer.raw else 0
        return RagOutcome(answer, prompt_size(list(answer.prompt), generator.count_tokens), completion,
                          spec.max_new_tokens or generator.config.max_new_tokens)

    def batch(self, queries: Sequence[str], spec: RagSpec) -> list[RagOutcome]:
        """One answer per (checked) query, as one ``batch_answer`` call: retrieval and generation batched."""
        with self.pipeline(spec) as pipeline:
            answers = pipeline.batch_answer(list(queries), task=spec.task, max_new_tokens=spec.max_new_tokens,
                                            stop=spec.stop, history=spec.messages())
            return [self._outcome(pipeline.generator, spec, a) for a in answers]

    def stream(self, query: str, spec: RagSpec) -> Iterator[tuple[str, object]]:
        """``("passages", (hits, demos))``, ``("token", text)``…, then ``("answer", RagOutcome)``.  Closing it
        early stops the generation."""
        with self.pipeline(spec) as pipeline:
            events = pipeline.stream_events(query, task=spec.task, max_new_tokens=spec.max_new_tokens,
                                            stop=spec.stop, history=spec.messages())
            try:
                for kind, value in events:
                    yield kind, (self._outcome(pipeline.generator, spec, value) if kind == "answer" else value)
            finally:
                events.close()

    def close(self) -> None:
        for obj in (self._generator, *self._demo_sources.values()):
            if obj is not None:
                obj.close()
        self._generator = None
        self._demo_sources.clear()
