"""Model work off the event loop: a bounded thread pool and a micro-batcher in front of it.

``Dispatcher.search`` returns an asyncio future for one query.  With micro-batching on, concurrent searches
with the same ``(index, retriever, task, granularity, k, rerank)`` wait in one queue and run as a single
``batch_search`` call in the pool; each caller gets its own hit list back.  ``Dispatcher.rag`` does the same
for RAG answers: concurrent requests with the same ``RagSpec`` (index, retriever, task, passages,
demonstrations, generation settings) run as one ``RagPipeline.batch_answer`` call, which batches the
retrieval, the demonstration search and the generation.  A queue is dispatched

* at once when it holds ``micro_batch_max`` items (RAG: ``rag_micro_batch_max``);
* when no batch of its key is running, after ``micro_batch_wait_ms`` (0: on the next turn of the event loop,
  so requests that arrive together still go together) — a lone request waits for nothing;
* when the running batch of its key finishes: under load, requests gather while the model is busy, so batches
  grow with the load (continuous batching) without a fixed delay.

If a batch fails, its items are retried one by one in the same pool job, so an error reaches only the
request that caused it.  With micro-batching off every request is its own pool job.  ``Dispatcher.batch`` runs
a whole batch request as one job.  ``Dispatcher.stream`` runs a synchronous iterator (a streamed RAG answer)
in one pool job and hands its items to the event loop (``EventStream``); streams are never batched.  Nothing
here knows about HTTP.

Giving up.  Every entry point returns a task whose ``cancel()`` means "nobody waits for this any more" (the
request timed out, or its client went away): work still queued is dropped (it leaves its micro-batch queue, or
its pool job never starts), and a running batch whose callers have all given up stops generating at its next
token (``genret.retrieval.rag.stop_when``).  The task finishes only once its work has really ended, so
whoever holds a slot for it until then (``Gate``) keeps counting the work the pool is still doing.

RAG admission: ``rag`` and ``stream`` (RAG answers) refuse work with 429 when the RAG work already in flight
would not leave it time to finish within its budget (``RagLoad``, from the measured seconds per question).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future as PoolFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genret.retrieval import Hit
from genret.retrieval.rag import GenerationCancelled, stop_when

from ._limits import RagLoad
from ._metrics import Metrics
from ._rag import RagOutcome, RagSpec
from ._service import SearchService
from ._settings import ServerConfig

log = logging.getLogger(__name__)

Key = tuple[Hashable, ...]  # ("search", index, retriever, task, granularity, k, rerank) or ("rag", RagSpec)
_GONE = object()  # the result of an item whose caller gave up before it ran


@dataclass(eq=False)
class _Job:
    """A pool job: its concurrent future (cancelled while it waits for a thread: it never runs) and the same as an
    asyncio future (done when the job has ended, however)."""

    pool: PoolFuture
    done: asyncio.Future


@dataclass(eq=False)
class _Item:
    """One caller's request in a micro-batch queue, then in the batch job that runs it."""

    value: Any
    result: asyncio.Future  # the caller's result (set by _fan_out)
    since: float = field(default_factory=time.monotonic)
    gone: threading.Event = field(default_factory=threading.Event)  # the caller gave up (read in the pool)
    job: _Job | None = None
    batch: list[_Item] = field(default_factory=list)  # its batch, once flushed


@dataclass(eq=False)
class _Queue:
    run: Callable[[list[Any]], list[Any]]  # the batch call (pool thread): items -> results, in order
    max_size: int
    items: list[_Item] = field(default_factory=list)
    running: int = 0
    timer: asyncio.Handle | None = None


