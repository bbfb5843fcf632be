"""The search service: opened indexes, their retrievers, and RAG over them, with no knowledge of HTTP.

Indexes are opened from the configured directories only, and addressed by name (the directory's base name): a
name is a dictionary key, never a path, so no request can make the service open anything.  Each is served as one
consistent snapshot (``_snapshots``): a new version written under it is swapped in whole, never mixed with the
old one.  Retrievers are loaded on first use and kept with their snapshot (a hybrid over the members it serves);
RAG: one generator (``settings.generator``) shared by all requests, loaded on first use; the app loads and warms
them all at start unless ``server.lazy`` (``_warmup``).  Demonstration sources over ``settings.demos`` per kind,
loaded on first use.  A ``RagSpec`` is everything a RAG request asks besides its query — requests with equal
specs can share one ``batch_answer`` call.  The OpenAI-compatible routes name an index and retriever by a model
id (``INDEX`` or ``INDEX/RETRIEVER``: :meth:`models`, :meth:`resolve_model`), and embed with an index's dense
encoder (:meth:`embed`, through ``_embeddings``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genret.indexing import GenretError, Index, NotFoundError
from genret.retrieval import TASKS, Hit, Retriever, available_retrievers, load_retriever, retriever_granularities
from genret.retrieval.demos import DemoSource
from genret.retrieval.rag import Generator, RagAnswer, RagPipeline, default_demos, load_generator, prompt_size

from ._embeddings import Embedder
from ._errors import ModelNotFound, RequestError, Unavailable
from ._settings import Settings
from ._snapshots import Snapshot, Snapshots, StaleSnapshot
from ._warmup import check_names, compose_hybrid, load, served_parts, warm_retriever

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RagOutcome", "RagSpec", "RequestError", "SearchService"]

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

    def messages(self) -> list[dict[str, str]]:
        """``history`` as chat messages (``RagPipeline``'s ``history``)."""
        return [{"role": role, "content": text} for role, text in self.history]


@dataclass(frozen=True, slots=True)
class RagOutcome:
    """An answer and its token counts (the generator's tokenizer, or its estimate)."""

    answer: RagAnswer
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int

    @property
    def truncated(self) -> bool:
        """The completion probably hit ``max_new_tokens`` (OpenAI's finish_reason "length")."""
        return self.completion_tokens >= self.max_new_tokens

class SearchService:
    """Opens every configured index once; retrievers are created on first use and kept."""

    def __init__(self, settings: Settings) -> None:
        if not settings.indexes:
            raise GenretError("no index to serve: give at least one index directory")
        self.settings = settings
        self._ray = None
        if settings.ray is not None:  # the retrievers' index parts in Ray actors (genret serve --ray)
            from ._ray_serving import RayBackend

            self._ray = RayBackend(settings.ray)
        self.snapshots = Snapshots(list(settings.indexes), self._load, interval=settings.server.reload_interval_s,
                                   warm=None if settings.server.lazy else warm_retriever)
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()
        self._demos_by_task: dict[tuple[str, str | None], int] = {}
        self._demo_sources: dict[str, DemoSource] = {}
        self.embedder = Embedder(settings.retrieval.dense.device, settings.retrieval.dense.batch_size)
        self.demo_tasks: list[str] = []
        if settings.demos is not None:
            from genret.retrieval.demos import list_tasks

            self.demo_tasks = list_tasks(settings.demos)  # a missing directory fails here, at start
            if not self.demo_tasks:
                raise GenretError(f"{settings.demos} holds no demonstration pool (genret index-demos)")

    def _load(self, snap: Snapshot, name: str) -> Retriever:
        if self._ray is not None:
            return self._ray.load(snap.index, name, self.settings.retrieval)
        if name == "hybrid":  # over the members this snapshot serves: no second copy of each model
            return compose_hybrid(snap.index, self.settings.retrieval, lambda m: self.snapshots.retriever(snap, m))
        return load_retriever(snap.index, name, self.settings.retrieval)

    @property
    def indexes(self) -> dict[str, Index]:
        """The served indexes by name, each as of its current snapshot."""
        return {name: snap.index for name, snap in self.snapshots.current.items()}

    @property
    def default_index(self) -> str:
        return next(iter(self.snapshots.current))

    @property
    def loaded(self) -> int:
        """Retrievers loaded so far (over the current snapshots)."""
        return sum(len(snap.retrievers) for snap in self.snapshots.current.values())

    def describe(self) -> list[dict]:
        tasks = sorted({*self.settings.retrieval.generative.prompts, *TASKS})
        return [{"name": name, "units": len(ix.store), "unit_kind": ix.manifest.units.kind,
                 "retrievers": available_retrievers(ix, self.settings.retrieval), "tasks": tasks,
                 "demo_tasks": self.demo_tasks}
                for name, ix in self.indexes.items()]

    # ---- names -> (index, retriever), without loading anything ----------------------------------------------
    def resolve(self, index: str | None, retriever: str | None) -> tuple[str, str]:
        """Canonical ``(index name, retriever name)``; ``None`` picks the default.  Cheap (no model loads)."""
        index = self.default_index if index is None else index
        if index not in self.indexes:
            raise NotFoundError(f"unknown index {index!r}; served: {sorted(self.indexes)}")
        names = available_retrievers(self.indexes[index], self.settings.retrieval)
        if retriever is None:
            if not names:
                raise NotFoundError(f"index {index!r} has no component any retriever can use")
            return index, names[0]
        if retriever not in names:
            raise NotFoundError(f"unknown retriever {retriever!r} for index {index!r}; available: {names}")
        return index, retriever

    def check(self, queries: Sequence[str], k: int, retriever: str, granularity: str | None = None,
              index: str | None = None) -> None:
        """Refuse bad requests with a clear :class:`RequestError` before any model work (``retriever`` of
        ``index``, as :meth:`resolve` returns them; None: the default index)."""
        cfg = self.settings.server
        if not 1 <= k <= cfg.max_k:
            raise RequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
        self.check_queries(queries)
        if granularity is not None:
            ix = self.indexes[self.default_index if index is None else index]
            takes = {name: retriever_granularities(ix, name, self.settings.retrieval)
                     for name in available_retrievers(ix, self.settings.retrieval)}
            if granularity not in takes.get(retriever, ()):
                own = [name for name, gs in takes.items() if granularity in gs and name != "hybrid"] or ["generative"]
                also = " (or a hybrid with it)" if "hybrid" in takes else ""
                raise RequestError(f"granularity applies to the {' / '.join(own)} retriever{also}, not {retriever!r}")

    def check_queries(self, queries: Sequence[str]) -> None:
        cfg = self.settings.server
        if not queries:
            raise RequestError("no query given")
        if len(queries) > cfg.max_batch:
            raise RequestError(f"at most {cfg.max_batch} queries per batch, got {len(queries)}")
        for i, q in enumerate(queries):
            where = f"query {i}" if len(queries) > 1 else "query"
            if not q.strip():
                raise RequestError(f"{where} is empty")
            if len(q) > cfg.max_query_chars:
                raise RequestError(f"{where} longer than {cfg.max_query_chars} characters ({len(q)})")
            try:
                q.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError(f"{where} is not valid Unicode (lone surrogate)") from None

    def rag_spec(self, query: str, *, index: str | None = None, retriever: str | None = None,
                 task: str | None = None, passages: int | None = None, demos: int | None = None,
                 demo_source: str | None = None, max_new_tokens: int | None = None,
                 stop: Sequence[str] = (), history: Sequence[tuple[str, str]] = ()) -> RagSpec:
        """Check a RAG request and fill in the defaults (``settings.rag``); cheap, loads nothing.  ``max_new_tokens``:
        at most ``server.max_tokens``; ``history``: a chat's ``(role, text)`` messages before the query."""
        self.check_queries([query])
        rag = self.settings.rag
        passages = rag.passages if passages is None else passages
        index, name = self.resolve(index, retriever)
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
                       stop=tuple(stop), history=tuple(history))

    # ---- model work (blocking: call it off the event loop) --------------------------------------------------
    @contextmanager
    def using(self, index: str | None, name: str | None) -> Iterator[Retriever]:
        """Retriever ``name`` of ``index``'s current snapshot, which stays open until the block ends (a new
        version swapped in meanwhile serves the next requests)."""
        index, name = self.resolve(index, name)
        for _ in range(3):
            with self.snapshots.use(index) as snap:
                try:
                    r = self.snapshots.retriever(snap, name)
                except StaleSnapshot:
                    self.snapshots.refresh(index)
                    continue
                yield r
                return
        raise Unavailable(f"index {index!r} keeps changing on disk; try again", self.settings.server.retry_after_s)

    def retriever(self, index: str | None, name: str | None) -> Retriever:
        """Retriever ``name`` of ``index``'s current snapshot (loaded on first use); for work that spans a
        request, prefer :meth:`using`."""
        with self.using(index, name) as r:
            return r

    def use_retriever(self, index: str | None, name: str | None, retriever: Retriever | None) -> Retriever | None:
        """Serve ``retriever`` as ``name`` on ``index`` from now on (one built elsewhere, or a test's stand-in;
        None: load it again on next use); returns the one it replaces, if any, which the caller closes."""
        index, name = self.resolve(index, name)
        snap = self.snapshots.current[index]
        with snap.lock:
            old = snap.retrievers.pop(name, None)
            if retriever is not None:
                snap.retrievers[name] = retriever
            return old

    def stale_indexes(self) -> dict[str, str]:
        """``{index: why}`` for indexes not served at their on-disk version (``/readyz`` answers 503)."""
        return self.snapshots.stale()

    def batch_search(self, queries: Sequence[str], k: int, index: str | None = None, retriever: str | None = None,
                     task: str | None = None, granularity: str | None = None) -> list[list[Hit]]:
        """One hit list per query (unchecked: :meth:`check` first)."""
        with self.using(index, retriever) as r:
            if granularity is not None:
                return r.batch_search(list(queries), k, task=task, granularity=granularity)
            return r.batch_search(list(queries), k, task=task)

    def search(self, query: str, k: int, index: str | None = None, retriever: str | None = None,
               task: str | None = None, granularity: str | None = None) -> tuple[str, str, list[Hit]]:
        """``(index name, retriever name, hits)``, checked; blocking."""
        index, retriever = self.resolve(index, retriever)
        self.check([query], k, retriever, granularity, index)
        return index, retriever, self.batch_search([query], k, index, retriever, task, granularity)[0]

    # ---- RAG (blocking: call it off the event loop) ---------------------------------------------------------
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

    def demo_source(self, kind: str):
        with self._generator_lock:
            if kind not in self._demo_sources:
                from genret.retrieval.demos import load_demo_source

                self._demo_sources[kind] = load_demo_source(self.settings.demos, kind,
                                                            device=self.settings.retrieval.dense.device)
            return self._demo_sources[kind]

    @contextmanager
    def pipeline(self, spec: RagSpec) -> Iterator[RagPipeline]:
        """The RAG pipeline of ``spec`` over the shared generator, retriever (its snapshot kept open until the
        block ends) and demonstration source."""
        if spec.retriever and spec.passages:
            with self.using(spec.index, spec.retriever) as retriever:
                yield self._pipeline(spec, retriever)
        else:
            yield self._pipeline(spec, None)

    def _pipeline(self, spec: RagSpec, retriever: Retriever | None) -> RagPipeline:
        generator = self.generator()
        demos = self.demo_source(spec.demo_source) if spec.demos else None
        rag = self.settings.rag
        config = rag.model_copy(update={"passages": spec.passages, "demos": spec.demos,
                                        "demo_source": spec.demo_source})
        return RagPipeline(generator, retriever, demos, config)

    def _outcome(self, generator: Generator, spec: RagSpec, answer: RagAnswer) -> RagOutcome:
        completion = generator.count_tokens(answer.raw) if answer.raw else 0
        return RagOutcome(answer, prompt_size(list(answer.prompt), generator.count_tokens), completion,
                          spec.max_new_tokens or generator.config.max_new_tokens)

    def batch_rag(self, queries: Sequence[str], spec: RagSpec) -> list[RagOutcome]:
        """One answer per (checked) query, as one ``batch_answer`` call: retrieval and generation batched."""
        with self.pipeline(spec) as pipeline:
            answers = pipeline.batch_answer(list(queries), task=spec.task, max_new_tokens=spec.max_new_tokens,
                                            stop=spec.stop, history=spec.messages())
            return [self._outcome(pipeline.generator, spec, a) for a in answers]

    def stream_rag(self, query: str, spec: RagSpec) -> Iterator[tuple[str, object]]:
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

    # ---- OpenAI-compatible model ids (cheap: nothing is loaded) ------------------------------------------------
    def models(self) -> list[tuple[str, str, str]]:
        """``(model id, index, retriever)``: per served index ``INDEX`` (its default retriever), then
        ``INDEX/RETRIEVER`` for each retriever it offers."""
        out = []
        for index, ix in self.indexes.items():
            names = available_retrievers(ix, self.settings.retrieval)
            out += [(index, index, names[0])] if names else []
            out += [(f"{index}/{name}", index, name) for name in names]
        return out

    def resolve_model(self, model: str | None) -> tuple[str | None, str | None]:
        """``(index, retriever)`` a model id names (None: the defaults); ``ModelNotFound`` for any other name."""
        if model is None:
            return None, None
        index, _, retriever = model.partition("/")
        if index in self.indexes and (not retriever or retriever in available_retrievers(
                self.indexes[index], self.settings.retrieval)):
            return index, retriever or None
        ids = [m for m, _, _ in self.models()]
        shown = ", ".join(ids[:20]) + (f" … ({len(ids)} in all)" if len(ids) > 20 else "")
        raise ModelNotFound(f"the model {model!r} does not exist on this server; its models (GET /v1/models) are "
                            f"INDEX or INDEX/RETRIEVER: {shown}")

    def embedding_index(self, model: str | None) -> str:
        """The index whose dense encoder a model id names (``INDEX`` or ``INDEX/dense``; None: the default)."""
        index, retriever = self.resolve_model(model)
        index = index or self.default_index
        if not self.indexes[index].has("dense"):
            raise ModelNotFound(f"the model {model or index!r} has no embeddings: index {index!r} has no dense "
                                "component (genret index … --dense)")
        if retriever not in (None, "dense"):
            raise ModelNotFound(f"the model {model!r} does not embed: embeddings come from the index's dense "
                                f"encoder, model {index!r} or '{index}/dense'")
        return index

    def embedding_dim(self, index: str) -> int:
        return self.embedder.dim(self.indexes[index])

    def embed(self, index: str, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """``(vectors, tokens)`` of (checked) texts by the index's dense encoder (loaded on first use); blocking."""
        return self.embedder.embed(self.indexes[index], texts)

    def preload(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """Load the named parts (``_warmup``: retrievers on every index offering them, ``embeddings``, and
        ``generator``); ``(index, name)`` loaded, ``"*"`` for the generator's index."""
        parts = served_parts(self, names)
        for part in parts:
            load(self, part)
        return [(part.index or "*", part.name) for part in parts]

    def check_preload(self, names: Sequence[str]) -> None:
        check_names(self, names)

    def close(self) -> None:
        for obj in (self._generator, *self._demo_sources.values()):
            if obj is not None:
                obj.close()
        self._generator = None
        self._demo_sources.clear()
        self.snapshots.close()
        if self._ray is not None:
            self._ray.close()