class Dispatcher:
    """Runs model work in a pool of ``workers`` threads, micro-batching concurrent single requests."""

    def __init__(self, service: SearchService, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.service, self.config = service, config
        self.metrics = metrics or Metrics()
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="genret-model")
        self._queues: dict[Key, _Queue] = {}
        self.jobs = 0  # pool jobs submitted and not finished (running or waiting for a thread)
        self.calls = 0  # batch_search calls made
        self.rag_calls = 0  # batch_answer calls made
        self.closed = False  # the pool is shut down (close)
        self.rag_load = RagLoad(config.request_timeout_s * config.rag_queue_budget, config.retry_after_s)
        self._calls_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Requests waiting in micro-batch queues (not yet handed to the pool)."""
        return sum(len(q.items) for q in self._queues.values())

    # ---- entry points (event loop) -----------------------------------------------------------------------
    def search(self, query: str, k: int, index: str, retriever: str, task: str | None = None,
               granularity: str | None = None, rerank: bool = True) -> asyncio.Task[list[Hit]]:
        """The hits of one (checked) query, as a task of the running loop (``cancel()``: give up); ``rerank``
        False: by the retriever's first stage only."""
        def run(queries: list[str]) -> list[list[Hit]]:
            return self._call(queries, k, index, retriever, task, granularity, rerank)

        if not self.config.micro_batch:
            return self._single(lambda: run([query])[0])
        return self._enqueue(("search", index, retriever, task, granularity, k, rerank), query, run,
                             self.config.micro_batch_max)

    def batch(self, queries: Sequence[str], k: int, index: str, retriever: str, task: str | None = None,
              granularity: str | None = None, rerank: bool = True) -> asyncio.Task[list[list[Hit]]]:
        """The hits of several (checked) queries, run as one job."""
        queries = list(queries)
        return self._single(lambda: self._call(queries, k, index, retriever, task, granularity, rerank))

    def rag(self, query: str, spec: RagSpec) -> asyncio.Task[RagOutcome]:
        """The RAG answer to one (checked) query, micro-batched with concurrent requests of the same spec;
        ``Overloaded`` when the RAG work in flight leaves it no time (``RagLoad``)."""
        batched = self.config.micro_batch and self.config.rag_micro_batch_max > 1
        self.rag_load.check(self._waited(("rag", spec)) if batched else 0.0)

        def run(queries: list[str]) -> list[RagOutcome]:
            return self._rag_call(queries, spec)

        if not batched:
            task = self._single(lambda: run([query])[0])
        else:
            task = self._enqueue(("rag", spec), query, run, self.config.rag_micro_batch_max)
        self.rag_load.track(task)
        return task

    def stream(self, make: Callable[[], Iterator[Any]]) -> tuple[EventStream, asyncio.Task]:
        """Run the iterator ``make()`` (a streamed RAG answer) in one pool job; ``(its items on the loop, the job's
        task)``.  Admitted as RAG work (``RagLoad``)."""
        self.rag_load.check()
        events = EventStream(asyncio.get_running_loop())

        def produce() -> None:
            started = time.monotonic()
            if events.produce(make):
                self.rag_load.measure(started, time.monotonic(), 1)

        events.task = task = self._single(produce)
        self.rag_load.track(task)
        return events, task

    def run(self, fn: Callable[[], Any]) -> asyncio.Task:
        """Any blocking call in the pool (not batched)."""
        return self._single(fn)

    # ---- internals -----------------------------------------------------------------------------------------
    def _call(self, queries: list[str], k: int, index: str, retriever: str, task, granularity,
              rerank: bool = True) -> list[list[Hit]]:
        """One ``batch_search`` call (pool thread)."""
        with self._calls_lock:
            self.calls += 1
        self.metrics.batch_size.observe(len(queries), retriever)
        return self.service.batch_search(queries, k, index, retriever, task, granularity, rerank)

    def _rag_call(self, queries: list[str], spec: RagSpec) -> list[RagOutcome]:
        """One ``batch_answer`` call (pool thread), timed for the RAG admission."""
        with self._calls_lock:
            self.rag_calls += 1
        self.metrics.batch_size.observe(len(queries), "rag")
        started = time.monotonic()
        outcomes = self.service.batch_rag(queries, spec)
        self.rag_load.measure(started, time.monotonic(), len(queries))
        return outcomes

    def _waited(self, key: Key) -> float:
        """How long the oldest request of the micro-batch a new one of ``key`` would join has waited (0: none)."""
        q = self._queues.get(key)
        if q is None or len(q.items) % q.max_size == 0:  # empty, or every waiting batch full: a new batch
            return 0.0
        return time.monotonic() - q.items[len(q.items) // q.max_size * q.max_size].since

    def _start(self, fn: Callable[[], Any]) -> _Job:
        """Submit ``fn`` to the pool (``RuntimeError`` once the pool is shut down)."""
        pool = self._pool.submit(fn)
        done = asyncio.wrap_future(pool)
        self.jobs += 1
        done.add_done_callback(self._job_done)
        return _Job(pool, done)

    def _job_done(self, fut: asyncio.Future) -> None:
        self.jobs -= 1

    def _single(self, fn: Callable[[], Any]) -> asyncio.Task:
        """``fn`` as its own pool job; given up, the job never starts, or stops generating at its next token."""
        gone = threading.Event()

        def guarded() -> Any:
            if gone.is_set():  # given up while it waited for a thread (and the cancel came too late)
                return None
            with stop_when(gone.is_set):
                return fn()

        job = self._start(guarded)

        def abandon() -> asyncio.Future:
            gone.set()
            job.pool.cancel()  # succeeds only while it waits for a thread
            return job.done

        return self._caller(job.done, abandon)

    @staticmethod
    def _caller(result: asyncio.Future, abandon: Callable[[], asyncio.Future | None]) -> asyncio.Task:
        """The task a caller awaits: ``result``'s outcome; cancelled, it gives the work up (``abandon()``, which
        returns the job still to wait for, if any) and ends only when that job has."""
        async def wait() -> Any:
            try:
                return await asyncio.shield(result)
            except asyncio.CancelledError:
                job = abandon()
                if job is not None and not job.done():
                    await asyncio.wait([job])
                if job is not None and not job.cancelled():
                    job.exception()  # retrieved: the error of abandoned work is nobody's
                raise

        return asyncio.get_running_loop().create_task(wait())

    def _enqueue(self, key: Key, value: Any, run: Callable[[list[Any]], list[Any]], max_size: int) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        q = self._queues.setdefault(key, _Queue(run, max_size))
        item = _Item(value, loop.create_future())
        q.items.append(item)
        if len(q.items) >= q.max_size:
            self._flush(key)
        elif q.running == 0 and q.timer is None:
            wait = self.config.micro_batch_wait_ms / 1000
            q.timer = loop.call_later(wait, self._flush, key) if wait > 0 else loop.call_soon(self._flush, key)
        return self._caller(item.result, lambda: self._abandon(key, item))

    def _abandon(self, key: Key, item: _Item) -> asyncio.Future | None:
        """The caller of ``item`` gave up: out of its queue if it is still there (None: nothing to wait for),
        else its batch's job (which never starts, or stops generating, once every caller in it gave up)."""
        item.gone.set()
        if item.job is None:
            q = self._queues.get(key)
            if q is not None and item in q.items:
                q.items.remove(item)
            item.result.cancel()
            return None
        if all(i.gone.is_set() for i in item.batch):
            item.job.pool.cancel()
        return item.job.done

    def _flush(self, key: Key) -> None:
        q = self._queues.get(key)
        if q is None:
            return
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        batch, q.items = q.items[:q.max_size], q.items[q.max_size:]
        if not batch:
            if q.running == 0:
                del self._queues[key]
            return
        q.running += 1
        try:
            job = self._start(lambda: self._run_batch(q.run, batch))
        except Exception as exc:  # the pool is shut down: fail these callers rather than leave them waiting
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            self._fan_out(key, batch, failed)
            return
        for item in batch:
            item.job, item.batch = job, batch
        job.done.add_done_callback(lambda done: self._fan_out(key, batch, done))

    @staticmethod
    def _run_batch(run: Callable[[list[Any]], list[Any]], batch: list[_Item]) -> list[Any]:
        """Per item of ``batch``: its result or error, ``_GONE`` for callers that gave up (pool thread).  The
        callers still waiting run as one call (generation stops once they have all given up); if that call fails,
        one by one."""
        live = [item for item in batch if not item.gone.is_set()]
        results: dict[int, Any] = {}
        if live:
            try:
                with stop_when(lambda: all(item.gone.is_set() for item in live)):
                    results = dict(zip(map(id, live), run([item.value for item in live])))
            except GenerationCancelled:
                pass  # every caller gave up
            except Exception as exc:
                if len(live) == 1:
                    results = {id(live[0]): exc}
                else:
                    log.info("a batch of %d requests failed (%s: %s); running them one by one", len(live),
                             type(exc).__name__, exc)
                    results = {id(item): Dispatcher._run_one(run, item) for item in live}
        return [results.get(id(item), _GONE) for item in batch]

    @staticmethod
    def _run_one(run: Callable[[list[Any]], list[Any]], item: _Item) -> Any:
        if item.gone.is_set():
            return _GONE
        try:
            with stop_when(item.gone.is_set):
                return run([item.value])[0]
        except GenerationCancelled:
            return _GONE
        except Exception as exc:
            return exc

    def _fan_out(self, key: Key, batch: list[_Item], job: asyncio.Future) -> None:
        q = self._queues[key]
        q.running -= 1
        try:
            results = job.result()
        except BaseException as exc:  # cancelled (every caller gave up), or the pool shut down
            results = [exc] * len(batch)
        for item, result in zip(batch, results):
            if item.result.done():
                continue
            if result is _GONE or isinstance(result, asyncio.CancelledError):
                item.result.cancel()
            elif isinstance(result, BaseException):
                item.result.set_exception(result)
            else:
                item.result.set_result(result)
        if q.items:  # gathered while this batch ran: go now
            self._flush(key)
        elif q.running == 0 and q.timer is None:
            del self._queues[key]

    def close(self) -> None:
        """Wait for running jobs and stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.closed = True


_END = object()


class EventStream:
    """A synchronous iterator run in a pool thread (``produce``), read on the event loop (``get``).  ``cancel``
    (the reader went away, or gave up) makes the producer stop at its next item and close the iterator — for a
    streamed answer that stops the generation — so an abandoned stream never holds a pool thread for longer than
    one item takes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.task: asyncio.Task | None = None  # the pool job's task (``Dispatcher.stream``)

    # producer side (pool thread)
    def produce(self, make: Callable[[], Iterator[Any]]) -> bool:
        """Run the iterator to its end (True), or until cancelled or failed (False)."""
        if self.cancelled.is_set():
            return False
        try:
            items = make()
            try:
                for item in items:
                    if self.cancelled.is_set():
                        return False
                    self._put((item, None))
            finally:
                close = getattr(items, "close", None)
                if callable(close):
                    close()
            self._put((_END, None))
            return True
        except Exception as exc:
            self._put((_END, exc))
            return False

    def _put(self, entry: tuple[Any, BaseException | None]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, entry)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            self.cancelled.set()

    # reader side (event loop)
    async def get(self, timeout_s: float | None = None) -> Any:
        """The next item; ``StopAsyncIteration`` at the end; the producer's exception; ``TimeoutError``."""
        item, exc = await asyncio.wait_for(self._queue.get(), timeout_s)
        if exc is not None:
            raise exc
        if item is _END:
            raise StopAsyncIteration
        return item

    def cancel(self) -> None:
        self.cancelled.set()
